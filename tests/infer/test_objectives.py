"""probgen's lean ELBO and per-datum IWAE against Pyro's estimators and hand computations.

References: Pyro's ``Trace_ELBO`` and ``RenyiELBO(alpha=0)`` run on the same model, guide and
random seed (so both see the same draws), and ``log p - log q`` written out with
``torch.distributions`` from draws taken explicitly from the guide's distribution.
"""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from pyro.infer import RenyiELBO, Trace_ELBO
from pyro.infer.autoguide import AutoNormal
from torch import distributions as td

from models.vae import VAE
from probgen.infer import objectives
from probgen.infer.svi import DataPlateScale

#: Two float64 computations of the same sum of log-densities, in different orders: round-off
#: on totals of a few hundred nats.
EXACT_RTOL = 1e-12
#: Same for gradients (entries of order 1-100).
GRAD_ATOL = 1e-10
N, D, Q = 12, 5, 2
SEED = 7


@pytest.fixture
def vae() -> VAE:
    """A small random VAE (Bernoulli likelihood, one hidden layer), float64."""
    return VAE(D, Q, hidden=(4,)).double()


@pytest.fixture
def xb() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return (torch.rand(N, D, generator=g, dtype=torch.float64) < 0.4).double()


def _loss(objective, model, guide, x, seed: int = SEED) -> torch.Tensor:
    pyro.set_rng_seed(seed)
    return objective.differentiable_loss(model, guide, x)


def _assert_same_value_and_grads(ours, pyros, model, guide, x, params) -> None:
    a = _loss(ours, model, guide, x)
    b = _loss(pyros, model, guide, x)
    assert a.item() == pytest.approx(b.item(), rel=EXACT_RTOL)
    ga = torch.autograd.grad(a, params, allow_unused=True)
    gb = torch.autograd.grad(b, params, allow_unused=True)
    for p, u, v in zip(params, ga, gb, strict=True):
        # A parameter outside the graph (e.g. the decoder under a mask of False) has None.
        zero = torch.zeros_like(p)
        u, v = zero if u is None else u, zero if v is None else v
        torch.testing.assert_close(u, v, rtol=0.0, atol=GRAD_ATOL)


def _trace_elbo(k: int, nesting: int = 1) -> Trace_ELBO:
    return Trace_ELBO(num_particles=k, vectorize_particles=k > 1, max_plate_nesting=nesting)


# ----------------------------------------------------------------------------- models
def global_model(x: torch.Tensor) -> None:
    """mu ~ N(0, 2^2), s ~ LogNormal(0, 1) (globals), x_n ~ N(mu, s^2)."""
    mu = pyro.sample("mu", dist.Normal(x.new_zeros(()), 2.0))
    s = pyro.sample("s", dist.LogNormal(x.new_zeros(()), 1.0))
    with pyro.plate("data", x.shape[0]):
        pyro.sample("obs", dist.Normal(mu, s), obs=x)


def hierarchical_model(x: torch.Tensor) -> None:
    """theta ~ N(0, I_2) (global), z_n ~ N(theta, I_2), x_n ~ N(z_n, 0.5^2 I_2)."""
    theta = pyro.sample("theta", dist.Normal(x.new_zeros(2), 1.0).to_event(1))
    with pyro.plate("data", x.shape[0]):
        z = pyro.sample("z", dist.Normal(theta, 1.0).to_event(1))
        pyro.sample("obs", dist.Normal(z, 0.5).to_event(1), obs=x)


def _local_guide(x: torch.Tensor) -> dist.TorchDistribution:
    a = pyro.param("a", torch.full((2,), 0.7, dtype=x.dtype))
    b = pyro.param("b", torch.full((2,), 0.1, dtype=x.dtype))
    s = pyro.param("s", torch.full((2,), 0.6, dtype=x.dtype), constraint=dist.constraints.positive)
    return dist.Normal(a * x + b, s).to_event(1)


def delta_guide(x: torch.Tensor) -> None:
    """theta a point mass (MAP-style global), z_n ~ N(a x_n + b, diag s^2)."""
    theta = pyro.param("theta_loc", torch.tensor([0.3, -0.2], dtype=x.dtype))
    pyro.sample("theta", dist.Delta(theta).to_event(1))
    q = _local_guide(x)
    with pyro.plate("data", x.shape[0]):
        pyro.sample("z", q)


