"""probgen.latent: latent-space tools over the LatentModel protocol (PPCA and a test double).

References: Tipping & Bishop's posterior ``N(M^-1 W^T (x - mu), sigma^2 M^-1)`` written out in
NumPy, the Gaussian KL ``0.5 (m^2 + s^2 - 1 - log s^2)`` by hand, the exact PPCA log-likelihood
(``log p(x) = ELBO`` when ``q`` is the exact posterior), the eigenvalues of the sample covariance
(``Var_x E[z_i | x] = 1 - sigma^2 / lambda_i`` for closed-form PPCA) and scikit-learn's PCA.
"""

import math

import numpy as np
import pytest
import torch
from pyro import poutine
from sklearn.decomposition import PCA
from torch.distributions import (
    AffineTransform,
    Independent,
    Normal,
    TransformedDistribution,
)

from models.ppca import LATENT, LOADINGS, LOC, NOISE, PPCA
from probgen import latent
from probgen.latent import LatentModel

N, D, Q = 400, 6, 3
#: Two float64 computations of one closed form (different factorisations): round-off on values
#: of O(10) nats.
EXACT_ATOL = 1e-10
#: Monte Carlo estimates vs their exact value, in standard errors: P(|Z| > 6) ~ 2e-9.
Z_MAX = 6.0
#: Code variances of a surplus PPCA component whose sample eigenvalue equals sigma^2 exactly:
#: only eigen-solver round-off (~1e-15) survives in (lambda_q - sigma^2) / lambda_q.
SURPLUS_VAR_ATOL = 1e-12


@pytest.fixture(scope="module")
def x() -> torch.Tensor:
    """``[N, D]`` float64 draws from a rank-2 factor model with noise (distinct eigenvalues)."""
    g = torch.Generator().manual_seed(3)
    w = 2.0 * torch.randn(D, 2, generator=g, dtype=torch.float64)
    z = torch.randn(N, 2, generator=g, dtype=torch.float64)
    noise = 0.3 * torch.randn(N, D, generator=g, dtype=torch.float64)
    return z @ w.T + noise + 1.0


@pytest.fixture(scope="module")
def ppca(x) -> PPCA:
    model = PPCA(Q)
    model.fit_closed_form(x)
    return model


class DiagonalDouble:
    """A hand-written LatentModel: ``q(z | x) = N(x A + b + shift, softplus(x C + c)^2)``,
    ``p(z) = N(0, I)``, ``p(x | z) = N(z B^T + e + shift, 0.5^2 I)``. ``shift`` is a context
    input, to check that context reaches the model."""

    latent_site = "z"
    latent_dim = 2

    def __init__(self, dead_unit: bool = False) -> None:
        g = torch.Generator().manual_seed(7)
        q, f64 = self.latent_dim, torch.float64
        self.enc_w = 0.5 * torch.randn(D, q, generator=g, dtype=f64)
        if dead_unit:
            self.enc_w[:, -1] = 0.0
        self.enc_b = 0.3 * torch.randn(q, generator=g, dtype=f64)
        self.scale_w = 0.1 * torch.randn(D, q, generator=g, dtype=f64)
        self.scale_b = 0.3 * torch.randn(q, generator=g, dtype=f64) - 1.0
        self.dec_w = torch.randn(D, q, generator=g, dtype=f64)
        self.dec_b = torch.randn(D, generator=g, dtype=f64)
        self.noise = 0.5

    def loc_scale(self, x, shift=0.0):
        scale = torch.nn.functional.softplus(x @ self.scale_w + self.scale_b)
        return x @ self.enc_w + self.enc_b + shift, scale

    def encode(self, x, shift=0.0):
        return self.loc_scale(x, shift)[0]

    def posterior(self, x, shift=0.0):
        return Independent(Normal(*self.loc_scale(x, shift)), 1)

    def latent_prior(self):
        zeros = self.enc_b.new_zeros(self.latent_dim)
        return Independent(Normal(zeros, torch.ones_like(zeros)), 1)

    def likelihood(self, z, shift=0.0):
        loc = z @ self.dec_w.T + self.dec_b + shift
        return Independent(Normal(loc, torch.full_like(loc, self.noise)), 1)

    def sample(self, n):
        z = torch.randn(n, self.latent_dim, dtype=torch.float64)
        return self.likelihood(z).sample()


