"""The VAE family (VAE, beta-VAE, CVAE, IAF guide, conv nets) against independent references.

References: the exact marginal ``N(b, W W^T + sigma^2 I)`` of a linear-Gaussian VAE (PPCA's model,
Tipping & Bishop 1999) computed with ``torch.distributions.MultivariateNormal``; likelihoods and
ELBO terms written out with ``torch.distributions`` from the decoder's raw outputs; log-Jacobians
of the IAF guide by autograd; class means of a toy CVAE data set; a factorised Bernoulli baseline
on binarized MNIST.
"""

from __future__ import annotations

import math
from pathlib import Path

import pyro
import pytest
import torch
from pyro import poutine
from torch import distributions as td

import probgen
from models.vae import LATENT, MIN_SCALE, OBS, VAE
from probgen import evaluate
from probgen.infer import objectives

#: Two float64 computations of one log-density sum in a different order: round-off only.
EXACT_RTOL = 1e-12
#: Log-densities through an IAF: the inverse is computed by q fixed-point passes and autograd
#: Jacobians; both exact up to float64 round-off on values of order 1-10.
FLOW_ATOL = 1e-9
#: Importance-sampling estimates vs the exact log-likelihood, in standard errors of the IS
#: estimate estimated from R independent replicates: P(|t_19| > 4) ~ 8e-4 per comparison.
Z_IS = 4.0
#: Monte Carlo replicates of each importance-sampling estimate.
REPLICATES = 20
#: CVAE: sampled pixel means vs the class means of the training data. Sampling error of 4000
#: draws is <= 0.008 (sd); measured max errors 0.012 and 0.010 after 100 Adam steps.
CVAE_MEAN_ATOL = 0.04

D, Q, N = 6, 2, 16
DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
BINARIZED_MNIST = DATA / "binarized_mnist" / "binarized_mnist.npz"


def _binary(n: int = N, d: int = D, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, d, generator=g, dtype=torch.float64) < 0.4).double()


def _decoder_input(z: torch.Tensor, y1h: torch.Tensor | None = None) -> torch.Tensor:
    return z if y1h is None else torch.cat([z, y1h.expand(*z.shape[:-1], -1)], -1)


# ----------------------------------------------------------------------------- linear Gaussian
SIGMA = 0.5
#: The guide's scales are this multiple of the true posterior's marginal sds: a proposal a bit
#: wider than the target keeps the importance weights' variance finite.
PROPOSAL_INFLATION = 1.3


@pytest.fixture(scope="module")
def linear_vae() -> tuple[VAE, torch.Tensor]:
    """``VAE(D, Q, hidden=())`` with decoder ``W, b`` set by hand and a mean-field guide.

    The guide's mean is the exact posterior mean ``M^-1 W^T (x - b)`` (``M = W^T W + sigma^2 I``)
    but its covariance is diagonal and inflated: the true posterior ``sigma^2 M^-1`` is
    correlated, so importance sampling has something to correct.
    """
    g = torch.Generator().manual_seed(3)
    w = torch.randn(D, Q, generator=g, dtype=torch.float64)
    b = torch.randn(D, generator=g, dtype=torch.float64)
    vae = VAE(D, Q, hidden=(), likelihood="gaussian", obs_scale=SIGMA).double()
    m = w.T @ w + SIGMA**2 * torch.eye(Q, dtype=torch.float64)
    a = torch.linalg.solve(m, w.T)
    post_sd = (SIGMA**2 * torch.linalg.inv(m)).diagonal().sqrt()
    with torch.no_grad():
        vae.decoder[0].weight.copy_(w)
        vae.decoder[0].bias.copy_(b)
        head = vae.encoder_head
        head.weight.zero_()
        head.weight[:Q] = a
        head.bias[:Q] = -a @ b
        # softplus(raw) + MIN_SCALE = s  <=>  raw = log(expm1(s - MIN_SCALE))
        head.bias[Q:] = torch.log(torch.expm1(PROPOSAL_INFLATION * post_sd - MIN_SCALE))
    z = torch.randn(40, Q, generator=g, dtype=torch.float64)
    x = z @ w.T + b + SIGMA * torch.randn(40, D, generator=g, dtype=torch.float64)
    return vae, x