def sampled_guide(x: torch.Tensor) -> None:
    """theta ~ N(m, diag v^2) (a sampled global), z_n as in :func:`delta_guide`."""
    m = pyro.param("theta_loc", torch.tensor([0.3, -0.2], dtype=x.dtype))
    v = pyro.param(
        "theta_scale", torch.full((2,), 0.2, dtype=x.dtype), constraint=dist.constraints.positive
    )
    pyro.sample("theta", dist.Normal(m, v).to_event(1))
    q = _local_guide(x)
    with pyro.plate("data", x.shape[0]):
        pyro.sample("z", q)


@pytest.fixture
def xh() -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    return torch.randn(N, 2, generator=g, dtype=torch.float64) + 1.0


def _hier_log_weights(x: torch.Tensor, theta: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """log p(z_nk | theta) + log p(x_n | z_nk) - log q(z_nk | x_n), ``[K, N]``, by hand."""
    a, b, s = pyro.param("a"), pyro.param("b"), pyro.param("s")
    log_p = td.Normal(theta, 1.0).log_prob(z).sum(-1) + td.Normal(z, 0.5).log_prob(x).sum(-1)
    return log_p - td.Normal(a * x + b, s).log_prob(z).sum(-1)


# ----------------------------------------------------------------------------- ELBO
def _vae_log_weights(vae: VAE, x: torch.Tensor, k: int, seed: int = SEED) -> torch.Tensor:
    """``[K, N]`` log p(x_n, z_nk) - log q(z_nk | x_n), z drawn from ``vae.posterior``."""
    pyro.set_rng_seed(seed)
    q = vae.posterior(x)
    z = q.rsample((k,))
    logits = vae.decoder(z)  # the decoder's raw outputs are Bernoulli logits
    log_prior = td.Normal(0.0, 1.0).log_prob(z).sum(-1)
    log_lik = td.Bernoulli(logits=logits).log_prob(x).sum(-1)
    return log_prior + log_lik - q.log_prob(z)


@pytest.mark.parametrize("k", [1, 4])
def test_elbo_matches_trace_elbo_on_a_vae(vae, xb, k):
    _assert_same_value_and_grads(
        objectives.ELBO(num_particles=k),
        _trace_elbo(k),
        vae.model,
        vae.guide,
        xb,
        list(vae.parameters()),
    )


@pytest.mark.parametrize("k", [1, 3])
def test_elbo_matches_trace_elbo_with_a_global_latent_and_autonormal(xh, k):
    x = xh[:, 0]
    guide = AutoNormal(global_model).double()
    guide(x)  # creates the parameters
    _assert_same_value_and_grads(
        objectives.ELBO(num_particles=k),
        _trace_elbo(k),
        global_model,
        guide,
        x,
        list(guide.parameters()),
    )


@pytest.mark.parametrize("k", [1, 3])
def test_elbo_matches_trace_elbo_under_minibatch_scaling(vae, xb, k):
    """DataPlateScale multiplies data-plate terms by N/B; global terms stay unscaled."""
    scale = 8.5
    model = DataPlateScale("data", scale)(vae.model)
    guide = DataPlateScale("data", scale)(vae.guide)
    _assert_same_value_and_grads(
        objectives.ELBO(num_particles=k), _trace_elbo(k), model, guide, xb, list(vae.parameters())
    )
    # A global site keeps scale 1 while the data-plate ones are scaled.
    x = xb[:, 0] + 0.5
    auto = AutoNormal(global_model).double()
    auto(x)
    scaled = DataPlateScale("data", scale)(global_model)
    _assert_same_value_and_grads(
        objectives.ELBO(num_particles=k), _trace_elbo(k), scaled, auto, x, list(auto.parameters())
    )
    # poutine.scale on the whole program scales everything.
    whole_m, whole_g = poutine.scale(vae.model, scale=0.25), poutine.scale(vae.guide, scale=0.25)
    _assert_same_value_and_grads(
        objectives.ELBO(num_particles=k),
        _trace_elbo(k),
        whole_m,
        whole_g,
        xb,
        list(vae.parameters()),
    )


@pytest.mark.parametrize("k", [1, 3])
def test_elbo_matches_trace_elbo_with_masks(vae, xb, k):
    mask = torch.arange(N) % 3 != 0
    model, guide = poutine.mask(vae.model, mask=mask), poutine.mask(vae.guide, mask=mask)
    _assert_same_value_and_grads(
        objectives.ELBO(num_particles=k), _trace_elbo(k), model, guide, xb, list(vae.parameters())
    )
    # The masked data contribute nothing: the ELBO equals the one of the kept rows, as long as
    # the draws of the kept rows are the same (they are: one [K, N, q] draw either way).
    full = _loss(objectives.ELBO(num_particles=k), model, guide, xb)
    log_w = _vae_log_weights(vae, xb, k)
    assert -full.item() == pytest.approx(log_w[:, mask].sum().item() / k, rel=EXACT_RTOL)
    # A boolean mask on one site only (the observation): the latent terms stay.
    obs_masked = poutine.mask(vae.model, mask=False)
    _assert_same_value_and_grads(
        objectives.ELBO(num_particles=k),
        _trace_elbo(k),
        obs_masked,
        vae.guide,
        xb,
        list(vae.parameters()),
    )


def test_elbo_of_k_particles_is_their_mean(vae, xb):
    """-loss = (1/K) sum_k [log p(x, z_k) - log q(z_k | x)] with z_k drawn by hand."""
    k = 5
    loss = _loss(objectives.ELBO(num_particles=k), vae.model, vae.guide, xb)
    log_w = _vae_log_weights(vae, xb, k)
    assert -loss.item() == pytest.approx(log_w.sum(-1).mean().item(), rel=EXACT_RTOL)


def bernoulli_model(x: torch.Tensor) -> None:
    c = pyro.sample("c", dist.Bernoulli(x.new_tensor(0.3)))
    with pyro.plate("data", x.shape[0]):
        pyro.sample("obs", dist.Normal(2.0 * c, 1.0), obs=x)


def bernoulli_guide(x: torch.Tensor) -> None:
    p = pyro.param("p", x.new_tensor(0.6), constraint=dist.constraints.unit_interval)
    pyro.sample("c", dist.Bernoulli(p))


@pytest.mark.parametrize("k", [1, 4])
def test_elbo_falls_back_to_trace_elbo_for_a_discrete_guide(xh, k):
    """A Bernoulli guide site has no rsample: the score-function surrogate of Trace_ELBO."""
    x = xh[:, 0]
    bernoulli_guide(x)
    params = [pyro.param("p").unconstrained()]
    for seed in range(6):  # both outcomes of c occur; the first call is the one that falls back
        ours = objectives.ELBO(num_particles=k)
        pyro.set_rng_seed(seed)
        a = ours.differentiable_loss(bernoulli_model, bernoulli_guide, x)
        pyro.set_rng_seed(seed)
        b = _trace_elbo(k).differentiable_loss(bernoulli_model, bernoulli_guide, x)
        assert a.item() == pytest.approx(b.item(), rel=EXACT_RTOL)
        ga, gb = (torch.autograd.grad(v, params)[0] for v in (a, b))
        torch.testing.assert_close(ga, gb, rtol=0.0, atol=GRAD_ATOL)
        # Later calls stay on Trace_ELBO.
        _assert_same_value_and_grads(
            ours, _trace_elbo(k), bernoulli_model, bernoulli_guide, x, params
        )


def test_elbo_rejects_a_latent_missing_from_the_guide(vae, xb):
    with pytest.raises(ValueError, match="latent site 'z' is not sampled by the guide"):
        objectives.ELBO().differentiable_loss(vae.model, lambda x: None, xb)


# ----------------------------------------------------------------------------- IWAE
@pytest.mark.parametrize("k", [2, 10])
def test_iwae_is_the_per_datum_log_mean_exp_of_hand_drawn_weights(vae, xb, k):
    bound = -_loss(objectives.IWAE(num_particles=k), vae.model, vae.guide, xb)
    log_w = _vae_log_weights(vae, xb, k)
    expected = (log_w.logsumexp(0) - math.log(k)).sum()
    assert bound.item() == pytest.approx(expected.item(), rel=EXACT_RTOL)
    # Minibatch scaling multiplies the per-datum sum after the log-mean-exp.
    scaled = objectives.IWAE(num_particles=k)
    model, guide = DataPlateScale("data", 4.0)(vae.model), DataPlateScale("data", 4.0)(vae.guide)
    assert -_loss(scaled, model, guide, xb).item() == pytest.approx(
        4.0 * expected.item(), rel=EXACT_RTOL
    )


def test_iwae_gradients_match_the_hand_computation(vae, xb):
    k = 6
    params = list(vae.parameters())
    bound = -_loss(objectives.IWAE(num_particles=k), vae.model, vae.guide, xb)
    log_w = _vae_log_weights(vae, xb, k)
    expected = (log_w.logsumexp(0) - math.log(k)).sum()
    for u, v in zip(
        torch.autograd.grad(bound, params), torch.autograd.grad(expected, params), strict=True
    ):
        torch.testing.assert_close(u, v, rtol=0.0, atol=GRAD_ATOL)


def test_iwae_with_one_particle_is_the_elbo(vae, xb):
    iwae = _loss(objectives.IWAE(num_particles=1), vae.model, vae.guide, xb)
    elbo = _loss(objectives.ELBO(num_particles=1), vae.model, vae.guide, xb)
    assert iwae.item() == pytest.approx(elbo.item(), rel=EXACT_RTOL)


def test_iwae_is_at_least_the_elbo_of_the_same_draws(vae, xb):
    """log (1/K) sum_k w_k >= (1/K) sum_k log w_k per datum (Jensen), draw by draw."""
    k = 8
    gaps = []
    for seed in range(5):
        iwae = -_loss(objectives.IWAE(num_particles=k), vae.model, vae.guide, xb, seed)
        elbo = -_loss(objectives.ELBO(num_particles=k), vae.model, vae.guide, xb, seed)
        gaps.append((iwae - elbo).item())
    assert min(gaps) >= 0.0
    assert sum(gaps) / len(gaps) > 0.1  # a random VAE's guide is far from its posterior


def test_iwae_of_a_vae_equals_pyros_renyi_alpha_zero(vae, xb):
    """Pyro's RenyiELBO keeps plates common to all sites: for a VAE it is per datum too."""
    k = 7
    ours = -_loss(objectives.IWAE(num_particles=k), vae.model, vae.guide, xb).item()
    pyro.set_rng_seed(SEED)
    renyi = RenyiELBO(alpha=0.0, num_particles=k, vectorize_particles=True, max_plate_nesting=1)
    assert ours == pytest.approx(-renyi.loss(vae.model, vae.guide, xb), rel=EXACT_RTOL)


@pytest.mark.parametrize("k", [1, 5])
def test_iwae_with_a_point_mass_global_is_log_prior_plus_per_datum_bounds(xh, k):
    delta_guide(xh)
    bound = -_loss(objectives.IWAE(num_particles=k), hierarchical_model, delta_guide, xh)
    pyro.set_rng_seed(SEED)
    theta = pyro.param("theta_loc").detach()
    with torch.no_grad():
        q = _local_guide(xh)
    z = q.rsample((k,))
    log_w = _hier_log_weights(xh, theta, z)
    log_prior = td.Normal(0.0, 1.0).log_prob(theta).sum()
    expected = log_prior + (log_w.logsumexp(0) - math.log(k)).sum()
    assert bound.item() == pytest.approx(expected.item(), rel=EXACT_RTOL)
    # Minibatch scaling applies to the per-datum part only.
    model = DataPlateScale("data", 3.0)(hierarchical_model)
    guide = DataPlateScale("data", 3.0)(delta_guide)
    scaled = -_loss(objectives.IWAE(num_particles=k), model, guide, xh)
    assert scaled.item() == pytest.approx(
        (log_prior + 3.0 * (expected - log_prior)).item(), rel=EXACT_RTOL
    )


def test_per_datum_iwae_is_tighter_than_the_joint_bound_on_many_points():
    """With a global site Pyro's RenyiELBO(alpha=0) is joint over the batch; ours is not.

    For B points the joint log-mean-exp of products of B weights gains little over the ELBO,
    while the per-datum bound gains on every point. Same draws for both (same seed).
    """
    n, k = 400, 10
    g = torch.Generator().manual_seed(2)
    x = torch.randn(n, 2, generator=g, dtype=torch.float64) + 1.0
    delta_guide(x)
    ours = -_loss(objectives.IWAE(num_particles=k), hierarchical_model, delta_guide, x).item()
    elbo = -_loss(objectives.ELBO(num_particles=k), hierarchical_model, delta_guide, x).item()
    pyro.set_rng_seed(SEED)
    joint = -RenyiELBO(
        alpha=0.0, num_particles=k, vectorize_particles=True, max_plate_nesting=1
    ).loss(hierarchical_model, delta_guide, x)
    # By hand: the joint bound of the same draws.
    pyro.set_rng_seed(SEED)
    theta = pyro.param("theta_loc").detach()
    with torch.no_grad():
        z = _local_guide(x).rsample((k,))
        log_w = _hier_log_weights(x, theta, z)
    log_prior = td.Normal(0.0, 1.0).log_prob(theta).sum()
    assert joint == pytest.approx(
        (log_prior + log_w.sum(1).logsumexp(0) - math.log(k)).item(), rel=EXACT_RTOL
    )
    assert ours > joint + 0.5 * (ours - elbo)  # most of the IWAE gain is lost jointly
    assert ours - elbo > 10.0  # nats over 400 points


@pytest.mark.parametrize("k", [1, 6])
def test_iwae_with_a_sampled_global_is_pyros_joint_renyi_bound(xh, k):
    sampled_guide(xh)
    ours = -_loss(objectives.IWAE(num_particles=k), hierarchical_model, sampled_guide, xh).item()
    pyro.set_rng_seed(SEED)
    renyi = RenyiELBO(alpha=0.0, num_particles=k, vectorize_particles=True, max_plate_nesting=1)
    assert ours == pytest.approx(-renyi.loss(hierarchical_model, sampled_guide, xh), rel=EXACT_RTOL)


def nested_model(x: torch.Tensor) -> None:
    """z_n ~ N(0, 1), x_nf ~ N(z_n, 1) over a nested feature plate."""
    with pyro.plate("data", x.shape[0], dim=-2):
        z = pyro.sample("z", dist.Normal(x.new_zeros(1), 1.0))
        with pyro.plate("features", x.shape[1], dim=-1):
            pyro.sample("obs", dist.Normal(z, 1.0), obs=x)


def nested_guide(x: torch.Tensor) -> None:
    with pyro.plate("data", x.shape[0], dim=-2):
        pyro.sample("z", dist.Normal(0.2 * x.sum(-1, keepdim=True), 0.7))


@pytest.mark.parametrize("k", [1, 5])
def test_iwae_sums_a_nested_plate_inside_each_datum(xh, k):
    x = torch.cat([xh, xh.flip(-1)], -1)  # [N, 4]
    iwae = objectives.IWAE(num_particles=k, max_plate_nesting=2)
    bound = -_loss(iwae, nested_model, nested_guide, x).item()
    pyro.set_rng_seed(SEED)
    q = td.Normal(0.2 * x.sum(-1, keepdim=True), 0.7)
    z = q.rsample((k,))  # [K, N, 1]
    log_w = (
        td.Normal(0.0, 1.0).log_prob(z)
        + td.Normal(z, 1.0).log_prob(x).sum(-1, keepdim=True)
        - q.log_prob(z)
    ).squeeze(-1)
    assert bound == pytest.approx((log_w.logsumexp(0) - math.log(k)).sum().item(), rel=EXACT_RTOL)


# ----------------------------------------------------------------------------- bad input
def test_iwae_rejects_a_beta_vae():
    beta_vae = VAE(D, Q, hidden=(4,), beta=2.0).double()
    x = torch.ones(3, D, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"one scale for every per-datum site.*beta must be 1"):
        objectives.IWAE(num_particles=3).differentiable_loss(beta_vae.model, beta_vae.guide, x)


def test_iwae_names_a_model_latent_missing_from_the_guide(xh):
    def guide_without_z(x):
        pyro.sample("theta", dist.Delta(x.new_zeros(2)).to_event(1))

    with pytest.raises(ValueError, match="latent site 'z' is not sampled by the guide"):
        objectives.IWAE(num_particles=2).differentiable_loss(
            hierarchical_model, guide_without_z, xh
        )


def test_iwae_rejects_a_discrete_guide(xh):
    with pytest.raises(ValueError, match="reparameterised guide; site 'c' has no rsample"):
        objectives.IWAE(num_particles=2).differentiable_loss(
            bernoulli_model, bernoulli_guide, xh[:, 0]
        )


@pytest.mark.parametrize("cls", [objectives.ELBO, objectives.IWAE])
def test_num_particles_must_be_a_positive_int(cls):
    with pytest.raises(ValueError, match="num_particles must be >= 1, got 0"):
        cls(num_particles=0)
    with pytest.raises(ValueError, match="num_particles must be >= 1, got -2"):
        cls(num_particles=-2)
    for bad in (2.0, True, "3"):
        with pytest.raises(TypeError, match="num_particles must be an int"):
            cls(num_particles=bad)
    with pytest.raises(ValueError, match="always vectorise particles"):
        cls(num_particles=2, vectorize_particles=False)


# ----------------------------------------------------------------------------- native scaling
@pytest.mark.parametrize("cls", [objectives.ELBO, objectives.IWAE])
def test_native_data_scale_equals_the_data_plate_scale_messenger(vae, xb, cls):
    """``objective.data_scale(s)`` is documented as DataPlateScale(s) on model and guide."""
    if not hasattr(cls, "data_scale"):
        pytest.skip("this objective has no native data_scale")
    ours = cls(num_particles=3)
    model, guide = DataPlateScale("data", 2.5)(vae.model), DataPlateScale("data", 2.5)(vae.guide)
    expected = _loss(cls(num_particles=3), model, guide, xb)
    with ours.data_scale(2.5):
        got = _loss(ours, vae.model, vae.guide, xb)
    assert got.item() == pytest.approx(expected.item(), rel=EXACT_RTOL)
    assert _loss(ours, vae.model, vae.guide, xb).item() != pytest.approx(got.item())  # reset


def test_native_data_scale_reaches_the_trace_elbo_fallback(xh):
    """A discrete guide falls back to Trace_ELBO; the minibatch scale must still apply."""
    if not hasattr(objectives.ELBO, "data_scale"):
        pytest.skip("ELBO has no native data_scale")
    x = xh[:, 0]
    bernoulli_guide(x)
    ours = objectives.ELBO()
    model = DataPlateScale("data", 4.0)(bernoulli_model)
    for _ in range(2):  # the call that falls back, and one on the fallback
        with ours.data_scale(4.0):
            got = _loss(ours, bernoulli_model, bernoulli_guide, x)
        expected = _loss(_trace_elbo(1), model, bernoulli_guide, x)
        assert got.item() == pytest.approx(expected.item(), rel=EXACT_RTOL)


# ----------------------------------------------------------------------------- analytic KL
def _gaussian_pair(analytic: bool):
    """z_n ~ N(0, 1), x_n ~ N(z_n, 0.5^2); guide q(z_n) = N(m_n, s_n^2) with parameters."""

    def model(x):
        with pyro.plate("data", x.shape[0]):
            infer = {"analytic_kl": True} if analytic else {}
            z = pyro.sample("z", dist.Normal(x.new_zeros(()), 1.0), infer=infer)
            pyro.sample("obs", dist.Normal(z, 0.5), obs=x)

    def guide(x):
        m = pyro.param("m", 0.3 * x)
        s = pyro.param("s", torch.full_like(x, 0.7), constraint=dist.constraints.positive)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(m, s))

    return model, guide