class FlowDouble(DiagonalDouble):
    """The same posterior written as an affine flow: no analytic KL, no ``.mean``."""

    def posterior(self, x, shift=0.0):
        loc, scale = self.loc_scale(x, shift)
        base = Independent(Normal(torch.zeros_like(loc), torch.ones_like(loc)), 1)
        return TransformedDistribution(base, [AffineTransform(loc, scale, event_dim=1)])


def gaussian_kl_to_standard(m: np.ndarray, s2: np.ndarray) -> np.ndarray:
    """``KL(N(m, s^2) || N(0, 1)) = 0.5 (m^2 + s^2 - 1 - log s^2)`` elementwise."""
    return 0.5 * (m**2 + s2 - 1.0 - np.log(s2))


def tipping_bishop_posterior(model: PPCA, x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """``E[z | x] = M^-1 W^T (x - mu)``, ``Cov = sigma^2 M^-1``, ``M = W^T W + sigma^2 I``."""
    p = model.params_
    w, mu, s2 = p[LOADINGS].numpy(), p[LOC].numpy(), float(p[NOISE])
    m = w.T @ w + s2 * np.eye(w.shape[1])
    return np.linalg.solve(m, w.T @ (x.numpy() - mu).T).T, s2 * np.linalg.inv(m)


# ---------------------------------------------------------------------- the protocol
def test_ppca_implements_protocol(ppca, x):
    assert isinstance(ppca, LatentModel) and isinstance(DiagonalDouble(), LatentModel)
    assert ppca.latent_site == LATENT == "z" and ppca.latent_dim == Q
    trace = poutine.trace(ppca.model).get_trace(None, n=4)
    assert trace.nodes[ppca.latent_site]["value"].shape == (4, Q)
    prior = ppca.latent_prior()
    assert prior.event_shape == (Q,) and prior.batch_shape == ()
    assert prior.mean.dtype == torch.float64
    torch.testing.assert_close(prior.mean, torch.zeros(Q, dtype=torch.float64))
    torch.testing.assert_close(prior.stddev, torch.ones(Q, dtype=torch.float64))


def test_ppca_likelihood_by_hand(ppca):
    p = ppca.params_
    z = torch.randn(5, Q, dtype=torch.float64)
    xs = torch.randn(5, D, dtype=torch.float64)
    lik = ppca.likelihood(z)
    assert lik.batch_shape == (5,) and lik.event_shape == (D,)
    mean = z @ p[LOADINGS].T + p[LOC]
    torch.testing.assert_close(lik.mean, mean, rtol=0, atol=EXACT_ATOL)
    s2 = float(p[NOISE])
    by_hand = -0.5 * (((xs - mean) ** 2).sum(-1) / s2 + D * math.log(2 * math.pi * s2))
    torch.testing.assert_close(lik.log_prob(xs), by_hand, rtol=0, atol=EXACT_ATOL)
    with pytest.raises(ValueError, match="z"):
        ppca.likelihood(torch.zeros(5, Q + 1, dtype=torch.float64))


# ---------------------------------------------------------------------- codes
def test_encode_decode(ppca, x):
    mean, _ = tipping_bishop_posterior(ppca, x)
    codes = latent.encode(ppca, x)
    np.testing.assert_allclose(codes.numpy(), mean, rtol=0, atol=EXACT_ATOL)
    torch.testing.assert_close(latent.decode(ppca, codes), ppca.likelihood(codes).mean)


def test_context_reaches_the_model(x):
    double = DiagonalDouble()
    torch.testing.assert_close(latent.encode(double, x, shift=1.0), double.encode(x) + 1.0)
    z = double.encode(x)
    torch.testing.assert_close(latent.decode(double, z, shift=2.0), double.likelihood(z).mean + 2)
    base = latent.kl_per_dimension(double, x)
    shifted = latent.kl_per_dimension(double, x, shift=0.5)
    assert (shifted - base).abs().min() > 0.1


def test_encode_decode_errors(ppca, x):
    with pytest.raises(TypeError, match=r"LatentModel.*lacks latent_site"):
        latent.encode(object(), x)
    with pytest.raises(ValueError, match="x must be 2-dimensional"):
        latent.encode(ppca, x[0])
    with pytest.raises(ValueError, match=r"z must have shape \[N, q\] with q=3"):
        latent.decode(ppca, torch.zeros(4, 2, dtype=torch.float64))
    with pytest.raises(TypeError, match=r"z must be a torch\.Tensor"):
        latent.decode(ppca, [[0.0, 0.0, 0.0]])
    with pytest.raises(TypeError, match="z must be a floating tensor"):
        latent.decode(ppca, torch.zeros(4, Q, dtype=torch.long))


def test_linear_interpolation():
    z0, z1 = torch.tensor([1.0, -2.0, 0.5]), torch.tensor([3.0, 0.0, -1.5])
    path = latent.interpolate(z0, z1, 5)
    assert path.shape == (5, 3)
    torch.testing.assert_close(path[0], z0)
    torch.testing.assert_close(path[-1], z1)
    torch.testing.assert_close(path[2], (z0 + z1) / 2)
    torch.testing.assert_close(path.diff(dim=0), ((z1 - z0) / 4).expand(4, 3))


def test_slerp_keeps_norm_and_even_angles():
    g = torch.Generator().manual_seed(0)
    z0, z1 = torch.randn(2, 8, generator=g, dtype=torch.float64)
    z1 = z1 * z0.norm() / z1.norm()
    path = latent.interpolate(z0, z1, 7, method="slerp")
    torch.testing.assert_close(path[0], z0, rtol=0, atol=EXACT_ATOL)
    torch.testing.assert_close(path[-1], z1, rtol=0, atol=EXACT_ATOL)
    torch.testing.assert_close(path.norm(dim=1), z0.norm().expand(7), rtol=0, atol=EXACT_ATOL)
    unit = path / path.norm(dim=1, keepdim=True)
    steps = torch.arccos((unit[1:] * unit[:-1]).sum(-1))
    total = torch.arccos(unit[0] @ unit[-1])
    torch.testing.assert_close(steps, (total / 6).expand(6), rtol=0, atol=1e-7)
    # The path stays in the plane of z0 and z1: residual of a least-squares fit is zero.
    basis = torch.stack([z0, z1], 1)
    coef = torch.linalg.lstsq(basis, path.T).solution
    torch.testing.assert_close(basis @ coef, path.T, rtol=0, atol=EXACT_ATOL)


@pytest.mark.parametrize("factor", [2.0, -1.0, 0.0])
def test_slerp_falls_back_to_linear_for_parallel_codes(factor):
    z0 = torch.tensor([1.0, 2.0, -1.0], dtype=torch.float64)
    z1 = factor * z0
    slerp = latent.interpolate(z0, z1, 4, method="slerp")
    torch.testing.assert_close(slerp, latent.interpolate(z0, z1, 4))
    assert torch.isfinite(slerp).all()


def test_interpolate_errors():
    z = torch.zeros(3)
    with pytest.raises(ValueError, match="steps must be an integer >= 2"):
        latent.interpolate(z, z, 1)
    with pytest.raises(ValueError, match="method must be one of linear, slerp; got 'cubic'"):
        latent.interpolate(z, z, 3, method="cubic")
    with pytest.raises(ValueError, match="one shape"):
        latent.interpolate(z, torch.zeros(4), 3)
    with pytest.raises(ValueError, match="one shape"):
        latent.interpolate(torch.zeros(1, 3), torch.zeros(1, 3), 3)
    with pytest.raises(TypeError, match="z1 must be a floating"):
        latent.interpolate(z, torch.zeros(3, dtype=torch.long), 3)


def test_traverse(ppca, x):
    z = latent.encode(ppca, x[:1])[0]
    values = [-2.0, 0.0, 1.5]
    means = latent.traverse(ppca, z, 1, values)
    codes = z.expand(3, Q).clone()
    codes[:, 1] = torch.tensor(values, dtype=torch.float64)
    torch.testing.assert_close(means, ppca.likelihood(codes).mean, rtol=0, atol=EXACT_ATOL)
    # A linear decoder moves along column 1 of W only: rows differ by (v_i - v_0) W[:, 1].
    w1 = ppca.params_[LOADINGS][:, 1]
    steps = (torch.tensor(values, dtype=torch.float64) - values[0])[:, None] * w1
    torch.testing.assert_close(means - means[0], steps, rtol=0, atol=EXACT_ATOL)


def test_traverse_errors(ppca):
    z = torch.zeros(Q, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"dim must be in 0..2 \(latent_dim=3\), got 3"):
        latent.traverse(ppca, z, 3, [0.0])
    with pytest.raises(ValueError, match="dim must be in"):
        latent.traverse(ppca, z, -1, [0.0])
    with pytest.raises(TypeError, match="dim must be an integer"):
        latent.traverse(ppca, z, 1.0, [0.0])
    with pytest.raises(ValueError, match=r"z must have shape \[q\]"):
        latent.traverse(ppca, z[None], 0, [0.0])
    with pytest.raises(ValueError, match="values must be 1-dimensional"):
        latent.traverse(ppca, z, 0, [[0.0]])


# ---------------------------------------------------------------------- active units and KL
def test_active_units_surplus_ppca_component():
    """Rank-2 signal, exactly isotropic sample noise: eigenvalues (9, 4, 1, 1, 1). PPCA with
    q=3 has sigma^2 = 1, the third loading column is zero, and Var E[z_i | x] = 1 - 1/lambda_i."""
    n, d = 200, 5
    g = torch.Generator().manual_seed(5)
    raw = torch.randn(n, d, generator=g, dtype=torch.float64)
    basis = torch.linalg.qr(raw - raw.mean(0)).Q  # orthonormal, centred columns
    rotation = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64)).Q
    scales = torch.tensor([3.0, 2.0, 1.0, 1.0, 1.0], dtype=torch.float64)
    data = math.sqrt(n) * basis * scales @ rotation.T + 2.0
    model = PPCA(3)
    model.fit_closed_form(data)
    units = latent.active_units(model, data)
    assert units.count == 2 and units.threshold == 0.01
    assert units.active.tolist() == [True, True, False]
    expected = torch.tensor([8 / 9, 3 / 4, 0.0], dtype=torch.float64)
    torch.testing.assert_close(units.variance, expected, rtol=0, atol=SURPLUS_VAR_ATOL)


