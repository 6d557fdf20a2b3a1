"""Fit-time checks: NUTS on discrete sites it cannot sum out, guides that miss latent sites.

Both must fail before any sampling or optimisation, name the site, and leave every model the
families fit (GMM with enumerated assignments, PPCA and VAE with their own guides, a
conditional VAE with a context) fitting as before. References for the fits that still run: the
conjugate Normal-Normal posterior, and the exact per-datum posterior ``z_n | x_n ~ N(x_n / 2,
1/2)`` of ``z_n ~ N(0, 1)``, ``x_n | z_n ~ N(z_n, 1)``.
"""

from __future__ import annotations

import math
import time

import pyro
import pyro.distributions as dist
import pytest
import torch
from conjugate import data, model, posterior

import probgen
from probgen import GenerativeModel
from probgen.infer import probe as probe_module

#: Monte Carlo errors in standard errors: P(|Z| > 4) = 6e-5 per comparison.
Z = 4.0
#: The per-datum guide of the local-latent model after 400 full-batch Adam steps at lr 0.05
#: with 10 particles: its 30 locations sit within this of the exact x_n / 2 (measured max
#: error 0.14: Adam's stationary jitter is of the order of lr per coordinate).
LOCAL_ATOL = 0.25
#: ...and the mean of its 30 scales within this of the exact sqrt(1/2) (measured 0.003).
SCALE_ATOL = 0.05

F64 = torch.float64


def _x(n: int = 20) -> torch.Tensor:
    return data(n=n)


# --------------------------------------------------------------------------- NUTS
def poisson_global(x):
    k = pyro.sample("k", dist.Poisson(torch.tensor(3.0, dtype=F64)))
    mu = pyro.sample("mu", dist.Normal(torch.tensor(0.0, dtype=F64), 1.0))
    with pyro.plate("data", len(x)):
        pyro.sample("obs", dist.Normal(mu + 0.1 * k, 1.0), obs=x)


def geometric_local(x):
    mu = pyro.sample("mu", dist.Normal(torch.tensor(0.0, dtype=F64), 1.0))
    with pyro.plate("data", len(x)):
        k = pyro.sample("k", dist.Geometric(torch.tensor(0.5, dtype=F64)))
        pyro.sample("obs", dist.Normal(mu + 0.1 * k, 1.0), obs=x)


def categorical_global(x):
    k = pyro.sample("k", dist.Categorical(torch.ones(2, dtype=F64) / 2))
    scale = pyro.sample("s", dist.LogNormal(torch.tensor(0.0, dtype=F64), 1.0))
    with pyro.plate("data", len(x)):
        pyro.sample("obs", dist.Normal(torch.tensor([-1.0, 1.0], dtype=F64)[k], scale), obs=x)


@pytest.mark.parametrize(
    ("program", "message"),
    [
        (poisson_global, r"discrete latent site 'k' \(Poisson, no finite support to enumerate\)"),
        (geometric_local, r"discrete latent site 'k' \(Geometric, no finite support"),
        (categorical_global, r"discrete latent site 'k' \(Categorical\) outside the data plate"),
    ],
)
def test_nuts_refuses_discrete_sites_it_cannot_sum_out(program, message):
    start = time.perf_counter()
    with pytest.raises(ValueError, match=message) as err:
        probgen.fit(program, _x(), method="nuts", num_samples=10**4, warmup_steps=10**4)
    assert "NUTS needs continuous latent sites" in str(err.value)
    # Refused before sampling: 2 x 10^4 NUTS steps would take minutes.
    assert time.perf_counter() - start < 30.0


def mixture(x):
    """Two unit-variance components at +-loc, assignments enumerated inside the data plate."""
    loc = pyro.sample("loc", dist.HalfNormal(torch.tensor(5.0, dtype=F64)))
    with pyro.plate("data", len(x)):
        c = pyro.sample(
            "c", dist.Bernoulli(torch.tensor(0.5, dtype=F64)), infer={"enumerate": "parallel"}
        )
        pyro.sample("obs", dist.Normal(loc * (2 * c - 1), 1.0), obs=x)