def test_analytic_kl_site_is_scored_by_the_closed_form_kl(xh):
    """With the same draw z, the two ELBOs differ by exactly (log p(z) - log q(z)) + KL(q||p):
    the analytic term replaces the per-draw log ratio of that site and nothing else."""
    x = xh[:, 0]
    model_mc, guide = _gaussian_pair(analytic=False)
    model_rb, _ = _gaussian_pair(analytic=True)
    guide(x)
    q = td.Normal(pyro.param("m"), pyro.param("s"))
    pyro.set_rng_seed(SEED)
    mc = objectives.ELBO().differentiable_loss(model_mc, guide, x)
    pyro.set_rng_seed(SEED)
    rb = objectives.ELBO().differentiable_loss(model_rb, guide, x)
    pyro.set_rng_seed(SEED)
    z = q.rsample()  # the same draw the guide made
    ratio = td.Normal(0.0, 1.0).log_prob(z) - q.log_prob(z)
    kl = td.kl_divergence(q, td.Normal(0.0, 1.0))
    expected = mc.item() + (ratio.sum() + kl.sum()).item()
    assert rb.item() == pytest.approx(expected, rel=EXACT_RTOL)


def test_analytic_kl_is_unbiased(xh):
    """Averaged over draws, the Rao-Blackwellised ELBO and the Monte Carlo one both equal the
    exact ELBO of this conjugate pair, written out in closed form."""
    x = xh[:, 0]
    model_mc, guide = _gaussian_pair(analytic=False)
    model_rb, _ = _gaussian_pair(analytic=True)
    guide(x)
    m, s = pyro.param("m").detach(), pyro.param("s").detach()
    # -ELBO = KL(q || N(0,1)) - E_q log N(x; z, 0.25) in closed form
    kl = td.kl_divergence(td.Normal(m, s), td.Normal(0.0, 1.0)).sum()
    rec = (0.5 * math.log(2 * math.pi * 0.25) + ((x - m) ** 2 + s**2) / (2 * 0.25)).sum()
    exact = (kl + rec).item()
    pyro.set_rng_seed(SEED)
    draws = {
        name: torch.tensor([objectives.ELBO().loss(mdl, guide, x) for _ in range(400)])
        for name, mdl in (("mc", model_mc), ("rb", model_rb))
    }
    for values in draws.values():
        se = values.std().item() / math.sqrt(values.numel())
        assert abs(values.mean().item() - exact) < 5 * se


