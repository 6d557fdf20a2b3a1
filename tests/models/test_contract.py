"""The contract every registered family keeps (zuko's ``tests/test_flows.py`` pattern).

Parametrized over the entry-point group ``probgen.families``, so a new family is checked the
moment it is registered; it must then add at least one small fixture recipe to :data:`RECIPES`
(the tests fail, naming the family, until it does). A family may list several recipes
(*variants*, e.g. a VAE's likelihoods, guides and a conditional model): each is its own case,
with id ``family-variant``. Checks per case:

1. shapes of ``sample`` and ``log_prob``; batched ``log_likelihood`` where the family has global
   sites to batch;
2. one gradient of the objective ``probgen.fit(method="svi")`` picks (with the family's guide or
   the automatic one) reaches every trainable parameter of model and guide;
3. ``sample`` and ``log_prob`` describe the same normalised law: importance sampling from a wide
   Gaussian for real data; exhaustive enumeration of all ``2^D`` points for binary data;
4. ``state_dict`` round trip through ``torch.load(weights_only=True)``, ``params_`` included;
5. ``.to(torch.float32)`` (and ``.to("cuda")`` where available) moves parameters, buffers and
   ``params_``, and the moved model computes the same ``log_prob``.

References are the model's own closed-form-free identities (normalisation, ``E_p[log p]``,
``E_p[x]`` and point probabilities computed two independent ways), so they hold for any family.
Where ``log_prob`` is itself an importance-sampled estimate (a VAE's, Burda et al. 2016,
"Importance Weighted Autoencoders", arXiv:1509.00519), ``exp(log_prob)`` is unbiased for ``p``
and the tolerances below add its Monte Carlo error.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pyro
import pytest
import torch
from torch import Tensor

import probgen
from probgen import GenerativeModel
from probgen.infer import elbos, pointwise

#: Same parameters, same data, same random draws, computed twice (batched vs single, saved vs
#: loaded): only float64 round-off of reordered reductions may differ.
EXACT_RTOL = 1e-12
#: float32 vs float64 evaluation of log-densities of order 10 nats in D <= 4: a few float32 ulps
#: (eps = 1.2e-7) amplified by a Cholesky/Woodbury solve or a small network and a log-sum-exp.
F32_RTOL, F32_ATOL = 1e-4, 1e-4
#: Monte Carlo comparisons allow this many standard errors: P(|Z| > 6) ~ 2e-9 per comparison
#: (Student t with 31 dof, used where the error is estimated from 32 replicates: ~1e-6).
Z_MAX = 6.0
#: Draws for the Monte Carlo checks (model samples and importance-sampling proposals each).
NUM_MC = 50_000
#: Importance proposal: a Gaussian with the samples' mean and this many times their covariance,
#: wider than the model everywhere so the weights p / r are bounded (measured max ~6 for the
#: recipes below); wider proposals only add variance.
PROPOSAL_INFLATION = 2.0
#: Batch of parameter sets used for the batched ``log_likelihood`` shape check.
NUM_PARAM_SETS = 3
#: Seed set before each of two ``log_prob`` calls that must agree bit for bit.
LOG_PROB_SEED = 123
#: Independent ``log_prob`` replicates per point when it is an estimate: gives its standard error.
NUM_REPLICATES = 32
#: Draws from the model whose 2^D point frequencies are compared with ``exp(log_prob)``.
NUM_BINARY_DRAWS = 20_000
#: Smallest expected count per point allowed for the frequency z-test: at 100 the binomial's
#: 6-sigma tails still have probability < 1e-7 (Poisson(100) upper tail at 160 is 2e-8).
MIN_EXPECTED = 100.0
#: Rows of the data on which moved and original estimated ``log_prob`` are compared.
MOVE_ROWS = 8
#: Draws on which the per-point variance of an estimated ``log_prob`` is measured.
IS_VARIANCE_ROWS = 2_000


#: One datum's context, e.g. ``{"y": tensor(1)}`` for a conditional family; ``{}`` for none.
Condition = dict[str, Tensor]


@dataclass(frozen=True)
class Recipe:
    """How to build a small instance of a family and fit it quickly on small data.

    Attributes:
        build: the registered class -> a small, unfitted instance.
        data: a seeded generator -> ``[N, D]`` float64 training data and its per-datum context
            (the keyword inputs ``fit(..., context=)`` passes to model and guide; ``{}``: none).
        fit: options of ``probgen.fit`` that give a point estimate fast (exact where possible).
        variant: names this recipe among its family's recipes (the case id is
            ``family-variant``); empty for a family's only recipe.
        support: ``"real"`` (data in R^D: importance-sampling check) or ``"binary"`` (data in
            {0, 1}^D, D small: every point enumerated).
        conditions: the contexts of one datum under which ``sample`` and ``log_prob`` are
            checked as a normalised law (a conditional family: one per label).
        num_mc: draws for the real-data Monte Carlo check.
        num_is_particles: importance particles per ``log_prob`` value in the Monte Carlo
            checks, for families whose ``log_prob`` is an estimate (None: the family's own).
        log_prob_is_bound: ``log_prob`` is a stochastic lower bound on ``log p`` (a DDPM's
            ``-L_vlb`` from one forward-process draw per step), neither a normalised law nor an
            estimate whose ``exp`` is unbiased for ``p``: the sample/log_prob identities of check
            3 do not hold for it, and that check is skipped.
    """

    build: Callable[[type], GenerativeModel]
    data: Callable[[torch.Generator], tuple[Tensor, dict[str, Tensor]]]
    fit: dict[str, Any] = field(default_factory=dict)
    variant: str = ""
    support: str = "real"
    conditions: tuple[Condition, ...] = ({},)
    num_mc: int = NUM_MC
    num_is_particles: int | None = None
    log_prob_is_bound: bool = False


def _two_clusters(g: torch.Generator) -> tuple[Tensor, dict[str, Tensor]]:
    """200 points in 2-D, two well-separated elliptical clusters."""
    x = torch.randn(200, 2, generator=g, dtype=torch.float64) * torch.tensor([1.0, 0.5])
    x[:100] += torch.tensor([4.0, 2.0])
    return x, {}


def _low_rank(g: torch.Generator) -> tuple[Tensor, dict[str, Tensor]]:
    """200 points in 4-D from a rank-2 linear model plus isotropic noise."""
    w = torch.randn(4, 2, generator=g, dtype=torch.float64)
    z = torch.randn(200, 2, generator=g, dtype=torch.float64)
    return z @ w.T + 0.3 * torch.randn(200, 4, generator=g, dtype=torch.float64) + 1.0, {}


def _noisy_prototypes(g: torch.Generator, n: int, prototypes: Tensor, flip: float) -> Tensor:
    """``n`` binary rows: a random prototype row with each bit flipped with probability flip."""
    pick = torch.randint(len(prototypes), (n,), generator=g)
    flips = torch.rand(n, prototypes.shape[1], generator=g, dtype=torch.float64) < flip
    return (prototypes[pick] - flips.double()).abs()


def _binary(g: torch.Generator) -> tuple[Tensor, dict[str, Tensor]]:
    """200 points in {0, 1}^4: 0000 or 1111 with 15% bit flips (every point has p >= 1.6%)."""
    return _noisy_prototypes(g, 200, torch.tensor([[0.0] * 4, [1.0] * 4]).double(), 0.15), {}


def _labelled_binary(g: torch.Generator) -> tuple[Tensor, dict[str, Tensor]]:
    """200 labelled points in {0, 1}^4: label 0 ~ i.i.d. Bernoulli(0.4) bits, label 1 ~ 1100 or
    0011 with 15% bit flips (every point has p >= 1.6% under either label)."""
    y = torch.randint(2, (200,), generator=g)
    noise = _noisy_prototypes(g, 200, torch.zeros(1, 4).double(), 0.4)
    pairs = _noisy_prototypes(g, 200, torch.tensor([[1.0, 1, 0, 0], [0, 0, 1, 1]]).double(), 0.15)
    return torch.where(y[:, None] == 1, pairs, noise), {"y": y}


#: Short full-batch SVI for the tiny VAEs (the contract needs a fitted model, not a good one).
_VAE_FIT: dict[str, Any] = {"method": "svi", "steps": 150, "lr": 2e-2}


def _vae(**options: Any) -> Callable[[type], GenerativeModel]:
    """A tiny VAE (latent 2, one hidden layer of 16) for data of width 4."""
    return lambda cls: cls(4, latent_dim=2, hidden=(16,), **options)


def _ddpm(cls: type) -> GenerativeModel:
    """A tiny DDPM for 2-D data: T = 10 steps, a 2 x 32 time-conditioned MLP, learned reverse
    variances (so the variance head is among the parameters the gradient check covers)."""
    return cls(2, steps=10, hidden=(32, 32), variance="learned")  # type: ignore[no-any-return]


#: Registered family name -> its fixture recipes. A newly registered family must add one here.
RECIPES: dict[str, tuple[Recipe, ...]] = {
    "gmm": (
        Recipe(
            build=lambda cls: cls(n_components=2, covariance_type="full"),
            data=_two_clusters,
            fit={"method": "em", "tol": 1e-8, "max_iter": 200},
        ),
    ),
    "ppca": (
        Recipe(
            build=lambda cls: cls(n_components=2),
            data=_low_rank,
            fit={"method": "em", "tol": 1e-8, "max_iter": 500},
        ),
    ),
    "vae": (
        Recipe(
            build=_vae(likelihood="bernoulli"),
            data=_binary,
            fit=_VAE_FIT,
            variant="bernoulli",
            support="binary",
            num_is_particles=1000,
        ),
        Recipe(
            build=_vae(likelihood="gaussian", obs_scale="learned"),
            data=_low_rank,
            fit=_VAE_FIT,
            variant="gaussian",
            num_mc=30_000,
            # Few particles: the IS error is in the standard errors and _is_slack (measured
            # 0.05 nats); more particles would only cost time.
            num_is_particles=20,
        ),
        Recipe(
            build=_vae(likelihood="bernoulli", flow="iaf", flow_layers=2),
            data=_binary,
            fit=_VAE_FIT,
            variant="iaf",
            support="binary",
            num_is_particles=1000,
        ),
        Recipe(
            build=_vae(likelihood="bernoulli", n_classes=2),
            data=_labelled_binary,
            fit=_VAE_FIT,
            variant="cvae",
            support="binary",
            conditions=({"y": torch.tensor(0)}, {"y": torch.tensor(1)}),
            num_is_particles=1000,
        ),
    ),
    "bayes_vae": (
        Recipe(
            # Bayesian decoder weights (global sites with a mean-field guide): the only VAE
            # variant with params_ (the guide means), so the batched-params check applies.
            build=_vae(likelihood="bernoulli"),
            data=_binary,
            fit={**_VAE_FIT, "steps": 200},
            variant="bernoulli",
            support="binary",
            num_is_particles=1000,
        ),
    ),
    "ddpm": (
        Recipe(
            build=_ddpm,
            data=_two_clusters,
            fit={"method": "svi", "steps": 200, "lr": 1e-2},
            # -L_vlb: measured E_r[exp(log_prob) / r] = 1.93 (the single-draw estimate's exp is
            # biased up) and 0.67 with 32 replicates averaged and bias-corrected (a loose bound).
            log_prob_is_bound=True,
        ),
    ),
}

FAMILIES = sorted(probgen.families())


def _recipes(name: str) -> tuple[Recipe, ...]:
    if not RECIPES.get(name):
        pytest.fail(
            f"family {name!r} is registered in the entry-point group 'probgen.families' but has "
            f"no fixture recipe: add RECIPES[{name!r}] = (Recipe(build=..., data=..., fit=...),) "
            "in tests/models/test_contract.py so that the contract tests cover it"
        )
    return RECIPES[name]


def _case_params() -> list[Any]:
    params = []
    for name in FAMILIES:
        recipes = RECIPES.get(name) or (None,)  # None: the fixture fails, naming the family
        for r in recipes:
            case_id = f"{name}-{r.variant}" if r is not None and r.variant else name
            params.append(pytest.param((name, r), id=case_id))
    return params


@dataclass
class Case:
    name: str
    cls: type
    recipe: Recipe
    x: Tensor
    context: dict[str, Tensor]
    model: GenerativeModel

    def fresh(self) -> GenerativeModel:
        return self.recipe.build(self.cls)


def _rows(condition: Condition, n: int, device: torch.device | None = None) -> dict[str, Tensor]:
    """One datum's context repeated for ``n`` rows."""
    return {k: v.to(device).expand(n, *v.shape).clone() for k, v in condition.items()}


def _sample(
    model: GenerativeModel, n: int, condition: Condition, device: torch.device | None = None
) -> Tensor:
    """``n`` draws of ``model`` under one datum's context (keywords of a conditional family)."""
    draw: Callable[..., Tensor] = model.sample  # the base signature has no context keywords
    return draw(n, **_rows(condition, n, device))


def _seeded_log_prob(model: GenerativeModel, x: Tensor, context: dict[str, Tensor]) -> Tensor:
    # An importance-sampled log_prob (a VAE's) is random: its particles come from torch's global
    # RNG, so two computations agree bit for bit only if they start from the same seed (and use
    # the same dtype and device, whose RNG streams differ). Exact families ignore the seed.
    pyro.set_rng_seed(LOG_PROB_SEED)
    return model.log_prob(x, **context)


@pytest.fixture(scope="module", params=_case_params())
def case(request: pytest.FixtureRequest) -> Case:
    """A fitted small instance of each recipe of each registered family, with its data."""
    name, recipe = request.param
    if recipe is None:
        _recipes(name)
    cls = probgen.get_family(name)
    x, context = recipe.data(torch.Generator().manual_seed(0))
    pyro.set_rng_seed(0)  # network initialisations must not depend on which tests ran before
    model = recipe.build(cls)
    assert isinstance(model, GenerativeModel), f"{name}: recipe did not build a GenerativeModel"
    probgen.fit(model, x, progress=False, context=context or None, **recipe.fit)
    case_id = f"{name}-{recipe.variant}" if recipe.variant else name
    return Case(case_id, cls, recipe, x, context, model)


def test_families_are_registered() -> None:
    # Guards against an empty parametrization (e.g. probgen not installed with `pip install -e`).
    assert {"gmm", "ppca", "vae", "bayes_vae"} <= set(FAMILIES)


@pytest.mark.parametrize("name", FAMILIES)
def test_every_registered_family_has_a_recipe(name: str) -> None:
    recipes = _recipes(name)
    variants = [r.variant for r in recipes]
    assert len(set(variants)) == len(variants), f"{name}: duplicate recipe variants {variants}"
    assert len(recipes) == 1 or all(variants), f"{name}: several recipes need variant names"
    for r in recipes:
        assert isinstance(r.build(probgen.get_family(name)), GenerativeModel)
        assert r.support in ("real", "binary"), f"{name}: unknown support {r.support!r}"


def test_missing_recipe_fails_with_a_clear_message() -> None:
    with pytest.raises(pytest.fail.Exception, match=r"'no-such-family' is registered.*add RECIPES"):
        _recipes("no-such-family")


# ----------------------------------------------------------------------------- 1. shapes
def test_shapes(case: Case) -> None:
    n, d = case.x.shape
    model = case.model
    draws = _sample(model, 7, case.recipe.conditions[0])
    assert draws.shape == (7, d)
    log_p = model.log_prob(case.x, **case.context)
    assert log_p.shape == (n,)
    assert log_p.dtype == torch.float64 and torch.isfinite(log_p).all()
    assert model.params_ is not None, f"{case.name}: fit did not set params_"


def test_batched_log_likelihood(case: Case) -> None:
    model = case.model
    assert model.params_ is not None
    if model.params_ == {}:
        pytest.skip(
            f"{case.name} has no global latent sites (params_ == {{}}): there is no parameter "
            "set to batch; shapes and log_prob are checked by test_shapes"
        )
    n = case.x.shape[0]
    batched = {k: v.expand((NUM_PARAM_SETS, *v.shape)) for k, v in model.params_.items()}
    # Importance-sampled families draw particles: the same seed gives both calls the same draws.
    pyro.set_rng_seed(0)
    log_lik = model.log_likelihood(case.x, batched)
    assert log_lik.shape == (NUM_PARAM_SETS, n)
    pyro.set_rng_seed(0)
    log_p = model.log_prob(case.x)
    torch.testing.assert_close(log_lik, log_p.expand(NUM_PARAM_SETS, n), rtol=EXACT_RTOL, atol=0)


# ----------------------------------------------------------------------------- 2. gradients
def test_gradients_reach_every_parameter(case: Case) -> None:
    model, x, context = case.fresh(), case.x, case.context
    # Two steps build the guide (its parameters are created lazily) exactly as fit does.
    fit = probgen.fit(
        model, x, method="svi", steps=2, num_draws=1, progress=False, context=context or None
    )
    guide = fit.guide
    trace = pointwise.prototype_trace(model, x, context)
    nesting = max(pointwise.max_plate_nesting(trace), 1)
    name = fit.diagnostics["objective_name"]
    options: dict[str, Any] = {"max_plate_nesting": nesting}
    if name in elbos.PER_DATUM:  # probgen's "elbo" (the default without discrete sites), "iwae"
        options["data_plate"] = model.data_plate
    elbo = elbos.make_objective(name, **options)

    named = dict(model.named_parameters(prefix="model"))
    if isinstance(guide, torch.nn.Module):  # an autoguide; a family's own guide is a method
        named.update(guide.named_parameters(prefix="guide"))
    assert named, f"{case.name}: neither model nor guide has trainable parameters"
    for p in named.values():
        p.grad = None
    # probgen's ELBO/IWAE and Pyro's Trace_ELBO/TraceEnum_ELBO define it; Pyro's ELBO base does not.
    loss = elbo.differentiable_loss(model.model, guide, x, **context)
    assert torch.isfinite(loss)
    loss.backward()
    missing = [k for k, p in named.items() if p.grad is None]
    assert not missing, f"{case.name}: no gradient reached {missing}"
    bad = [k for k, p in named.items() if not torch.isfinite(p.grad).all()]  # type: ignore[arg-type]
    assert not bad, f"{case.name}: non-finite gradient in {bad}"


# ----------------------------------------------------------------------------- 3. consistency
def _mean_and_stderr(v: Tensor) -> tuple[Tensor, Tensor]:
    return v.mean(0), v.std(0) / math.sqrt(v.shape[0])


def _assert_within(
    a: tuple[Tensor, Tensor], b: tuple[Tensor, Tensor], what: str, slack: float = 0.0
) -> None:
    (ma, sa), (mb, sb) = a, b
    z = (((ma - mb).abs() - slack).clamp(min=0) / (sa.square() + sb.square()).sqrt()).max().item()
    assert z < Z_MAX, f"{what}: {ma} vs {mb} differ by {z:.1f} standard errors (+ {slack:.2g})"


def _is_slack(model: GenerativeModel, draws: Tensor, log_p: Tensor, context: Any) -> float:
    """Allowed gap between ``E_p[log p]`` from samples and from importance weights.

    With ``p_hat = p (1 + e)``, ``E[e] = 0``, ``Var e = v`` (an IS estimate), the delta method
    gives ``E_p[log p_hat] ~ E_p[log p] - E_p[v] / 2`` but ``E_r[(p_hat / r) log p_hat] ~
    E_p[log p] + E_p[v] / 2``: the two differ by ``E_p[v] ~ E_p[Var log p_hat]``, measured from
    a second, independent evaluation as ``mean((l1 - l2)^2) / 2``; twice that is allowed (the
    delta method's higher-order terms). Exactly 0 for an exact ``log_prob``.
    """
    m = min(IS_VARIANCE_ROWS, draws.shape[0])
    again = model.log_prob(draws[:m], **{k: v[:m] for k, v in context.items()})
    return (again - log_p[:m]).square().mean().item()


def _check_real(case: Case, model: GenerativeModel, condition: Condition) -> None:
    num = case.recipe.num_mc
    draws = _sample(model, num, condition)
    mean, cov = draws.mean(0), draws.T.cov()
    proposal = torch.distributions.MultivariateNormal(mean, PROPOSAL_INFLATION * cov)
    torch.manual_seed(1)
    xr = proposal.sample((num,))
    log_pr = model.log_prob(xr, **_rows(condition, num))
    w = (log_pr - proposal.log_prob(xr)).exp()
    log_p = model.log_prob(draws, **_rows(condition, num))
    what = f"{case.name} {condition or ''}"

    norm, norm_se = _mean_and_stderr(w)
    assert abs(norm.item() - 1.0) < Z_MAX * norm_se.item(), f"{what}: E_r[p/r] = {norm} != 1"
    _assert_within(
        _mean_and_stderr(log_p),
        _mean_and_stderr(w * log_pr),
        f"{what}: E_p[log p] from samples vs from log_prob",
        slack=_is_slack(model, draws, log_p, _rows(condition, num)),
    )
    _assert_within(
        _mean_and_stderr(draws),
        _mean_and_stderr(w[:, None] * xr),
        f"{what}: E_p[x] from samples vs from log_prob",
    )
    outer, outer_r = draws[:, :, None] * draws[:, None], xr[:, :, None] * xr[:, None]
    _assert_within(
        _mean_and_stderr(outer),
        _mean_and_stderr(w[:, None, None] * outer_r),
        f"{what}: E_p[x x^T] from samples vs from log_prob",
    )


def _check_binary(case: Case, model: GenerativeModel, condition: Condition) -> None:
    d = case.x.shape[1]
    assert d <= 8, f"{case.name}: support='binary' enumerates 2^D points; D = {d} is too large"
    points = ((torch.arange(2**d)[:, None] >> torch.arange(d)) & 1).double()
    # NUM_REPLICATES independent estimates of each p(x) (each row draws its own particles): their
    # spread is the standard error of the IS estimate, unbiased for p(x) (not for log p(x)).
    reps = points.repeat(NUM_REPLICATES, 1)
    log_p = model.log_prob(reps, **_rows(condition, len(reps))).reshape(NUM_REPLICATES, 2**d)
    p_hat = log_p.exp()
    what = f"{case.name} {condition or ''}"

    total, total_se = _mean_and_stderr(p_hat.sum(1))
    # The 1e-9 floor covers an exact log_prob, whose replicates agree (standard error 0).
    tol = Z_MAX * total_se.item() + 1e-9
    assert abs(total.item() - 1.0) < tol, f"{what}: sum_x p(x) = {total.item()} != 1 (+-{tol:.2g})"

    draws = _sample(model, NUM_BINARY_DRAWS, condition)
    assert ((draws == 0) | (draws == 1)).all(), f"{what}: sample is not binary"
    index = (draws.long() << torch.arange(d)).sum(1)
    freq = torch.bincount(index, minlength=2**d).double() / NUM_BINARY_DRAWS
    p, p_se = _mean_and_stderr(p_hat)
    expected = NUM_BINARY_DRAWS * p
    assert expected.min() >= MIN_EXPECTED, (
        f"{what}: smallest expected count {expected.min().item():.1f} < {MIN_EXPECTED}: the "
        "normal approximation of the frequency test does not hold; change the recipe's data"
    )
    # Multinomial sampling error of each frequency plus the IS error of its reference.
    se = (p * (1 - p) / NUM_BINARY_DRAWS + p_se.square()).sqrt()
    z = ((freq - p).abs() / se).max().item()
    assert z < Z_MAX, f"{what}: frequencies {freq} vs exp(log_prob) {p}: {z:.1f} standard errors"


def test_sample_and_log_prob_agree(case: Case) -> None:
    """Draws of ``sample`` and the density ``log_prob`` are the same normalised law.

    Real data (``support="real"``): with ``r`` a wide Gaussian proposal and ``w = p(x) / r(x)``,
    ``x ~ r``: ``E_r[w] = 1`` (normalisation), ``E_r[w log p] = E_p[log p]``,
    ``E_r[w x] = E_p[x]`` and ``E_r[w x x^T] = E_p[x x^T]``, which must match plain averages over
    ``x ~ sample``. Binary data (``support="binary"``): ``sum_x p(x) = 1`` over all ``2^D``
    points, and the frequencies of ``sample`` match ``p(x)``, point by point (``2^D`` z-tests;
    false-failure rate < 2^D * 1e-7 from the 6-sigma binomial tails, plus ~1e-6 for the t-test
    of the sum). Checked under each of the recipe's conditions (a conditional family's labels).
    """
    if case.recipe.log_prob_is_bound:
        pytest.skip(
            f"{case.name}: log_prob is a stochastic lower bound on log p, not a normalised law "
            "(or an unbiased estimate of one), so sample and log_prob need not agree"
        )
    model = copy.deepcopy(case.model)  # the particle count below must not leak to other tests
    if case.recipe.num_is_particles is not None:
        model.num_is_particles = case.recipe.num_is_particles  # type: ignore[misc]
    check = _check_binary if case.recipe.support == "binary" else _check_real
    for condition in case.recipe.conditions:
        check(case, model, condition)


# ----------------------------------------------------------------------------- 4. save / load
def test_state_dict_round_trip(case: Case, tmp_path: Any) -> None:
    path = tmp_path / f"{case.name}.pt"
    torch.save(case.model.state_dict(), path)
    fresh = case.fresh()
    fresh.setup(case.x, **case.context)  # data-dependent buffers and parameters exist after setup
    fresh.load_state_dict(torch.load(path, weights_only=True))
    assert fresh.params_ is not None, f"{case.name}: params_ was not restored by load_state_dict"
    assert case.model.params_ is not None
    assert fresh.params_.keys() == case.model.params_.keys()
    for k, v in case.model.params_.items():
        assert torch.equal(fresh.params_[k], v), f"{case.name}: params_[{k!r}] changed"
    torch.testing.assert_close(
        _seeded_log_prob(fresh, case.x, case.context),
        _seeded_log_prob(case.model, case.x, case.context),
        rtol=EXACT_RTOL,
        atol=0,
    )


def test_unfitted_round_trip_keeps_params_none(case: Case) -> None:
    source, target = case.fresh(), case.fresh()
    source.setup(case.x, **case.context)
    target.setup(case.x, **case.context)
    target.load_state_dict(source.state_dict())
    assert target.params_ is None
    with pytest.raises(ValueError, match=r"extra state .* must be a dict with key 'params_'"):
        target.set_extra_state({"wrong": 1})


# ----------------------------------------------------------------------------- 5. device/dtype
def _assert_moved(case: Case, moved: GenerativeModel, dtype: torch.dtype, device: str) -> None:
    """Every tensor of ``moved`` is on ``device`` with ``dtype``, and its log_prob agrees."""
    tensors = {**dict(moved.named_parameters()), **dict(moved.named_buffers())}
    tensors.update({f"params_[{k!r}]": v for k, v in (moved.params_ or {}).items()})
    stray = {k: (t.dtype, t.device) for k, t in tensors.items() if t.is_floating_point()}
    stray = {k: v for k, v in stray.items() if v[0] != dtype or v[1].type != device}
    assert not stray, f"{case.name}: tensors not moved to {dtype} on {device}: {stray}"
    x, ref_model = case.x.to(device, dtype), case.model
    context = {k: v.to(device) for k, v in case.context.items()}
    draws = _sample(moved, 5, case.recipe.conditions[0], torch.device(device))
    assert draws.dtype == dtype and draws.device.type == device
    rtol, atol = (F32_RTOL, F32_ATOL) if dtype == torch.float32 else (1e-10, 1e-10)
    if type(ref_model).exact_log_likelihood:
        log_p = moved.log_prob(x, **context)
        assert log_p.dtype == dtype and log_p.device.type == device
        torch.testing.assert_close(
            log_p.cpu().double(), ref_model.log_prob(case.x), rtol=rtol, atol=atol
        )
        return
    # An estimated log_prob draws different particles on another dtype or device (torch's
    # normal_ consumes the RNG differently for float32 and float64, and CUDA has its own), so
    # the two estimates (the family's own particle count) are compared by their means over
    # NUM_REPLICATES independent replicates, within Z_MAX of their Monte Carlo standard error
    # plus the dtype's round-off (measured tolerance 0.006-0.04 nats for the VAE recipes).
    m = min(MOVE_ROWS, x.shape[0])

    def replicated(t: Tensor) -> Tensor:  # rows 0..m-1, NUM_REPLICATES times over
        return t[:m].repeat(NUM_REPLICATES, *[1] * (t.dim() - 1))

    log_p = moved.log_prob(replicated(x), **{k: replicated(v) for k, v in context.items()})
    assert log_p.dtype == dtype and log_p.device.type == device
    ref_context = {k: replicated(v) for k, v in case.context.items()}
    ref = ref_model.log_prob(replicated(case.x), **ref_context)
    a, sa = _mean_and_stderr(log_p.cpu().double().reshape(NUM_REPLICATES, m))
    b, sb = _mean_and_stderr(ref.reshape(NUM_REPLICATES, m))
    tol = Z_MAX * (sa.square() + sb.square()).sqrt() + atol + rtol * b.abs()
    assert ((a - b).abs() <= tol).all(), f"{case.name}: log_prob {a} moved vs {b} (tol {tol})"


def test_move_to_float32(case: Case) -> None:
    moved = copy.deepcopy(case.model).to(torch.float32)
    _assert_moved(case, moved, torch.float32, "cpu")
    # The original is untouched (deepcopy), so fitted float64 state was not shared.
    assert case.model.log_prob(case.x, **case.context).dtype == torch.float64


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA is not available")
def test_move_to_cuda(case: Case) -> None:
    # Different BLAS/LAPACK kernels on the GPU: float64 agreement to round-off, not bitwise.
    _assert_moved(case, copy.deepcopy(case.model).to("cuda"), torch.float64, "cuda")
