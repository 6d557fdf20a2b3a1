"""posteriordb reader: the bundled copy (data values, draw shapes, draws against the published
summary statistics), the Stan flat-name mapping, and every documented bad input on small
databases the tests write themselves."""

from __future__ import annotations

import itertools
import json
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

import probgen
from probgen.data import posteriordb as pdb

# The shared data lives beside the repository; CI has it, a bare checkout may not.
ROOT = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "posteriordb"

NONCENTERED = "eight_schools-eight_schools_noncentered"
CENTERED = "eight_schools-eight_schools_centered"
OUR_POSTERIORS = (
    CENTERED,
    NONCENTERED,
    "low_dim_gauss_mix-low_dim_gauss_mix",
    "hmm_example-hmm_example",
)
#: The eight schools data of Rubin (1981), as printed in Gelman et al. (2013), BDA3 Table 5.2.
SCHOOLS_Y = [28, 8, -3, 7, -1, 1, 18, 12]
SCHOOLS_SIGMA = [15, 10, 16, 11, 9, 11, 10, 18]
#: posteriordb's reference posteriors: 10 chains of 10,000 post-warm-up iterations thinned by
#: 10 (their draws info files record chains=10, iter=20000, warmup=10000, thin=10).
REF_CHAINS, REF_DRAWS = 10, 1000
#: The published means are printed with 15 significant digits from the same draws (themselves
#: printed with 15): the recomputed mean agrees to a few units of 1e-15 relative, far inside 1e-12.
MEAN_RTOL = 1e-12
#: The published mean squares are printed with 7 significant digits: half a unit in the 7th
#: digit is a relative error up to 5e-7.
MEAN_SQUARE_RTOL = 1e-6


def _require() -> None:
    if not (ROOT / "posterior_database" / "posteriors").is_dir():
        pytest.skip(f"shared posteriordb data not found at {ROOT}")


# --------------------------------------------------------------------- the bundled database
def test_list_posteriors_accepts_the_copy_or_its_posterior_database_folder() -> None:
    _require()
    names = pdb.list_posteriors(ROOT)
    assert names == sorted(names)
    assert set(OUR_POSTERIORS) <= set(names)
    assert pdb.list_posteriors(ROOT / "posterior_database") == names
    assert probgen.data.posteriordb is pdb


def test_load_data_eight_schools_matches_the_published_table() -> None:
    _require()
    data = pdb.load_data(ROOT, NONCENTERED)
    assert set(data) == {"J", "y", "sigma"}
    assert data["J"] == 8 and isinstance(data["J"], int)
    assert data["y"].dtype == np.int64 and data["y"].tolist() == SCHOOLS_Y
    assert data["sigma"].tolist() == SCHOOLS_SIGMA
    assert pdb.load_data(ROOT, CENTERED).keys() == data.keys()


def test_load_data_numbers_have_declared_sizes() -> None:
    _require()
    hmm = pdb.load_data(ROOT, "hmm_example-hmm_example")
    assert (hmm["N"], hmm["K"]) == (100, 2)
    assert hmm["y"].dtype == np.float64 and hmm["y"].shape == (100,)
    mix = pdb.load_data(ROOT, "low_dim_gauss_mix-low_dim_gauss_mix")
    assert mix["N"] == 1000 and mix["y"].shape == (1000,)


@pytest.mark.parametrize("name", OUR_POSTERIORS)
def test_reference_draws_shapes_and_names(name: str) -> None:
    _require()
    draws = pdb.reference_draws(ROOT, name)
    info = pdb.posterior_info(ROOT, name)
    # posteriordb's "dimensions" counts the scalars of each parameter.
    expected = sum(info["dimensions"].values())
    assert len(draws) == expected
    for value in draws.values():
        assert value.shape == (REF_CHAINS, REF_DRAWS) and value.dtype == np.float64


def test_centered_eight_schools_borrows_the_noncentered_reference() -> None:
    _require()
    assert pdb.posterior_info(ROOT, CENTERED)["reference_posterior_name"] == NONCENTERED
    centered, noncentered = (pdb.reference_draws(ROOT, n) for n in (CENTERED, NONCENTERED))
    assert centered.keys() == noncentered.keys()
    assert all(np.array_equal(centered[k], noncentered[k]) for k in centered)