def _mixture_data(n: int = 60) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    signs = torch.where(torch.arange(n) % 2 == 0, 1.0, -1.0).to(F64)
    return 3.0 * signs + torch.randn(n, generator=g, dtype=F64)


def test_nuts_still_sums_out_enumerable_local_sites():
    x = _mixture_data()
    fit = probgen.fit(
        mixture, x, method="nuts", num_samples=100, warmup_steps=100, num_chains=1, progress=False
    )
    # loc's posterior sd is ~1 / sqrt(60) = 0.13 around a point within ~0.13 of the truth, 3.
    assert abs(fit.params["loc"].item() - 3.0) < Z * 0.13


# --------------------------------------------------------------------------- guide coverage
def two_sites(x):
    mu = pyro.sample("mu", dist.Normal(torch.tensor(0.0, dtype=F64), 2.0))
    scale = pyro.sample("scale", dist.LogNormal(torch.tensor(0.0, dtype=F64), 1.0))
    with pyro.plate("data", len(x)):
        pyro.sample("obs", dist.Normal(mu, scale), obs=x)


def only_mu(x):
    loc = pyro.param("q_loc", torch.tensor(0.0, dtype=F64))
    pyro.sample("mu", dist.Normal(loc, 1.0))


def nothing(x):
    pyro.param("q_unused", torch.tensor(0.0, dtype=F64))


@pytest.mark.parametrize("method", ["svi", "is"])
@pytest.mark.parametrize(
    ("guide", "message"),
    [
        (only_mu, r"latent site\(s\) \['scale'\] of the model; it samples \['mu'\]"),
        (nothing, r"does not sample the latent site\(s\) \['mu', 'scale'\] .* it samples no site"),
    ],
)
def test_a_guide_missing_latent_sites_is_named(method, guide, message):
    start = time.perf_counter()
    with pytest.raises(ValueError, match=message):
        probgen.fit(two_sites, _x(), method=method, guide=guide, steps=10**6, progress=False)
    assert time.perf_counter() - start < 30.0  # before the 10^6 steps


class _TwoSites(GenerativeModel):
    def model(self, x=None, *, n=None):
        return two_sites(x)


def test_a_family_given_a_guide_that_misses_a_site_is_refused_too():
    with pytest.raises(ValueError, match=r"\['scale'\]"):
        probgen.fit(_TwoSites(), _x(), guide=only_mu, steps=10**6, progress=False)
    # The guide's parameters would live in Pyro's global store: the probe created none.
    assert len(pyro.get_param_store()) == 0


def test_a_guide_may_leave_enumerated_sites_to_the_objective():
    def guide(x):
        loc = pyro.param(
            "q_loc", torch.tensor(1.0, dtype=F64), constraint=dist.constraints.positive
        )
        pyro.sample("loc", dist.Delta(loc))

    # A point-mass guide from loc = 1: Adam at lr 0.05 in log space reaches 3 in ~25 steps.
    fit = probgen.fit(mixture, _mixture_data(), guide=guide, steps=60, lr=0.05, progress=False)
    assert fit.options["objective"] == "enum"
    assert abs(fit.params["loc"].item() - 3.0) < Z * 0.13


def local_model(x):
    with pyro.plate("data", len(x)):
        z = pyro.sample("z", dist.Normal(torch.zeros(len(x), dtype=F64), 1.0))
        pyro.sample("obs", dist.Normal(z, 1.0), obs=x)


def per_datum_guide(x):
    """Non-amortised: one (loc, scale) parameter pair per datum, sized by the data."""
    loc = pyro.param("z_loc", lambda: torch.zeros(len(x), dtype=F64))
    scale = pyro.param(
        "z_scale", torch.ones(len(x), dtype=F64), constraint=dist.constraints.positive
    )
    with pyro.plate("data", len(x)):
        pyro.sample("z", dist.Normal(loc, scale))


