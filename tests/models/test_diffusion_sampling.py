"""Samplers of the DDPM family (``models.diffusion_sampling``) and the family's input checks.

References: hand-written loops of Ho et al. (2020, arXiv:2006.11239) Algorithm 2 in its
``eps`` form (eq. 11) and of Song et al.'s DDIM update (2021, arXiv:2010.02502, eq. 12), both
fed the same noise draws, with the schedule's ``abar_t`` and ``btilde_t`` recomputed from the
betas; equality in law by kernel two-sample tests (DDIM with ``eta = 1`` over all ``T`` steps
vs ancestral sampling, the fast sampler vs the Pyro program ``chain_model``); and, for a model
trained on a 2-D Gaussian mixture, sliced Wasserstein distances to held-out data, compared with
a moment-matched Gaussian and with a second data sample.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import pyro
import pytest
import torch
from pyro import poutine
from torch import Tensor

import probgen
from models.diffusion import DDPM
from models.diffusion_sampling import ancestral, ddim, ddim_timesteps
from probgen.diagnostics import mmd, wasserstein

#: Level of the permutation tests of equality in law. Permutation p-values are valid
#: (P(p <= alpha) <= alpha under equality), so each such test fails falsely at most 1 time in
#: 1000 seeds; all seeds are fixed, so a pass is reproducible.
ALPHA = 1e-3
#: Permutations per test: the smallest attainable p-value, 1 / 2000, is below ALPHA, so the
#: power checks can reject.
PERMUTATIONS = 1999
#: Draws per sample in the two-sample tests (~0.9 s per test with the permutations).
NUM_DRAWS = 1000
#: A sampler vs a hand-written loop fed the same noise, float64: the same arithmetic in another
#: form and order through <= 100 steps; measured max difference 1e-14 (values of order 1).
REFERENCE_RTOL, REFERENCE_ATOL = 1e-9, 1e-9
#: Trained 2-D mixture: sliced 1-Wasserstein distance (256 directions) of 1000 model draws to
#: 1000 held-out data. Measured 0.05-0.11 for ancestral and DDIM-50 over three training seeds;
#: two data samples are 0.03-0.05 apart (the floor at this sample size); a Gaussian with the
#: data's mean and covariance is 0.23-0.25 away.
SW_MAX = 0.15
#: Fraction of draws within 3 component sds of a mixture centre: 0.989 for the data
#: (1 - e^{-4.5}), measured 0.89-0.91 for the trained samplers, ~0.20 for the Gaussian.
IN_MODE_MIN = 0.8
#: The Gaussian baseline must sit clearly outside both criteria for them to mean anything.
BASELINE_IN_MODE_MAX = 0.5

D = 2
T_SMALL = 20


def _float64(model: DDPM) -> DDPM:
    model.to(torch.float64)
    return model


def _perturbed(decoder: str = "gaussian", data_dim: int = D, steps: int = T_SMALL) -> DDPM:
    """A small DDPM whose zero-initialised output layer is replaced by N(0, 0.5^2) weights.

    It predicts ``x_0`` (``parameterization="x0"``): a random ``eps`` network makes
    ``x0 = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t)`` explode near ``t = T``, a random
    ``x_0`` network only warps the law (measured: mean (0.30, -1.77), sds (1.18, 0.48),
    correlation -0.78).
    """
    pyro.set_rng_seed(0)
    model = DDPM(
        data_dim,
        steps=steps,
        variance="beta_tilde",
        decoder=decoder,
        parameterization="x0",
        hidden=(32, 32),
    )
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.net.get_submodule("out").parameters():
            p.copy_(0.5 * torch.randn(p.shape, generator=g))
    return _float64(model)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _ancestral(model: DDPM, n: int, **options: Any) -> Tensor:
    out = ancestral(model, n, **options)
    assert isinstance(out, Tensor)  # no return_chain: the draws alone
    return out


def _ddim(model: DDPM, n: int, steps: int, **options: Any) -> Tensor:
    out = ddim(model, n, steps, **options)
    assert isinstance(out, Tensor)
    return out


def _p_value(x: Tensor, y: Tensor) -> float:
    p = mmd(x, y, permutations=PERMUTATIONS, seed=0).p_value
    assert p is not None
    return p


# ----------------------------------------------------------------------------- trained model
MIXTURE_K, MIXTURE_RADIUS, MIXTURE_SD = 6, 4.0, 0.4


def _centres() -> Tensor:
    angle = 2 * math.pi * torch.arange(MIXTURE_K, dtype=torch.float64) / MIXTURE_K
    return MIXTURE_RADIUS * torch.stack([angle.cos(), angle.sin()], -1)


def _mixture(n: int, g: torch.Generator) -> Tensor:
    """``n`` draws of six equally weighted N(c_k, 0.4^2 I), centres on a circle of radius 4."""
    k = torch.randint(MIXTURE_K, (n,), generator=g)
    return _centres()[k] + MIXTURE_SD * torch.randn(n, 2, generator=g, dtype=torch.float64)


class Trained:
    """A DDPM fitted on 2000 standardised mixture draws, with 1000 held-out ones."""

    def __init__(self) -> None:
        g = _gen(0)
        raw = _mixture(4000, g)
        self.mean, self.sd = raw[:2000].mean(0), raw[:2000].std(0)
        data = (raw - self.mean) / self.sd
        self.train, self.held, self.other = data[:2000], data[2000:3000], data[3000:]
        pyro.set_rng_seed(0)
        # Cosine schedule, v-prediction, Ho et al.'s L_simple: trains in 5-10 s of CPU. With
        # eps-prediction, x0 = (x_t - sqrt(1 - abar) eps) / sqrt(abar) multiplies the network's
        # error by up to 1 / sqrt(abar_99) = 32 (cosine, T = 100) and DDIM (eta = 0) never
        # forgets it: measured SW 0.18-0.31 for DDIM-50 (ancestral 0.11-0.14) over three
        # seeds. v gives x0 = sqrt(abar) x_t - sqrt(1 - abar) v, well posed at every t.
        self.model = DDPM(
            2,
            steps=100,
            schedule="cosine",
            parameterization="v",
            loss="simple",
            hidden=(64, 64, 64),
        )
        probgen.fit(
            self.model, self.train, epochs=80, batch_size=256, lr=3e-3, seed=0, progress=False
        )

    def in_mode(self, x: Tensor) -> float:
        """Fraction of (standardised) draws within 3 component sds of a mixture centre."""
        dist = (x * self.sd + self.mean)[:, None].sub(_centres()).norm(dim=-1).min(1).values
        return (dist < 3 * MIXTURE_SD).double().mean().item()


@pytest.fixture(scope="module")
def trained() -> Trained:
    return Trained()


def _sliced_w1(x: Tensor, y: Tensor) -> float:
    return wasserstein(x, y, p=1, num_projections=256, seed=0).value.item()


def test_trained_samplers_stay_close_to_the_data(trained: Trained) -> None:
    model, held = trained.model, trained.held
    draws = {
        "ancestral": _ancestral(model, 1000, generator=_gen(1)),
        "ddim-50": _ddim(model, 1000, 50, eta=0.0, generator=_gen(2)),
    }
    fit = torch.distributions.MultivariateNormal(trained.train.mean(0), trained.train.T.cov())
    baseline = fit.sample((1000,))
    base_sw, base_in = _sliced_w1(baseline, held), trained.in_mode(baseline)
    floor = _sliced_w1(trained.other, held)
    assert base_sw > SW_MAX and base_in < BASELINE_IN_MODE_MAX, (base_sw, base_in)
    assert floor < SW_MAX, floor
    for name, x in draws.items():
        assert x.shape == (1000, 2) and torch.isfinite(x).all()
        sw, inside = _sliced_w1(x, held), trained.in_mode(x)
        assert sw < SW_MAX, f"{name}: SW1 {sw:.3f} (Gaussian {base_sw:.3f}, data {floor:.3f})"
        assert inside > IN_MODE_MIN, f"{name}: {inside:.3f} of draws near a mode"


def _schedule(model: DDPM) -> tuple[Tensor, Tensor, Tensor]:
    """``beta_t``, ``abar_t`` and ``btilde_t`` for ``t = 0..T``, recomputed from the betas."""
    betas = model.process.betas[1:]
    beta = torch.cat([betas.new_zeros(1), betas])
    abar = torch.cumprod(1 - beta, 0)
    btilde = beta.clone()
    btilde[1:] = beta[1:] * (1 - abar[:-1]) / (1 - abar[1:])
    return beta, abar, btilde


def _v_to_eps_x0(model: DDPM, x: Tensor, t: int, abar: Tensor) -> tuple[Tensor, Tensor]:
    """Salimans & Ho (2022): ``eps = sqrt(abar) v + sqrt(1-abar) x``,
    ``x0 = sqrt(abar) x - sqrt(1-abar) v``."""
    v = model.net(x, torch.full((x.shape[0],), t))
    a, s = abar[t].sqrt(), (1 - abar[t]).sqrt()
    return a * v + s * x, a * x - s * v


def test_ancestral_matches_ho_algorithm_2(trained: Trained) -> None:
    model, n = trained.model, 64
    beta, abar, _ = _schedule(model)
    g = _gen(3)
    with torch.no_grad():
        x = torch.randn(n, 2, generator=g, dtype=torch.float64)
        for t in range(model.steps, 0, -1):
            eps, _ = _v_to_eps_x0(model, x, t, abar)
            mean = (x - beta[t] / (1 - abar[t]).sqrt() * eps) / (1 - beta[t]).sqrt()
            if t > 1:  # variance="beta" (the default): sigma_t^2 = beta_t
                x = mean + beta[t].sqrt() * torch.randn(n, 2, generator=g, dtype=torch.float64)
    got = _ancestral(model, n, generator=_gen(3), denoise=True)
    torch.testing.assert_close(got, mean, rtol=REFERENCE_RTOL, atol=REFERENCE_ATOL)


@pytest.mark.parametrize(("steps", "eta"), [(50, 0.0), (7, 0.5), (100, 1.0)])
def test_ddim_matches_song_eq_12(trained: Trained, steps: int, eta: float) -> None:
    model, n = trained.model, 64
    _, abar, _ = _schedule(model)
    taus = [*ddim_timesteps(model.steps, steps), 0]
    g = _gen(4)
    with torch.no_grad():
        x = torch.randn(n, 2, generator=g, dtype=torch.float64)
        for t, s in itertools.pairwise(taus):
            eps, x0 = _v_to_eps_x0(model, x, t, abar)
            if s == 0:
                x = x0
                break
            sigma = eta * ((1 - abar[s]) / (1 - abar[t]) * (1 - abar[t] / abar[s])).sqrt()
            x = abar[s].sqrt() * x0 + (1 - abar[s] - sigma**2).sqrt() * eps
            if eta > 0:
                x = x + sigma * torch.randn(n, 2, generator=g, dtype=torch.float64)
    got = _ddim(model, n, steps, eta=eta, generator=_gen(4))
    torch.testing.assert_close(got, x, rtol=REFERENCE_RTOL, atol=REFERENCE_ATOL)


# ----------------------------------------------------------------------------- equality in law
@pytest.fixture(scope="module")
def perturbed() -> DDPM:
    return _perturbed()


def test_ddim_eta_one_over_all_steps_is_ancestral(perturbed: DDPM) -> None:
    """``eta = 1``, ``S = T``: ``sigma_t^2 = btilde_t`` and the DDIM mean is the posterior mean,
    so every step is the ancestral one; the last DDIM step returns ``x0_hat(x_1)`` where the
    ancestral sampler draws from the decoder ``N(x0_hat(x_1), btilde_2)``, so the exact match is
    with ``denoise=True`` (the decoder's mean)."""
    a = _ancestral(perturbed, NUM_DRAWS, generator=_gen(10), denoise=True)
    d = _ddim(perturbed, NUM_DRAWS, T_SMALL, eta=1.0, generator=_gen(11))
    # A non-trivial law: spread out, and not the N(0, I) a zero network would give.
    assert a.std(0).min() > 0.1
    assert _p_value(a, torch.randn(NUM_DRAWS, D, generator=_gen(15), dtype=a.dtype)) < ALPHA
    assert _p_value(d, a) > ALPHA
    # Power: two deterministic DDIM steps give another law, and the test sees it.
    coarse = _ddim(perturbed, NUM_DRAWS, 2, eta=0.0, generator=_gen(12))
    assert _p_value(coarse, a) < ALPHA


def test_fast_ancestral_is_the_chain_program_in_law(perturbed: DDPM) -> None:
    # The two draw their noises in different orders: compare laws, not values.
    fast = _ancestral(perturbed, NUM_DRAWS, generator=_gen(13))
    pyro.set_rng_seed(14)
    trace = poutine.trace(perturbed.chain_model).get_trace(None, n=NUM_DRAWS)
    program = trace.nodes["obs"]["value"]
    assert isinstance(program, Tensor)
    assert program.shape == fast.shape == (NUM_DRAWS, D)
    assert _p_value(fast, program) > ALPHA
    # Power: the same program's draws shifted by 0.2 sd in each coordinate are detected.
    assert _p_value(fast, program + 0.2 * program.std(0)) < ALPHA


# ----------------------------------------------------------------------------- sampler API
def test_shapes_and_chains(perturbed: DDPM) -> None:
    n = 5
    out, chain = ancestral(perturbed, n, generator=_gen(0), return_chain=True)
    assert out.shape == (n, D) and out.dtype == torch.float64
    assert len(chain) == T_SMALL and all(c.shape == (n, D) for c in chain)
    # chain[0] is x_T, the generator's first draw.
    torch.testing.assert_close(chain[0], torch.randn(n, D, generator=_gen(0), dtype=torch.float64))
    for steps in (1, 3, T_SMALL):
        out, chain = ddim(perturbed, n, steps, generator=_gen(0), return_chain=True)
        assert out.shape == (n, D) and len(chain) == steps
        assert all(c.shape == (n, D) for c in chain)
    assert perturbed.sample(n).shape == (n, D)


def test_generator_reproducibility(perturbed: DDPM) -> None:
    a1 = _ddim(perturbed, 8, 5, eta=0.7, generator=_gen(5))
    a2 = _ddim(perturbed, 8, 5, eta=0.7, generator=_gen(5))
    b = _ddim(perturbed, 8, 5, eta=0.7, generator=_gen(6))
    assert torch.equal(a1, a2) and not torch.equal(a1, b)
    d1 = _ancestral(perturbed, 8, generator=_gen(5), denoise=True)
    d2 = _ancestral(perturbed, 8, generator=_gen(5), denoise=True)
    assert torch.equal(d1, d2)
    # The decoder's final draw uses the global RNG (documented): seed it too.
    torch.manual_seed(0)
    s1 = _ancestral(perturbed, 8, generator=_gen(5))
    torch.manual_seed(0)
    s2 = _ancestral(perturbed, 8, generator=_gen(5))
    assert torch.equal(s1, s2)


@pytest.mark.parametrize("decoder", ["gaussian", "bernoulli", "discretized"])
def test_denoise_returns_the_decoder_mean(decoder: str) -> None:
    model = _perturbed(decoder, data_dim=3, steps=6)
    out, chain = ancestral(model, 16, generator=_gen(7), denoise=True, return_chain=True)
    with torch.no_grad():
        x0 = model.net(chain[-1], torch.ones(16, dtype=torch.long))  # x0-prediction at t = 1
    # p(x_0 | x_1) has mean x0_hat(x_1) in chain space; data space is (y + 1) / 2 for the
    # discrete decoders (Ho et al. Sec. 3.3, the probability of the upper bin's side for L = 2).
    expected = x0 if decoder == "gaussian" else ((x0 + 1) / 2).clamp(0, 1)
    torch.testing.assert_close(out, expected, rtol=REFERENCE_RTOL, atol=REFERENCE_ATOL)


@pytest.mark.parametrize(("decoder", "levels"), [("bernoulli", 2), ("discretized", 256)])
def test_discrete_decoders_sample_on_the_data_grid(decoder: str, levels: int) -> None:
    model = _perturbed(decoder, data_dim=3, steps=6)
    for x in (_ancestral(model, 500, generator=_gen(8)), _ddim(model, 500, 3, generator=_gen(9))):
        k = x * (levels - 1)
        assert ((x >= 0) & (x <= 1)).all()
        torch.testing.assert_close(k, k.round(), rtol=0, atol=1e-9)
        assert k.unique().numel() >= 2  # not a constant output: the grid check has teeth


def test_ddim_timesteps() -> None:
    """Song et al.'s "uniform" skip in 1-based time: ``S`` descending, unique steps, evenly
    spaced (strides ``floor`` or ``ceil`` of ``T / S``) from within one stride of ``T`` down to
    1; every step when ``S = T``."""
    for total in range(1, 41):
        assert ddim_timesteps(total, total) == list(range(total, 0, -1))
        for steps in range(1, total + 1):
            taus = ddim_timesteps(total, steps)
            assert len(taus) == steps and taus[-1] == 1
            assert all(a > b for a, b in itertools.pairwise(taus))  # unique, descending
            assert total - total / steps < taus[0] <= total
            gaps = {a - b for a, b in itertools.pairwise(taus)}
            assert gaps <= {total // steps, -(-total // steps)}


# ----------------------------------------------------------------------------- bad input
BAD_CONSTRUCTOR = [
    ({"steps": 0}, r"diffusion steps T must be an integer >= 1, got 0"),
    ({"steps": 1.5}, r"diffusion steps T must be an integer >= 1, got 1\.5"),
    ({"steps": True}, r"diffusion steps T must be an integer >= 1, got True"),
    ({"steps": 2, "schedule": [0.1, 1.0]}, r"strictly inside \(0, 1\); beta_2 = 1\.0"),
    ({"steps": 2, "schedule": [0.0, 0.5]}, r"strictly inside \(0, 1\); beta_1 = 0\.0"),
    ({"steps": 2, "schedule": [-0.1, 0.5]}, r"strictly inside \(0, 1\); beta_1 = -0\.1"),
    ({"steps": 2, "schedule": [float("nan"), 0.5]}, r"strictly inside \(0, 1\); beta_1 = nan"),
    ({"steps": 3, "schedule": [0.1, 0.2]}, r"schedule has 2 betas, but steps T = 3"),
    ({"steps": 4, "schedule": [[0.1, 0.2], [0.3, 0.4]]}, r"betas must be 1-D"),
    ({"schedule": "quadratic"}, r"unknown schedule 'quadratic'; allowed: linear, cosine"),
    ({"parameterization": "score"}, r"unknown parameterization 'score'; allowed: eps, x0, v"),
    ({"variance": "fixed"}, r"unknown variance 'fixed'; allowed: beta, beta_tilde, learned"),
    ({"decoder": "poisson"}, r"unknown decoder 'poisson'; allowed: bernoulli, discretized"),
    ({"estimator": "exact"}, r"unknown estimator 'exact'; allowed: sampled, chain"),
    ({"loss": "mse"}, r"unknown loss 'mse'; allowed: vlb, simple"),
    ({"network": "resnet"}, r"unknown network 'resnet'; allowed: mlp, unet"),
    ({"network": "unet"}, r"network='unet' needs image_shape"),
    ({"loss": "simple", "variance": "learned"}, r"loss='simple' trains the mean only"),
    ({"loss": "simple", "estimator": "chain"}, r"loss='simple' .* estimator='sampled'"),
    ({"decoder": "discretized", "levels": 1}, r"levels must be an integer >= 2, got 1"),
]


@pytest.mark.parametrize(("options", "match"), BAD_CONSTRUCTOR)
def test_bad_constructor_arguments(options: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        DDPM(2, **options)  # type: ignore[arg-type]


def test_bad_data_dim() -> None:
    with pytest.raises(ValueError, match=r"data_dim must be an integer >= 1, got 0"):
        DDPM(0, steps=5)


def _on_grid(g: torch.Generator) -> Tensor:
    return torch.randint(0, 256, (10, 2), generator=g).double() / 255


BAD_DATA = [
    ("gaussian", torch.randn(10, 3, dtype=torch.float64), r"data has 3 features per row"),
    ("gaussian", torch.randn(10, dtype=torch.float64), r"data must be 2-dimensional"),
    ("gaussian", torch.tensor([[0.0, float("nan")]] * 4), r"data contains 4 NaN/inf value"),
    ("bernoulli", torch.full((4, 2), 0.5), r"data must be binary \(0/1\) for decoder='bernoulli'"),
    ("discretized", _on_grid(_gen(0)) + 1e-2, r"data must hold levels k / 255"),
    ("discretized", _on_grid(_gen(0)) * 2, r"data must hold levels k / 255"),
]


@pytest.mark.parametrize(("decoder", "x", "match"), BAD_DATA)
def test_fit_rejects_bad_data(decoder: str, x: Tensor, match: str) -> None:
    model = DDPM(2, steps=5, decoder=decoder, hidden=(8,))
    with pytest.raises(ValueError, match=match):
        probgen.fit(model, x, steps=1, progress=False)


def test_bound_rejects_data_of_the_wrong_width(perturbed: DDPM) -> None:
    with pytest.raises(ValueError, match=r"x has 3 features per row"):
        perturbed.log_prob(torch.zeros(4, 3, dtype=torch.float64))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"steps": T_SMALL + 1}, r"DDIM steps must be an integer in \[1, T\] = \[1, 20\], got 21"),
        ({"steps": 0}, r"DDIM steps must be an integer in \[1, T\] = \[1, 20\], got 0"),
        ({"steps": 2.0}, r"DDIM steps must be an integer in \[1, T\]"),
        ({"steps": 5, "eta": -0.1}, r"eta must be a number in \[0, 1\], got -0\.1"),
        ({"steps": 5, "eta": 1.5}, r"eta must be a number in \[0, 1\], got 1\.5"),
    ],
)
def test_ddim_rejects_bad_arguments(perturbed: DDPM, kwargs: dict[str, float], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ddim(perturbed, 4, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("n", [0, -3, 2.5, True])
def test_samplers_reject_bad_n(perturbed: DDPM, n: object) -> None:
    match = r"n must be a positive number of samples, got"
    for sampler in (ancestral, ddim):
        with pytest.raises(ValueError, match=match):
            sampler(perturbed, n)  # type: ignore[operator, arg-type]
    with pytest.raises(ValueError, match=match):
        perturbed.sample(n)  # type: ignore[arg-type]


@pytest.mark.parametrize("t", [0, T_SMALL + 1, -1, 1.0])
def test_score_rejects_times_outside_1_to_T(perturbed: DDPM, t: float) -> None:
    with pytest.raises(ValueError, match=r"t must be integer timesteps in 1\.\.20"):
        perturbed.score(torch.zeros(3, D, dtype=torch.float64), torch.tensor(t))


class _OptimalEps(torch.nn.Module):
    """The Bayes-optimal noise prediction for data x_0 ~ N(0, s^2 I): with
    x_t = sqrt(abar) x_0 + sqrt(1 - abar) eps, E[eps | x_t] = sqrt(1 - abar) x_t / v_t,
    v_t = abar s^2 + 1 - abar (Gaussian conditioning)."""

    def __init__(self, abar: torch.Tensor, s: float) -> None:
        super().__init__()
        self.abar, self.s = abar, s

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        a = self.abar[t].to(x.dtype).unsqueeze(-1)
        return (1 - a).sqrt() * x / (a * self.s**2 + 1 - a)


def test_score_of_the_optimal_denoiser_is_the_true_score():
    """s_theta = -eps_theta / sqrt(1 - abar) is grad log q(x_t) when eps_theta is optimal:
    checked against autograd of the exact Gaussian marginal q(x_t) = N(0, v_t I)."""
    s, steps = 1.7, 50
    probe = DDPM(3, steps=steps)
    net = _OptimalEps(probe.process.abar, s)
    model = DDPM(3, steps=steps, network=net).double()
    x = torch.randn(6, 3, dtype=torch.float64, requires_grad=True)
    for step in (1, 10, 50):
        t = torch.full((6,), step)
        v = float(probe.process.abar[step]) * s**2 + 1 - float(probe.process.abar[step])
        scale = torch.tensor(v, dtype=torch.float64).sqrt()
        log_q = (
            torch.distributions.Normal(torch.zeros((), dtype=torch.float64), scale)
            .log_prob(x)
            .sum()
        )
        (true,) = torch.autograd.grad(log_q, x)
        torch.testing.assert_close(model.score(x.detach(), t), true, rtol=1e-10, atol=1e-12)
        # the same through the scalar-t form
        torch.testing.assert_close(model.score(x.detach(), step), true, rtol=1e-10, atol=1e-12)


def test_clip_x0_needs_data_in_minus_one_one():
    with pytest.raises(ValueError, match="clip_x0 needs data in"):
        DDPM(2, steps=5, decoder="gaussian", clip_x0=True)
    with pytest.raises(ValueError, match="clip_x0 must be True, False or None"):
        DDPM(2, steps=5, decoder="bernoulli", clip_x0=1)
    assert DDPM(2, steps=5, decoder="bernoulli").clip_x0
    assert not DDPM(2, steps=5).clip_x0


def test_image_shape_must_match_data_dim():
    with pytest.raises(
        ValueError, match=r"image_shape \(28, 28\) has 784 pixels, not data_dim=100"
    ):
        DDPM(100, steps=5, network="unet", image_shape=(28, 28))