def test_active_units_match_eigenvalues(ppca, x):
    xc = x.numpy() - x.numpy().mean(0)
    lam = np.sort(np.linalg.eigvalsh(xc.T @ xc / N))[::-1]
    sigma2 = lam[Q:].mean()
    units = latent.active_units(ppca, x, threshold=0.5)
    np.testing.assert_allclose(units.variance.numpy(), 1 - sigma2 / lam[:Q], atol=EXACT_ATOL)
    assert units.count == int((1 - sigma2 / lam[:Q] > 0.5).sum())


def test_active_units_dead_unit_and_errors(x):
    units = latent.active_units(DiagonalDouble(dead_unit=True), x)
    assert units.count == 1 and units.variance[1] == 0
    with pytest.raises(ValueError, match="threshold must be finite and >= 0"):
        latent.active_units(DiagonalDouble(), x, threshold=-0.1)
    with pytest.raises(TypeError, match="threshold must be a real number"):
        latent.active_units(DiagonalDouble(), x, threshold=True)
    with pytest.raises(ValueError, match="at least 2 rows"):
        latent.active_units(DiagonalDouble(), x[:1])


def test_kl_per_dimension_diagonal(x):
    double = DiagonalDouble()
    loc, scale = double.loc_scale(x)
    by_hand = gaussian_kl_to_standard(loc.numpy(), scale.numpy() ** 2).mean(0)
    kl = latent.kl_per_dimension(double, x)
    assert kl.shape == (2,)
    np.testing.assert_allclose(kl.numpy(), by_hand, rtol=0, atol=EXACT_ATOL)