@pytest.mark.parametrize("name", OUR_POSTERIORS)
def test_reference_draws_reproduce_the_published_summaries(name: str) -> None:
    _require()
    draws = pdb.reference_draws(ROOT, name)
    means = pdb.reference_summary(ROOT, name)
    squares = pdb.reference_summary(ROOT, name, "mean_squared_value")
    assert set(means) == {"mean_value", "mcse_mean"}
    assert set(means["mean_value"]) == set(draws)
    for flat, value in draws.items():
        assert value.mean() == pytest.approx(means["mean_value"][flat], rel=MEAN_RTOL, abs=1e-14)
        published = squares["mean_squared_value"][flat]
        assert (value**2).mean() == pytest.approx(published, rel=MEAN_SQUARE_RTOL)
        assert 0 < means["mcse_mean"][flat] < value.std()


def test_to_sites_on_the_eight_schools_reference() -> None:
    _require()
    flat = pdb.reference_draws(ROOT, NONCENTERED)
    sites = pdb.to_sites(flat, {"mu": (), "tau": (), "theta": (8,)})
    assert sites["mu"].shape == (REF_CHAINS, REF_DRAWS) and sites["mu"].dtype == torch.float64
    assert sites["theta"].shape == (REF_CHAINS, REF_DRAWS, 8)
    for j in range(8):
        np.testing.assert_array_equal(sites["theta"][..., j].numpy(), flat[f"theta[{j + 1}]"])
    np.testing.assert_array_equal(sites["tau"].numpy(), flat["tau"])


# --------------------------------------------------------------------- flat-name mapping
def _stan_flat(name: str, value: np.ndarray) -> dict[str, np.ndarray]:
    """Stan's CSV layout of ``value`` ``[chains, draws, *shape]``: one column per element,
    column-major (first index fastest), 1-based; written independently of ``to_sites``."""
    shape = value.shape[2:]
    out = {}
    moved = np.moveaxis(value, (0, 1), (-2, -1))  # [*shape, chains, draws]
    for reversed_index in itertools.product(*(range(s) for s in reversed(shape))):
        index = reversed_index[::-1]  # column-major: the first index varies fastest
        label = ",".join(str(i + 1) for i in index)
        out[f"{name}[{label}]"] = moved[index]
    return out


def test_to_sites_places_matrix_and_array_elements_by_their_indices() -> None:
    rng = np.random.default_rng(0)
    matrix = rng.normal(size=(3, 5, 2, 3))
    cube = rng.normal(size=(3, 5, 2, 3, 4))
    scalar = rng.normal(size=(3, 5))
    flat = {**_stan_flat("Sigma", matrix), **_stan_flat("a", cube), "s": scalar}
    assert list(flat)[:3] == ["Sigma[1,1]", "Sigma[2,1]", "Sigma[1,2]"]
    sites = pdb.to_sites(flat, {"Sigma": (2, 3), "a": (2, 3, 4), "s": ()})
    np.testing.assert_array_equal(sites["Sigma"].numpy(), matrix)
    np.testing.assert_array_equal(sites["a"].numpy(), cube)
    np.testing.assert_array_equal(sites["s"].numpy(), scalar)
    # Key order is irrelevant: a reversed mapping gives the same tensors.
    reordered = pdb.to_sites(
        dict(reversed(flat.items())), {"Sigma": (2, 3), "a": (2, 3, 4), "s": ()}
    )
    assert torch.equal(reordered["Sigma"], sites["Sigma"])


def test_to_sites_vector_of_length_one_and_index_spaces() -> None:
    draws = np.arange(6.0).reshape(2, 3)
    flat = {"b[1]": draws, "S[1, 1]": -draws, "S[1,2]": draws}
    sites = pdb.to_sites(flat, {"b": (1,), "S": (1, 2)})
    assert sites["b"].shape == (2, 3, 1)
    assert sites["S"][..., 0, 1].tolist() == draws.tolist()
    assert sites["S"][..., 0, 0].tolist() == (-draws).tolist()


def test_to_sites_names_a_missing_element() -> None:
    flat = _stan_flat("theta", np.zeros((2, 3, 4)))
    del flat["theta[3]"]
    with pytest.raises(ValueError, match=r"missing parameter 'theta\[3\]'"):
        pdb.to_sites(flat, {"theta": (4,)})