def _exact_marginal(vae: VAE, x: torch.Tensor) -> torch.Tensor:
    """log N(x_n | b, W W^T + sigma^2 I) from the decoder's own weight and bias."""
    w, b = vae.decoder[0].weight.detach(), vae.decoder[0].bias.detach()
    cov = w @ w.T + SIGMA**2 * torch.eye(D, dtype=w.dtype)
    return td.MultivariateNormal(b, cov).log_prob(x)


def _replicates(vae: VAE, x: torch.Tensor, k: int) -> torch.Tensor:
    """``[R]`` independent IS estimates of the mean log-likelihood with ``k`` particles."""
    return torch.stack(
        [evaluate.log_likelihood(vae, x, num_particles=k).value for _ in range(REPLICATES)]
    )


def test_linear_gaussian_vae_importance_sampling_matches_the_exact_marginal(linear_vae):
    """Issue acceptance: IS log-likelihood with K = 1000 vs log N(x | b, W W^T + sigma^2 I).

    Measured: |IS - exact| ~ 2e-4 nats per datum with an IS standard error of ~6e-4.
    """
    vae, x = linear_vae
    exact = _exact_marginal(vae, x)
    pyro.set_rng_seed(0)
    estimate = evaluate.log_likelihood(vae, x, num_particles=1000)
    assert estimate.estimator == "importance-sampling" and estimate.num_samples == 1000
    # R independent replicates of every datum's estimate; the first is the one above.
    pyro.set_rng_seed(0)
    per_datum = torch.stack(
        [evaluate.log_likelihood_pointwise(vae, x, num_particles=1000) for _ in range(REPLICATES)]
    )
    assert per_datum[0].mean().item() == pytest.approx(estimate.value.item(), rel=EXACT_RTOL)
    values = per_datum.mean(1)
    se = values.std() / math.sqrt(REPLICATES)
    assert abs(values.mean() - exact.mean()) < Z_IS * se
    # Per datum, against the replicate-based standard error of that datum's estimate.
    se_n = per_datum.std(0) / math.sqrt(REPLICATES)
    assert ((per_datum.mean(0) - exact).abs() < Z_IS * se_n + 1e-12).all()


def test_iwae_bound_increases_with_k_towards_the_exact_value(linear_vae):
    """E[L_K] is non-decreasing in K and tends to log p(x) (Burda et al. 2016, Theorem 1).

    Measured gaps exact - E[L_K] (nats per datum): K=1: 0.25, 2: 0.12, 5: 0.03, 20: 0.003,
    100: ~0 (se 0.002).
    """
    vae, x = linear_vae
    exact = _exact_marginal(vae, x).mean()
    ks = (1, 2, 5, 20, 100)
    means, ses = [], []
    for k in ks:
        values = _replicates(vae, x, k)
        means.append(values.mean())
        ses.append(values.std() / math.sqrt(REPLICATES))
    for i in range(len(ks) - 1):
        assert means[i + 1] >= means[i] - Z_IS * math.hypot(ses[i], ses[i + 1])
    for m, se in zip(means, ses, strict=True):
        assert m <= exact + Z_IS * se  # a lower bound in expectation
    # The ELBO's gap is real, and K = 100 closes it to within its standard errors.
    assert exact - means[0] > Z_IS * ses[0]
    assert abs(exact - means[-1]) < Z_IS * ses[-1]