def test_kl_per_dimension_ppca_uses_marginals(ppca, x):
    mean, cov = tipping_bishop_posterior(ppca, x)
    by_hand = gaussian_kl_to_standard(mean, np.diag(cov)).mean(0)
    kl = latent.kl_per_dimension(ppca, x)
    np.testing.assert_allclose(kl.numpy(), by_hand, rtol=0, atol=EXACT_ATOL)


def test_kl_per_dimension_rejects_flows(x):
    with pytest.raises(TypeError, match="posterior\\(\\) is TransformedDistribution"):
        latent.kl_per_dimension(FlowDouble(), x)


# ---------------------------------------------------------------------- ELBO split
def test_elbo_split_ppca_equals_log_likelihood(ppca, x):
    log_lik = ppca.log_likelihood(x).mean()
    split = latent.elbo_split(ppca, x, num_samples=200, seed=0)
    assert split.kl.estimator == "analytic" and split.reconstruction.estimator == "monte-carlo"
    assert abs(float(split.elbo.value - log_lik)) < Z_MAX * float(split.elbo.stderr)
    mean, cov = tipping_bishop_posterior(ppca, x)
    joint_kl = 0.5 * (np.trace(cov) + (mean**2).sum(-1) - Q - np.linalg.slogdet(cov)[1]).mean()
    np.testing.assert_allclose(float(split.kl.value), joint_kl, rtol=0, atol=EXACT_ATOL)
    # Closed-form PPCA has a diagonal posterior covariance (W's columns are orthogonal), so here
    # the marginal KLs do add up to the joint KL.
    np.testing.assert_allclose(float(split.kl_per_dim.sum()), joint_kl, atol=EXACT_ATOL)
    torch.testing.assert_close(split.elbo.value, split.reconstruction.value - split.kl.value)