def test_to_sites_names_a_missing_site() -> None:
    with pytest.raises(ValueError, match="missing parameter 'tau'"):
        pdb.to_sites({"mu": np.zeros((2, 3))}, {"mu": (), "tau": ()})


@pytest.mark.parametrize(
    ("name", "match"),
    [
        ("omega[1]", r"unexpected parameter 'omega\[1\]': it is not among the sites \['theta'\]"),
        ("theta[5]", r"unexpected parameter 'theta\[5\]': site 'theta' has elements theta\[4\]"),
        ("theta[1,1]", r"unexpected parameter 'theta\[1,1\]'"),
        ("theta[0]", r"unexpected parameter 'theta\[0\]'"),
        ("theta", r"unexpected parameter 'theta'"),
        ("theta[a]", r"'theta\[a\]' is not a Stan flat name"),
        ("theta.1", r"'theta.1' is not a Stan flat name"),
    ],
)
def test_to_sites_names_an_unexpected_parameter(name: str, match: str) -> None:
    flat = _stan_flat("theta", np.zeros((2, 3, 4)))
    flat[name] = np.zeros((2, 3))
    with pytest.raises(ValueError, match=match):
        pdb.to_sites(flat, {"theta": (4,)})


def test_to_sites_rejects_draws_of_unequal_shapes() -> None:
    flat = {"mu": np.zeros((2, 3)), "tau": np.zeros((2, 4))}
    with pytest.raises(ValueError, match=r"draws of 'tau' have shape \(2, 4\)"):
        pdb.to_sites(flat, {"mu": (), "tau": ()})
    with pytest.raises(ValueError, match=r"draws of 'mu' have shape \(6,\)"):
        pdb.to_sites({"mu": np.zeros(6)}, {"mu": ()})