def test_pyros_elbo_ignores_the_analytic_kl_mark(xh):
    """The mark is probgen's: Pyro's Trace_ELBO on the marked program is its plain estimate."""
    x = xh[:, 0]
    model_mc, guide = _gaussian_pair(analytic=False)
    model_rb, _ = _gaussian_pair(analytic=True)
    pyro.set_rng_seed(SEED)
    a = Trace_ELBO().loss(model_mc, guide, x)
    pyro.set_rng_seed(SEED)
    b = Trace_ELBO().loss(model_rb, guide, x)
    assert a == pytest.approx(b, rel=EXACT_RTOL)


def test_a_parameter_free_discrete_guide_site_stays_on_the_pathwise_path(xh):
    """An auxiliary index drawn from a fixed distribution (a diffusion's timestep) has a zero
    score-function term: the lean ELBO keeps it (no Trace_ELBO fallback) and its value and
    gradients equal Trace_ELBO's, whose surrogate term vanishes."""
    x = xh[:, 0]
    probs = x.new_tensor([0.2, 0.5, 0.3])
    shifts = x.new_tensor([-1.0, 0.0, 2.0])

    def model(x):
        with pyro.plate("data", x.shape[0]):
            k = pyro.sample("k", dist.Categorical(probs))
            z = pyro.sample("z", dist.Normal(shifts[k], 1.0))
            pyro.sample("obs", dist.Normal(z, 0.5), obs=x)

    def guide(x):
        m = pyro.param("m", 0.1 * x)
        with pyro.plate("data", x.shape[0]):
            k = pyro.sample("k", dist.Categorical(probs))
            pyro.sample("z", dist.Normal(m + shifts[k], 1.0))

    guide(x)
    params = [pyro.param("m")]
    ours = objectives.ELBO()
    _assert_same_value_and_grads(ours, Trace_ELBO(), model, guide, x, params)
    assert ours._fallback is None
