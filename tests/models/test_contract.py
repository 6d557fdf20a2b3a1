"""The contract every registered family keeps (zuko's ``tests/test_flows.py`` pattern).

Parametrized over the entry-point group ``probgen.families``, so a new family is checked the
moment it is registered; it must then add a small fixture recipe to :data:`RECIPES` (the test
fails, naming the family, until it does). Checks per family:

1. shapes of ``sample``, ``log_prob`` and batched ``log_likelihood``;
2. one ELBO gradient (the objective and guide ``probgen.fit(method="svi")`` uses) reaches every
   trainable parameter of model and guide;
3. ``sample`` and ``log_prob`` describe the same normalised density (importance sampling);
4. ``state_dict`` round trip through ``torch.load(weights_only=True)``, ``params_`` included;
5. ``.to(torch.float32)`` (and ``.to("cuda")`` where available) moves the fitted model.

References are the model's own closed-form-free identities (normalisation, ``E_p[log p]`` and
``E_p[x]`` computed two independent ways), so they hold for any family with continuous data.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
import torch
from torch import Tensor

import probgen
from probgen import GenerativeModel
from probgen.infer import elbos, pointwise

#: Same parameters, same data, computed twice (batched vs single, saved vs loaded): only float64
#: round-off of reordered reductions may differ.
EXACT_RTOL = 1e-12
#: float32 vs float64 evaluation of log-densities of order 10 nats in D <= 4: a few float32 ulps
#: (eps = 1.2e-7) amplified by a Cholesky/Woodbury solve of a well-conditioned covariance.
F32_RTOL, F32_ATOL = 1e-4, 1e-4
#: Monte Carlo comparisons allow this many standard errors: P(|Z| > 6) ~ 2e-9 per comparison.
Z_MAX = 6.0
#: Draws for the Monte Carlo checks (model samples and importance-sampling proposals each).
NUM_MC = 50_000
#: Importance proposal: a Gaussian with the samples' mean and this many times their covariance,
#: wider than the model everywhere so the weights p / r are bounded (measured max ~4 for the
#: recipes below); wider proposals only add variance.
PROPOSAL_INFLATION = 2.0
#: Batch of parameter sets used for the batched ``log_likelihood`` shape check.
NUM_PARAM_SETS = 3


@dataclass(frozen=True)
class Recipe:
    """How to build a small instance of a family and fit it quickly on small data.

    Attributes:
        build: the registered class -> a small, unfitted instance.
        data: a seeded generator -> ``[N, D]`` float64 training data.
        fit: options of ``probgen.fit`` that give a point estimate fast (exact where possible).
    """

    build: Callable[[type], GenerativeModel]
    data: Callable[[torch.Generator], Tensor]
    fit: dict[str, Any] = field(default_factory=dict)


def _two_clusters(g: torch.Generator) -> Tensor:
    """200 points in 2-D, two well-separated elliptical clusters."""
    x = torch.randn(200, 2, generator=g, dtype=torch.float64) * torch.tensor([1.0, 0.5])
    x[:100] += torch.tensor([4.0, 2.0])
    return x


def _low_rank(g: torch.Generator) -> Tensor:
    """200 points in 4-D from a rank-2 linear model plus isotropic noise."""
    w = torch.randn(4, 2, generator=g, dtype=torch.float64)
    z = torch.randn(200, 2, generator=g, dtype=torch.float64)
    return z @ w.T + 0.3 * torch.randn(200, 4, generator=g, dtype=torch.float64) + 1.0


#: Registered family name -> its fixture recipe. A newly registered family must add one here.
RECIPES: dict[str, Recipe] = {
    "gmm": Recipe(
        build=lambda cls: cls(n_components=2, covariance_type="full"),
        data=_two_clusters,
        fit={"method": "em", "tol": 1e-8, "max_iter": 200},
    ),
    "ppca": Recipe(
        build=lambda cls: cls(n_components=2),
        data=_low_rank,
        fit={"method": "em", "tol": 1e-8, "max_iter": 500},
    ),
}

FAMILIES = sorted(probgen.families())


def _recipe(name: str) -> Recipe:
    if name not in RECIPES:
        pytest.fail(
            f"family {name!r} is registered in the entry-point group 'probgen.families' but has "
            f"no fixture recipe: add RECIPES[{name!r}] = Recipe(build=..., data=..., fit=...) in "
            "tests/models/test_contract.py so that the contract tests cover it"
        )
    return RECIPES[name]


@dataclass
class Case:
    name: str
    cls: type
    recipe: Recipe
    x: Tensor
    model: GenerativeModel

    def fresh(self) -> GenerativeModel:
        return self.recipe.build(self.cls)


@pytest.fixture(scope="module", params=FAMILIES)
def case(request: pytest.FixtureRequest) -> Case:
    """A fitted small instance of each registered family, with its training data."""
    name = request.param
    recipe = _recipe(name)
    cls = probgen.get_family(name)
    x = recipe.data(torch.Generator().manual_seed(0))
    model = recipe.build(cls)
    assert isinstance(model, GenerativeModel), f"{name}: recipe did not build a GenerativeModel"
    probgen.fit(model, x, progress=False, **recipe.fit)
    return Case(name, cls, recipe, x, model)


def test_families_are_registered() -> None:
    # Guards against an empty parametrization (e.g. probgen not installed with `pip install -e`).
    assert {"gmm", "ppca"} <= set(FAMILIES)


@pytest.mark.parametrize("name", FAMILIES)
def test_every_registered_family_has_a_recipe(name: str) -> None:
    recipe = _recipe(name)
    assert isinstance(recipe.build(probgen.get_family(name)), GenerativeModel)


def test_missing_recipe_fails_with_a_clear_message() -> None:
    with pytest.raises(pytest.fail.Exception, match=r"'no-such-family' is registered.*add RECIPES"):
        _recipe("no-such-family")


# ----------------------------------------------------------------------------- 1. shapes
def test_shapes(case: Case) -> None:
    n, d = case.x.shape
    model = case.model
    draws = model.sample(7)
    assert draws.shape == (7, d)
    log_p = model.log_prob(case.x)
    assert log_p.shape == (n,)
    assert log_p.dtype == torch.float64 and torch.isfinite(log_p).all()
    assert model.params_ is not None
    batched = {k: v.expand((NUM_PARAM_SETS, *v.shape)) for k, v in model.params_.items()}
    log_lik = model.log_likelihood(case.x, batched)
    assert log_lik.shape == (NUM_PARAM_SETS, n)
    torch.testing.assert_close(log_lik, log_p.expand(NUM_PARAM_SETS, n), rtol=EXACT_RTOL, atol=0)


# ----------------------------------------------------------------------------- 2. gradients
def test_gradients_reach_every_parameter(case: Case) -> None:
    model = case.fresh()
    # Two steps build the guide (its parameters are created lazily) exactly as fit does.
    fit = probgen.fit(model, case.x, method="svi", steps=2, num_draws=1, progress=False)
    guide = fit.guide
    trace = pointwise.prototype_trace(model, case.x)
    nesting = max(pointwise.max_plate_nesting(trace), 1)
    elbo = elbos.make_objective(fit.diagnostics["objective_name"], max_plate_nesting=nesting)

    named = dict(model.named_parameters(prefix="model"))
    if isinstance(guide, torch.nn.Module):
        named.update(guide.named_parameters(prefix="guide"))
    assert named, f"{case.name}: neither model nor guide has trainable parameters"
    for p in named.values():
        p.grad = None
    # Trace_ELBO and TraceEnum_ELBO (the objectives fit picks) define it; the ELBO base does not.
    loss = elbo.differentiable_loss(model.model, guide, case.x)  # type: ignore[attr-defined]
    assert torch.isfinite(loss)
    loss.backward()
    missing = [k for k, p in named.items() if p.grad is None]
    assert not missing, f"{case.name}: no gradient reached {missing}"
    bad = [k for k, p in named.items() if not torch.isfinite(p.grad).all()]  # type: ignore[arg-type]
    assert not bad, f"{case.name}: non-finite gradient in {bad}"


# ----------------------------------------------------------------------------- 3. consistency
def _mean_and_stderr(v: Tensor) -> tuple[Tensor, Tensor]:
    return v.mean(0), v.std(0) / math.sqrt(v.shape[0])


def _assert_within(a: tuple[Tensor, Tensor], b: tuple[Tensor, Tensor], what: str) -> None:
    (ma, sa), (mb, sb) = a, b
    z = ((ma - mb).abs() / (sa.square() + sb.square()).sqrt()).max().item()
    assert z < Z_MAX, f"{what}: {ma} vs {mb} differ by {z:.1f} standard errors"


def test_sample_and_log_prob_agree(case: Case) -> None:
    """Draws of ``sample`` and the density ``log_prob`` are the same normalised law.

    With ``r`` a wide Gaussian proposal and ``w = p(x) / r(x)``, ``x ~ r``:
    ``E_r[w] = 1`` (normalisation), ``E_r[w log p] = E_p[log p]``, ``E_r[w x] = E_p[x]`` and
    ``E_r[w x x^T] = E_p[x x^T]``, which must match plain averages over ``x ~ sample``.
    """
    model = case.model
    draws = model.sample(NUM_MC)
    mean, cov = draws.mean(0), draws.T.cov()
    proposal = torch.distributions.MultivariateNormal(mean, PROPOSAL_INFLATION * cov)
    torch.manual_seed(1)
    xr = proposal.sample((NUM_MC,))
    log_pr = model.log_prob(xr)
    w = (log_pr - proposal.log_prob(xr)).exp()

    norm, norm_se = _mean_and_stderr(w)
    assert abs(norm.item() - 1.0) < Z_MAX * norm_se.item(), f"E_r[p/r] = {norm} != 1"
    _assert_within(
        _mean_and_stderr(model.log_prob(draws)),
        _mean_and_stderr(w * log_pr),
        f"{case.name}: E_p[log p] from samples vs from log_prob",
    )
    _assert_within(
        _mean_and_stderr(draws),
        _mean_and_stderr(w[:, None] * xr),
        f"{case.name}: E_p[x] from samples vs from log_prob",
    )
    outer, outer_r = draws[:, :, None] * draws[:, None], xr[:, :, None] * xr[:, None]
    _assert_within(
        _mean_and_stderr(outer),
        _mean_and_stderr(w[:, None, None] * outer_r),
        f"{case.name}: E_p[x x^T] from samples vs from log_prob",
    )


# ----------------------------------------------------------------------------- 4. save / load
def test_state_dict_round_trip(case: Case, tmp_path: Any) -> None:
    path = tmp_path / f"{case.name}.pt"
    torch.save(case.model.state_dict(), path)
    fresh = case.fresh()
    fresh.setup(case.x)  # data-dependent buffers and guide parameters exist only after setup
    fresh.load_state_dict(torch.load(path, weights_only=True))
    assert fresh.params_ is not None, f"{case.name}: params_ was not restored by load_state_dict"
    assert case.model.params_ is not None
    assert fresh.params_.keys() == case.model.params_.keys()
    for k, v in case.model.params_.items():
        assert torch.equal(fresh.params_[k], v), f"{case.name}: params_[{k!r}] changed"
    torch.testing.assert_close(
        fresh.log_prob(case.x), case.model.log_prob(case.x), rtol=EXACT_RTOL, atol=0
    )


def test_unfitted_round_trip_keeps_params_none(case: Case) -> None:
    source, target = case.fresh(), case.fresh()
    source.setup(case.x)
    target.setup(case.x)
    target.load_state_dict(source.state_dict())
    assert target.params_ is None
    with pytest.raises(ValueError, match=r"extra state .* must be a dict with key 'params_'"):
        target.set_extra_state({"wrong": 1})


# ----------------------------------------------------------------------------- 5. device/dtype
def test_move_to_float32(case: Case) -> None:
    moved = copy.deepcopy(case.model).to(torch.float32)
    log_p32 = moved.log_prob(case.x.float())
    assert log_p32.dtype == torch.float32
    torch.testing.assert_close(
        log_p32.double(), case.model.log_prob(case.x), rtol=F32_RTOL, atol=F32_ATOL
    )
    assert moved.sample(5).dtype == torch.float32
    # The original is untouched (deepcopy), so fitted float64 state was not shared.
    assert case.model.log_prob(case.x).dtype == torch.float64


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA is not available")
def test_move_to_cuda(case: Case) -> None:
    moved = copy.deepcopy(case.model).to("cuda")
    log_p = moved.log_prob(case.x.cuda())
    assert log_p.device.type == "cuda"
    # Different BLAS/LAPACK kernels on the GPU: float64 agreement to round-off, not bitwise.
    torch.testing.assert_close(log_p.cpu(), case.model.log_prob(case.x), rtol=1e-10, atol=1e-10)
    assert moved.sample(5).device.type == "cuda"