def test_elbo_split_exact_posterior_has_zero_variance(ppca, x):
    """With q = p(z | x), every draw's log p(x | z) + log p(z) - log q(z | x) is log p(x)."""
    split = latent.elbo_split(ppca, x, num_samples=3, seed=1, analytic_kl=False)
    assert split.kl.estimator == "monte-carlo"
    log_lik = ppca.log_likelihood(x).mean()
    torch.testing.assert_close(split.elbo.value, log_lik, rtol=0, atol=EXACT_ATOL)
    assert float(split.elbo.stderr) < EXACT_ATOL


def test_elbo_split_diagonal_reconstruction_closed_form(x):
    """E_q[log N(x | z B^T + e, s^2 I)] = -0.5 sum_d [log 2 pi s^2 + ((x - m B^T - e)_d^2
    + (B diag(v) B^T)_dd) / s^2] for q = N(m, diag(v))."""
    double = DiagonalDouble()
    loc, scale = double.loc_scale(x)
    resid = x - loc @ double.dec_w.T - double.dec_b
    spread = scale.square() @ double.dec_w.square().T
    s2 = double.noise**2
    recon = (-0.5 * (math.log(2 * math.pi * s2) + (resid.square() + spread) / s2).sum(-1)).mean()
    split = latent.elbo_split(double, x, num_samples=100, seed=2)
    assert abs(float(split.reconstruction.value - recon)) < Z_MAX * float(
        split.reconstruction.stderr
    )
    kl = gaussian_kl_to_standard(loc.numpy(), scale.numpy() ** 2)
    np.testing.assert_allclose(float(split.kl.value), kl.sum(-1).mean(), atol=EXACT_ATOL)
    np.testing.assert_allclose(split.kl_per_dim.numpy(), kl.mean(0), atol=EXACT_ATOL)


def test_elbo_split_monte_carlo_kl_for_flows(x):
    exact = latent.elbo_split(DiagonalDouble(), x, num_samples=2, seed=0).kl.value
    split = latent.elbo_split(FlowDouble(), x, num_samples=200, seed=3)
    assert split.kl.estimator == "monte-carlo" and split.kl_per_dim is None
    assert split.kl.num_samples == 200
    assert abs(float(split.kl.value - exact)) < Z_MAX * float(split.kl.stderr)


def test_elbo_split_seed_is_reproducible_and_local(ppca, x):
    state = torch.get_rng_state()
    a = latent.elbo_split(ppca, x, num_samples=4, seed=11)
    b = latent.elbo_split(ppca, x, num_samples=4, seed=11)
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(a.reconstruction.value, b.reconstruction.value)
    with pytest.raises(ValueError, match="num_samples must be an integer >= 2"):
        latent.elbo_split(ppca, x, num_samples=1)
    with pytest.raises(ValueError, match="seed must be an integer >= 0"):
        latent.elbo_split(ppca, x, seed=-1)


# ---------------------------------------------------------------------- figures
def _pixels(ax) -> np.ndarray:
    (image,) = ax.get_images()
    return np.asarray(image.get_array())


def test_interpolation_figure(ppca, x):
    fig = latent.interpolation_figure(ppca, x[0], x[1], 5, (2, 3), method="slerp")
    assert len(fig.axes) == 5
    z = latent.encode(ppca, x[:2])
    expected = latent.decode(ppca, latent.interpolate(z[0], z[1], 5, "slerp"))
    for ax, row in zip(fig.axes, expected, strict=True):
        np.testing.assert_allclose(_pixels(ax), row.reshape(2, 3).numpy())