# ----------------------------------------------------------------------------- likelihoods
def _obs_log_prob(vae: VAE, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """log p(x_n | z_n) as the model's ``obs`` site scores it."""
    trace = poutine.trace(poutine.condition(vae.model, data={LATENT: z})).get_trace(x)
    site = trace.nodes[OBS]
    return site["fn"].log_prob(site["value"])


@pytest.mark.parametrize(
    ("likelihood", "obs_scale"),
    [("bernoulli", 1.0), ("continuous_bernoulli", 1.0), ("gaussian", 0.3), ("gaussian", "learned")],
)
def test_observation_log_density_matches_torch(likelihood, obs_scale):
    g = torch.Generator().manual_seed(1)
    vae = VAE(D, Q, hidden=(5,), likelihood=likelihood, obs_scale=obs_scale).double()
    if likelihood == "bernoulli":
        x = _binary()
    elif likelihood == "continuous_bernoulli":
        x = torch.rand(N, D, generator=g, dtype=torch.float64)
    else:
        x = torch.randn(N, D, generator=g, dtype=torch.float64)
        if obs_scale == "learned":
            with torch.no_grad():
                vae.obs_log_scale.copy_(torch.linspace(-1.0, 0.5, D, dtype=torch.float64))
    z = torch.randn(N, Q, generator=g, dtype=torch.float64)
    out = vae.decoder(z).detach()
    if likelihood == "bernoulli":
        ref = td.Bernoulli(logits=out)
    elif likelihood == "continuous_bernoulli":
        ref = td.ContinuousBernoulli(logits=out)
    else:
        sd = (
            vae.obs_log_scale.detach().exp()
            if obs_scale == "learned"
            else torch.tensor(0.3, dtype=torch.float64)
        )
        ref = td.Normal(out, sd.double().expand_as(out))
    expected = ref.log_prob(x).sum(-1)
    torch.testing.assert_close(_obs_log_prob(vae, x, z).detach(), expected, rtol=EXACT_RTOL, atol=0)
    torch.testing.assert_close(
        vae.likelihood(z).log_prob(x).detach(), expected, rtol=EXACT_RTOL, atol=0
    )
    torch.testing.assert_close(vae.decode(z), ref.mean, rtol=EXACT_RTOL, atol=0)


def test_learned_obs_scale_gets_the_analytic_elbo_gradient():
    """d(-ELBO)/d log s_d = sum_n [1 - (x_nd - mu_nd)^2 / s_d^2] for the same draws z_n."""
    g = torch.Generator().manual_seed(2)
    vae = VAE(D, Q, hidden=(5,), likelihood="gaussian", obs_scale="learned").double()
    x = torch.randn(N, D, generator=g, dtype=torch.float64)
    pyro.set_rng_seed(4)
    loss = objectives.ELBO().differentiable_loss(vae.model, vae.guide, x)
    (grad,) = torch.autograd.grad(loss, [vae.obs_log_scale])
    pyro.set_rng_seed(4)
    with torch.no_grad():
        z = vae.posterior(x).rsample()
        mu = vae.decoder(z)
        s = vae.obs_log_scale.exp()
    expected = (1.0 - (x - mu) ** 2 / s**2).sum(0)
    assert grad.abs().min() > 0
    torch.testing.assert_close(grad, expected, rtol=1e-10, atol=1e-10)


def test_data_outside_the_likelihoods_support_is_rejected():
    bern = VAE(D, Q, hidden=(4,))
    half = torch.full((N, D), 0.5, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"data must be binary \(0/1\) for likelihood='bernoulli'"):
        probgen.fit(bern, half, steps=1, progress=False)
    with pytest.raises(ValueError, match=r"x must be binary \(0/1\) for likelihood='bernoulli'"):
        bern.encode(half)
    for bad in (2.0, -1.0):
        with pytest.raises(ValueError, match=r"must lie in \[0, 1\] for likelihood='bernoulli'"):
            probgen.fit(bern, torch.full((N, D), bad), steps=1, progress=False)
    cb = VAE(D, Q, hidden=(4,), likelihood="continuous_bernoulli")
    with pytest.raises(
        ValueError, match=r"must lie in \[0, 1\] for likelihood='continuous_bernoulli'"
    ):
        probgen.fit(cb, torch.full((N, D), 1.5), steps=1, progress=False)
    cb.check_x(half)  # grey levels are the continuous Bernoulli's support
    VAE(D, Q, hidden=(4,), likelihood="gaussian").check_x(torch.full((N, D), -3.0))
    with pytest.raises(ValueError, match=f"has {D + 1} features per row; .* {D}"):
        probgen.fit(bern, _binary(d=D + 1), steps=1, progress=False)
    with pytest.raises(ValueError, match=r"x must be 2-dimensional"):
        bern.encode(_binary()[0])


# ----------------------------------------------------------------------------- beta-VAE
@pytest.mark.parametrize("k", [1, 3])
def test_beta_vae_objective_is_reconstruction_minus_beta_kl(k):
    """-loss = (1/K) sum_k sum_n [log p(x|z) - beta (log q(z|x) - log p(z))], same draws."""
    beta = 3.0
    vae = VAE(D, Q, hidden=(5,), beta=beta).double()
    x = _binary()
    pyro.set_rng_seed(5)
    loss = objectives.ELBO(num_particles=k).differentiable_loss(vae.model, vae.guide, x)
    pyro.set_rng_seed(5)
    with torch.no_grad():
        q = vae.posterior(x)
        z = q.rsample((k,))
        log_lik = td.Bernoulli(logits=vae.decoder(z)).log_prob(x).sum(-1)
        kl = q.log_prob(z) - td.Normal(0.0, 1.0).log_prob(z).sum(-1)
    expected = (log_lik - beta * kl).sum(-1).mean()
    assert -loss.item() == pytest.approx(expected.item(), rel=EXACT_RTOL)


# ----------------------------------------------------------------------------- CVAE
@pytest.fixture(scope="module")
def class_data() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Two classes of D=8 binary data whose pixel probabilities the class alone determines."""
    g = torch.Generator().manual_seed(5)
    means = torch.tensor([[0.9] * 4 + [0.1] * 4, [0.2, 0.8] * 4], dtype=torch.float64)
    y = torch.arange(400) % 2
    x = torch.bernoulli(means[y], generator=g)
    return x, y, means


def test_cvae_samples_reproduce_the_class_means(class_data):
    """Measured max |sample mean - class mean| 0.012 after 100 steps (tolerance 0.04)."""
    x, y, _ = class_data
    vae = VAE(8, 2, hidden=(16,), n_classes=2)
    fit = probgen.fit(vae, x, context={"y": y}, steps=100, lr=0.05, progress=False)
    assert math.isfinite(fit.final_objective)
    pyro.set_rng_seed(1)
    for c in (0, 1):
        target = x[y == c].mean(0)
        draws = vae.sample(4000, y=c)
        assert draws.shape == (4000, 8)
        torch.testing.assert_close(draws.mean(0), target, rtol=0, atol=CVAE_MEAN_ATOL)
    # The two classes are told apart: each class's means are far from the other's.
    assert (vae.sample(4000, y=0).mean(0) - x[y == 1].mean(0)).abs().max() > 0.5


def test_cvae_labels_are_checked(class_data):
    x, y, _ = class_data
    vae = VAE(8, 2, hidden=(4,), n_classes=2)
    with pytest.raises(ValueError, match=r"conditional \(n_classes=2\): pass labels y="):
        probgen.fit(vae, x, steps=1, progress=False)
    with pytest.raises(ValueError, match=r"y must be integer labels in \[0, 2\)"):
        probgen.fit(vae, x, context={"y": y + 1}, steps=1, progress=False)
    with pytest.raises(ValueError, match=r"y must be integer labels in \[0, 2\)"):
        vae.encode(x[:3], y=torch.tensor([0, -1, 1]))
    with pytest.raises(ValueError, match=r"y must be integer labels .* shape \[N\] or one-hot"):
        vae.encode(x[:3], y=torch.tensor([0.0, 1.0, 1.0]))  # float labels, not one-hot
    with pytest.raises(ValueError, match=r"y must have 3 rows \(one label per datum\)"):
        vae.encode(x[:3], y=torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"context\['y'\] must have one row per datum \(400\)"):
        probgen.fit(vae, x, context={"y": y[:10]}, steps=1, progress=False)
    with pytest.raises(ValueError, match=r"pass labels y="):
        vae.sample(5, params={})
    with pytest.raises(ValueError, match=r"unknown context \['w'\]"):
        probgen.fit(vae, x, context={"y": y, "w": y}, steps=1, progress=False)
    plain = VAE(8, 2, hidden=(4,))
    with pytest.raises(ValueError, match=r"y was given, but this VAE is unconditional"):
        probgen.fit(plain, x, context={"y": y}, steps=1, progress=False)
    with pytest.raises(ValueError, match=r"y was given, but this VAE is unconditional"):
        plain.sample(3, params={}, y=0)


def test_cvae_accepts_one_hot_float_labels(class_data):
    x, y, _ = class_data
    one_hot = torch.nn.functional.one_hot(y, 2).double()
    vae = VAE(8, 2, hidden=(4,), n_classes=2)
    fit = probgen.fit(vae, x, context={"y": one_hot}, steps=3, progress=False)
    assert len(fit.history) == 3 and all(map(math.isfinite, fit.history))
    torch.testing.assert_close(vae.encode(x[:5], y=y[:5]), vae.encode(x[:5], y=one_hot[:5]))
    # The decoder sees [z, onehot(y)]: its input is built from the labels either way.
    z = torch.zeros(5, 2, dtype=torch.float64)
    expected = torch.sigmoid(vae.decoder(_decoder_input(z, one_hot[:5]))).detach()
    torch.testing.assert_close(vae.decode(z, y=y[:5]), expected, rtol=EXACT_RTOL, atol=0)


# ----------------------------------------------------------------------------- IAF guide
@pytest.fixture
def iaf_vae() -> VAE:
    return VAE(D, 3, hidden=(5,), flow="iaf", flow_layers=2).double()


def test_iaf_guide_log_density_is_base_minus_log_jacobian(iaf_vae):
    """log q(z) = log N(u | mu, sigma^2) - log|det dz/du| with the Jacobian by autograd."""
    x = _binary(n=4)
    loc, scale, _ = iaf_vae._encode(x, None)
    base = td.Normal(loc.detach(), scale.detach())
    post = iaf_vae.posterior(x)
    transforms = post.transforms

    def flow(u_flat: torch.Tensor) -> torch.Tensor:
        u = u_flat.reshape(4, 3)
        for t in transforms:
            u = t(u)
        return u.reshape(-1)

    pyro.set_rng_seed(9)
    u = base.rsample()
    pyro.set_rng_seed(9)
    z = post.rsample()
    torch.testing.assert_close(z.detach(), flow(u.reshape(-1)).reshape(4, 3).detach())
    jac = torch.autograd.functional.jacobian(flow, u.reshape(-1))
    blocks = jac.reshape(4, 3, 4, 3)
    log_det = torch.stack([torch.linalg.slogdet(blocks[n, :, n, :])[1] for n in range(4)])
    # The flow acts on each datum alone: the off-diagonal blocks vanish.
    off = blocks.clone()
    for n in range(4):
        off[n, :, n, :] = 0.0
    assert off.abs().max() == 0.0
    expected = base.log_prob(u).sum(-1) - log_det
    # Its own draws (cached inverse) and a fresh posterior on a copy (iterative inverse).
    torch.testing.assert_close(post.log_prob(z).detach(), expected, rtol=0, atol=FLOW_ATOL)
    fresh = iaf_vae.posterior(x).log_prob(z.detach().clone())
    torch.testing.assert_close(fresh.detach(), expected, rtol=0, atol=FLOW_ATOL)


def test_iwae_training_with_an_iaf_guide(iaf_vae):
    """K particles pass through the flow; the IWAE bound is the hand log-mean-exp of them."""
    k = 4
    x = _binary()
    pyro.set_rng_seed(3)
    bound = -objectives.IWAE(num_particles=k).differentiable_loss(iaf_vae.model, iaf_vae.guide, x)
    pyro.set_rng_seed(3)
    with torch.no_grad():
        q = iaf_vae.posterior(x)
        z = q.rsample((k,))
        assert z.shape == (k, N, 3)
        log_q = q.log_prob(z)
        assert log_q.shape == (k, N)
        log_w = (
            td.Normal(0.0, 1.0).log_prob(z).sum(-1)
            + td.Bernoulli(logits=iaf_vae.decoder(z)).log_prob(x).sum(-1)
            - log_q
        )
    assert bound.item() == pytest.approx((log_w.logsumexp(0) - math.log(k)).sum().item(), rel=1e-10)
    fit = probgen.fit(
        iaf_vae, x, objective="iwae", num_particles=k, steps=5, batch_size=8, progress=False
    )
    assert fit.diagnostics["objective_name"] == "iwae"
    assert len(fit.history) == 5 and all(map(math.isfinite, fit.history))
    assert evaluate.log_likelihood_pointwise(iaf_vae, x, num_particles=k).shape == (N,)


# ----------------------------------------------------------------------------- conv nets
def test_conv_vae_on_28x28_images():
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(16, 784, generator=g) < 0.3).float()
    vae = VAE(784, 4, hidden=(16,), network="conv", image_shape=(28, 28))
    fit = probgen.fit(vae, x, steps=2, batch_size=8, progress=False)
    assert len(fit.history) == 2 and all(map(math.isfinite, fit.history))
    assert vae.encode(x).shape == (16, 4)
    decoded = vae.decode(torch.zeros(3, 4))
    assert decoded.shape == (3, 784) and ((decoded > 0) & (decoded < 1)).all()
    draws = vae.sample(5)
    assert draws.shape == (5, 784) and ((draws == 0) | (draws == 1)).all()


# ----------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"latent_dim": 0}, r"latent_dim must be an integer >= 1, got 0"),
        ({"data_dim": 0}, r"data_dim must be an integer >= 1, got 0"),
        ({"data_dim": 2.5}, r"data_dim must be an integer >= 1, got 2.5"),
        ({"hidden": (8, 0)}, r"hidden widths must be an integer >= 1, got 0"),
        ({"likelihood": "poisson"}, r"unknown likelihood 'poisson'; allowed: bernoulli, "),
        ({"network": "rnn"}, r"unknown network 'rnn'; allowed: mlp, conv"),
        ({"flow": "maf"}, r"unknown flow 'maf'; allowed: iaf"),
        ({"flow": "iaf", "flow_layers": 0}, r"flow_layers must be an integer >= 1"),
        ({"network": "conv"}, r"network='conv' needs image_shape"),
        ({"network": "conv", "hidden": ()}, r"network='conv' needs hidden=\(width,\)"),
        ({"image_shape": (27, 28)}, r"image_shape \(27, 28\) has 756 pixels, not data_dim=784"),
        ({"beta": 0.0}, r"beta must be a positive number, got 0.0"),
        ({"beta": -1}, r"beta must be a positive number"),
        ({"beta": True}, r"beta must be a positive number"),
        ({"n_classes": 1}, r"n_classes must be an integer >= 2, got 1"),
        ({"activation": "swish"}, r"unknown activation 'swish'"),
        (
            {"likelihood": "gaussian", "obs_scale": 0.0},
            r"obs_scale must be a positive float or 'learned', got 0.0",
        ),
        ({"likelihood": "gaussian", "obs_scale": "fixed"}, r"obs_scale must be a positive float"),
        ({"likelihood": "gaussian", "obs_scale": -1.0}, r"obs_scale must be a positive float"),
    ],
)
def test_bad_constructor_arguments(kwargs, message):
    args = {"data_dim": 784, "latent_dim": 2, "hidden": (8,), **kwargs}
    with pytest.raises(ValueError, match=message):
        VAE(**args)


def test_bad_training_and_sampling_arguments():
    vae = VAE(D, Q, hidden=(4,))
    x = _binary()
    for k in (0, -3):
        with pytest.raises(ValueError, match=f"num_particles must be >= 1, got {k}"):
            probgen.fit(vae, x, objective="iwae", num_particles=k, steps=1, progress=False)
    for n in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match=r"n must be a positive number of samples"):
            vae.sample(n)
    with pytest.raises(ValueError, match=r"z must be a tensor \[\.\.\., 2\], got \(3, 5\)"):
        vae.likelihood(torch.zeros(3, 5))
    with pytest.raises(ValueError, match=r"the guide encodes data"):
        vae.guide(None)
    with pytest.raises(ValueError, match=r"num_particles must be"):
        evaluate.log_likelihood(vae, x, num_particles=0)


# ----------------------------------------------------------------------------- quality
#: Paired per-image differences VAE - baseline, in standard errors (one-sided).
Z_QUALITY = 4.0


@pytest.mark.skipif(
    not BINARIZED_MNIST.exists(), reason=f"binarized MNIST not at {BINARIZED_MNIST}"
)
def test_vae_beats_a_factorised_bernoulli_on_binarized_mnist():
    """1000 training images, 5 epochs: IS log-likelihood on 500 test images vs per-pixel ML.

    The baseline is the factorised Bernoulli with Laplace-smoothed pixel means
    ``p_d = (sum_n x_nd + 1) / (N + 2)``. Measured: VAE ~ -181 nats, baseline ~ -246 nats.
    """
    train = probgen.data.load_binarized_mnist(BINARIZED_MNIST, "train")[:1000]
    test = probgen.data.load_binarized_mnist(BINARIZED_MNIST, "test")[:500]
    p = (train.sum(0) + 1.0) / (train.shape[0] + 2.0)
    baseline = td.Bernoulli(probs=p).log_prob(test).sum(-1)
    vae = VAE(784, 10, hidden=(200,))
    probgen.fit(vae, train, epochs=5, batch_size=50, lr=3e-3, progress=False)
    pyro.set_rng_seed(0)
    ll = evaluate.log_likelihood_pointwise(vae, test, num_particles=50)
    diff = ll - baseline
    se = diff.std() / math.sqrt(diff.numel())
    assert diff.mean() > Z_QUALITY * se
