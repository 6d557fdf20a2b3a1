"""Shared fixtures: the Old Faithful data and a clean, seeded Pyro state for every test."""

from __future__ import annotations

import pyro
import pytest
import torch

import probgen


@pytest.fixture(scope="session")
def faithful() -> torch.Tensor:
    """Old Faithful, ``[272, 2]`` float64 (eruption minutes, waiting minutes)."""
    return probgen.data.faithful()


@pytest.fixture(autouse=True, scope="session")
def _single_thread():
    """One torch thread for the whole run.

    The test problems are tiny (N <= a few thousand): multithreaded BLAS only adds
    synchronisation, and on a shared 2-core CI machine OpenMP barriers make each small GEMM up
    to ~10x slower. Tests that check threaded code paths raise the count locally.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _pyro_state() -> None:
    """No parameter leaks between tests, and the same random stream for each."""
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