def test_traversal_figure(ppca, x):
    z = latent.encode(ppca, x[:1])[0]
    fig = latent.traversal_figure(ppca, z, [0, 2], [-1.0, 0.0, 1.0, 2.0], (3, 2))
    assert len(fig.axes) == 8 and all(len(ax.get_images()) == 1 for ax in fig.axes)
    expected = latent.traverse(ppca, z, 2, [-1.0, 0.0, 1.0, 2.0])
    np.testing.assert_allclose(_pixels(fig.axes[5]), expected[1].reshape(3, 2).numpy())
    with pytest.raises(TypeError, match="dims must be a non-empty sequence"):
        latent.traversal_figure(ppca, z, 0, [0.0], (3, 2))


def test_latent_scatter_projects_on_principal_axes(ppca, x):
    fig = latent.latent_scatter(ppca, x, labels=torch.arange(N) % 3)
    (ax,) = fig.axes
    assert ax.get_xlabel().startswith("PC 1 of codes") and ax.get_ylabel().startswith("PC 2")
    assert len(ax.get_legend().get_texts()) == 3
    points = np.concatenate([c.get_offsets() for c in ax.collections])
    order = np.concatenate([np.flatnonzero(np.arange(N) % 3 == k) for k in range(3)])
    reference = PCA(2).fit_transform(latent.encode(ppca, x).numpy())[order]
    # Principal axes are defined up to sign.
    np.testing.assert_allclose(np.abs(points), np.abs(reference), atol=1e-8)


def test_latent_scatter_two_dimensional_codes(x):
    double = DiagonalDouble()
    fig = latent.latent_scatter(double, x, labels=np.arange(N) % 12)
    assert len(fig.axes) == 2  # the scatter and its colorbar (12 labels > legend limit)
    assert (fig.axes[0].get_xlabel(), fig.axes[0].get_ylabel()) == ("z[0]", "z[1]")
    np.testing.assert_allclose(fig.axes[0].collections[0].get_offsets(), double.encode(x))
    with pytest.raises(TypeError, match="labels must be integers"):
        latent.latent_scatter(double, x, labels=np.zeros(N))
    with pytest.raises(ValueError, match=r"labels must have shape \[N\]"):
        latent.latent_scatter(double, x, labels=np.zeros(N - 1, dtype=int))


def test_reconstruction_and_sample_grids(ppca, x):
    fig = latent.reconstruction_grid(ppca, x[:4], (2, 3))
    assert len(fig.axes) == 8
    np.testing.assert_allclose(_pixels(fig.axes[1]), x[1].reshape(2, 3).numpy())
    decoded = latent.decode(ppca, latent.encode(ppca, x[:4]))
    np.testing.assert_allclose(_pixels(fig.axes[5]), decoded[1].reshape(2, 3).numpy())
    fig = latent.sample_grid(ppca, 5, (3, 2))
    assert len(fig.axes) == 5 and all(len(ax.get_images()) == 1 for ax in fig.axes)
    assert len(latent.sample_grid(DiagonalDouble(), 4, (2, 3)).axes) == 4


def test_image_shape_errors(ppca, x):
    with pytest.raises(ValueError, match=r"image_shape \(2, 2\) holds 4 pixels .* D=6"):
        latent.reconstruction_grid(ppca, x[:2], (2, 2))
    with pytest.raises(ValueError, match="image_shape"):
        latent.sample_grid(ppca, 3, (4, 4))
    with pytest.raises(TypeError, match=r"image_shape must be a pair \(H, W\)"):
        latent.interpolation_figure(ppca, x[0], x[1], 3, (6,))
    with pytest.raises(ValueError, match="image_shape entries must be an integer >= 1"):
        latent.traversal_figure(ppca, torch.zeros(Q, dtype=torch.float64), [0], [0.0], (0, 6))


def test_figures_pass_context_and_leave_pyplot_alone(x):
    from matplotlib import pyplot

    double = DiagonalDouble()
    before = pyplot.get_fignums()
    fig = latent.reconstruction_grid(double, x[:3], (2, 3), shift=1.0)
    decoded = double.likelihood(double.encode(x[:3], shift=1.0), shift=1.0).mean
    np.testing.assert_allclose(_pixels(fig.axes[4]), decoded[1].reshape(2, 3).numpy())
    fig = latent.latent_scatter(double, x, shift=-1.0)
    np.testing.assert_allclose(fig.axes[0].collections[0].get_offsets(), double.encode(x) - 1)
    # Figures are plain matplotlib.figure.Figure objects: nothing to plt.close.
    assert pyplot.get_fignums() == before