class _Local(GenerativeModel):
    def model(self, x=None, *, n=None):
        return local_model(x)


def test_per_datum_guide_parameters_are_not_sized_by_the_probe():
    x = _x(30)
    gm = _Local()
    # The guide's parameters live in Pyro's global store (a plain function given to a family).
    probgen.fit(gm, x, guide=per_datum_guide, steps=400, lr=0.05, num_particles=10, progress=False)
    store = pyro.get_param_store()
    assert store["z_loc"].shape == (30,)
    torch.testing.assert_close(store["z_loc"].detach(), x / 2, atol=LOCAL_ATOL, rtol=0)
    assert store["z_scale"].detach().mean().item() == pytest.approx(math.sqrt(0.5), abs=SCALE_ATOL)
    # A second fit finds the full-size parameters in the store: the check runs the guide on
    # all rows instead of the probe's few, and passes.
    fit = probgen.fit(gm, x, guide=per_datum_guide, steps=5, progress=False)
    assert fit.n_iter == 5


def test_the_check_leaves_the_random_stream_and_the_parameters_alone():
    x = _x(30)
    gm = probgen.PyroProgram(two_sites)
    trace = probe_module.probe_trace(gm, x, None)

    def guide(x):
        loc = pyro.param("rand_loc", lambda: torch.randn((), dtype=F64))
        pyro.sample("mu", dist.Normal(loc, 1.0))
        pyro.sample("scale", dist.LogNormal(loc, 1.0))

    state = torch.get_rng_state()
    probe_module.check_guide_sites(gm, guide, trace, x, {}, exempt=[])
    assert torch.equal(torch.get_rng_state(), state)
    assert "rand_loc" not in pyro.get_param_store()


def test_plain_program_with_its_guide_passes_and_fits():
    def guide(x):
        loc = pyro.param("q_loc", torch.tensor(0.0, dtype=F64))
        scale = pyro.param(
            "q_scale", torch.tensor(1.0, dtype=F64), constraint=dist.constraints.positive
        )
        pyro.sample("mu", dist.Normal(loc, scale))

    x = _x(50)
    mean, sd = posterior(x)
    fit = probgen.fit(model, x, guide=guide, steps=500, lr=0.05, num_draws=200, progress=False)
    # The guide family contains the posterior; 500 steps get within half a posterior sd.
    assert abs(fit.params["mu"].item() - mean) < 0.5 * sd


# --------------------------------------------------------------------------- families
def test_gmm_with_enumerated_assignments_still_fits(faithful):
    from models.gmm import GaussianMixture

    fit = probgen.fit(GaussianMixture(2, "diag"), faithful, steps=20, num_draws=5, progress=False)
    assert fit.n_iter == 20 and all(map(math.isfinite, fit.history))
    assert fit.options["objective"] == "enum"


def test_ppca_with_its_own_guide_still_fits():
    from models.ppca import PPCA

    x = torch.randn(100, 4, generator=torch.Generator().manual_seed(0), dtype=F64)
    fit = probgen.fit(PPCA(2), x, steps=20, num_draws=2, progress=False)
    assert fit.n_iter == 20 and all(map(math.isfinite, fit.history))


def test_vae_and_conditional_vae_with_their_own_guides_still_fit():
    from models.vae import VAE

    g = torch.Generator().manual_seed(0)
    x = torch.bernoulli(torch.full((64, 8), 0.3, dtype=torch.float32), generator=g)
    fit = probgen.fit(VAE(8, 2, hidden=(8,)), x, steps=10, progress=False)
    assert fit.n_iter == 10 and all(map(math.isfinite, fit.history))
    y = torch.arange(64) % 2
    fit = probgen.fit(
        VAE(8, 2, hidden=(8,), n_classes=2), x, context={"y": y}, steps=10, progress=False
    )
    assert fit.n_iter == 10 and all(map(math.isfinite, fit.history))