# --------------------------------------------------------------------- bad databases
def _write_zip(path: Path, member: str, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(member, text)


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    """A two-posterior database: ``toy-normal`` (data zipped, reference draws of two chains)
    and ``toy-noref`` (unzipped data, no reference posterior)."""
    db = tmp_path / "posterior_database"
    (db / "posteriors").mkdir(parents=True)
    for name, ref in (("toy-normal", "toy-normal"), ("toy-noref", None)):
        data_name = name.split("-")[0] if ref else "plain"
        record = {"name": name, "data_name": data_name, "reference_posterior_name": ref}
        (db / "posteriors" / f"{name}.json").write_text(json.dumps(record))
    _write_zip(db / "data/data/toy.json.zip", "toy.json", json.dumps({"N": 2, "y": [0.5, 1]}))
    (db / "data/data/plain.json").write_text(json.dumps({"M": [[1, 2], [3, 4]]}))
    chains = [{"mu": [0.0, 1.0, 2.0], "s[1]": [1.0, 1.0, 1.0]} for _ in range(2)]
    _write_zip(
        db / "reference_posteriors/draws/draws/toy-normal.json.zip", "d.json", json.dumps(chains)
    )
    return db


def test_tiny_database_reads(tiny: Path) -> None:
    assert pdb.list_posteriors(tiny.parent) == ["toy-noref", "toy-normal"]
    data = pdb.load_data(tiny, "toy-normal")
    assert data["N"] == 2 and data["y"].dtype == np.float64
    assert pdb.load_data(tiny, "toy-noref")["M"].shape == (2, 2)
    draws = pdb.reference_draws(tiny, "toy-normal")
    assert draws["mu"].tolist() == [[0.0, 1.0, 2.0]] * 2


def test_unknown_posterior_lists_the_available_ones(tiny: Path) -> None:
    with pytest.raises(
        ValueError, match=r"unknown posterior 'toy'; available: toy-noref, toy-normal"
    ):
        pdb.load_data(tiny, "toy")
    with pytest.raises(ValueError, match="unknown posterior"):
        pdb.reference_draws(tiny, "nope")
    with pytest.raises(ValueError, match="unknown posterior"):
        pdb.load_data(tiny, "../posterior_database/posteriors/toy-normal")


def test_root_that_is_not_a_database(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="is not a posteriordb copy"):
        pdb.list_posteriors(tmp_path)


def test_missing_data_file(tiny: Path) -> None:
    (tiny / "data/data/toy.json.zip").unlink()
    with pytest.raises(
        ValueError, match=r"missing file: neither .*toy\.json.* nor .*toy\.json\.zip"
    ):
        pdb.load_data(tiny, "toy-normal")


def test_missing_reference_and_no_reference(tiny: Path) -> None:
    with pytest.raises(ValueError, match="'toy-noref' has no reference posterior"):
        pdb.reference_draws(tiny, "toy-noref")
    with pytest.raises(ValueError, match="'toy-noref' has no reference posterior"):
        pdb.reference_summary(tiny, "toy-noref")
    shutil.rmtree(tiny / "reference_posteriors")
    with pytest.raises(ValueError, match="missing file"):
        pdb.reference_draws(tiny, "toy-normal")
    with pytest.raises(ValueError, match="statistic must be one of mean_value, mean_squared_value"):
        pdb.reference_summary(tiny, "toy-normal", "median")


def test_malformed_json_is_named(tiny: Path) -> None:
    (tiny / "data/data/plain.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"malformed JSON in .*plain\.json"):
        pdb.load_data(tiny, "toy-noref")
    (tiny / "posteriors/toy-noref.json").write_text(json.dumps({"name": "toy-noref"}))
    with pytest.raises(ValueError, match="must name its data_name"):
        pdb.load_data(tiny, "toy-noref")


def test_bad_zip_archives(tiny: Path) -> None:
    (tiny / "data/data/toy.json.zip").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="cannot read"):
        pdb.load_data(tiny, "toy-normal")
    path = tiny / "data/data/toy.json.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("a.json", "{}")
        archive.writestr("b.json", "{}")
    with pytest.raises(ValueError, match="must hold exactly one JSON file"):
        pdb.load_data(tiny, "toy-normal")


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ([1, 2], "expected a JSON object"),
        ({"y": "abc"}, r"data\['y'\] .* has type str"),
        ({"y": ["a", "b"]}, r"data\['y'\] .* must hold numbers"),
        ({"y": [[1, 2], [3]]}, r"data\['y'\] .* is not a rectangular array"),
        ({"flag": True}, r"data\['flag'\] .* is True"),
    ],
)
def test_non_numeric_data(tiny: Path, data: object, match: str) -> None:
    (tiny / "data/data/plain.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match=match):
        pdb.load_data(tiny, "toy-noref")


@pytest.mark.parametrize(
    ("chains", "match"),
    [
        ({"mu": [1.0]}, "expected a non-empty list of chains"),
        ([], "expected a non-empty list of chains"),
        ([{"mu": [1.0]}, {"tau": [1.0]}], "chain 1 lacks 'mu'"),
        ([{"mu": [1.0]}, {"mu": [1.0], "tau": [1.0]}], r"chains disagree on names \(\['tau'\]\)"),
        ([{"mu": [1.0]}, {"mu": [1.0, 2.0]}], "'mu' has unequal numbers of draws"),
    ],
)
def test_malformed_reference_draws(tiny: Path, chains: object, match: str) -> None:
    path = tiny / "reference_posteriors/draws/draws/toy-normal.json.zip"
    _write_zip(path, "d.json", json.dumps(chains))
    with pytest.raises(ValueError, match=match):
        pdb.reference_draws(tiny, "toy-normal")


def test_malformed_summary(tiny: Path) -> None:
    base = tiny / "reference_posteriors/summary_statistics/mean_value/mean_value"
    base.mkdir(parents=True)
    (base / "toy-normal.json").write_text(json.dumps({"names": ["mu"], "mean_value": [1, 2]}))
    with pytest.raises(ValueError, match="column 'mean_value' must list one value per name"):
        pdb.reference_summary(tiny, "toy-normal")
    (base / "toy-normal.json").write_text(json.dumps({"mean_value": [1]}))
    with pytest.raises(ValueError, match="expected an object with 'names'"):
        pdb.reference_summary(tiny, "toy-normal")
    (base / "toy-normal.json").write_text(json.dumps({"names": ["mu"], "mean_value": [1.5]}))
    assert pdb.reference_summary(tiny, "toy-normal") == {"mean_value": {"mu": 1.5}}
