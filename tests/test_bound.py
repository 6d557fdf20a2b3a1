"""``probgen.evaluate.likelihood_bound``: the negative ELBO on data, term by term.

References: the VAE's per-site log densities written out with ``torch.distributions`` at the
guide's own draw, the closed-form Gaussian KL of the amortised posterior to the prior, and a
DDPM's own ``bound_terms``.
"""

from __future__ import annotations

import math

import pyro
import pytest
import torch
from torch import distributions as td

from models.diffusion import DDPM
from models.vae import VAE
from probgen import evaluate
from probgen.evaluate import Bound, likelihood_bound

#: One float64 computation of a sum of log densities against another in a different order.
EXACT_RTOL = 1e-10
#: Monte Carlo agreement, in standard errors (two-sided false failure ~6e-7 under normality).
Z_MAX = 5.0
N, D, Q = 40, 6, 2


@pytest.fixture
def vae() -> VAE:
    torch.manual_seed(0)
    model = VAE(D, Q, hidden=(8,)).double()
    with torch.no_grad():  # a non-trivial posterior: the head starts near zero otherwise
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return model


@pytest.fixture
def xb() -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    return (torch.rand(N, D, generator=g, dtype=torch.float64) < 0.3).double()


def test_vae_terms_are_the_per_site_log_densities_at_the_guides_draw(vae, xb):
    pyro.set_rng_seed(3)
    bound = likelihood_bound(vae, xb)
    pyro.set_rng_seed(3)
    q = vae.posterior(xb)
    z = q.rsample()  # the draw the guide made under the same seed
    prior = td.Independent(td.Normal(torch.zeros(Q, dtype=xb.dtype), 1.0), 1)
    kl = q.log_prob(z) - prior.log_prob(z)
    logits = vae.decoder(z)
    rec = -td.Independent(td.Bernoulli(logits=logits), 1).log_prob(xb)
    torch.testing.assert_close(bound.per_datum["kl"], kl.detach(), rtol=EXACT_RTOL, atol=0)
    torch.testing.assert_close(
        bound.per_datum["reconstruction"], rec.detach(), rtol=EXACT_RTOL, atol=0
    )
    kl, rec = kl.detach(), rec.detach()
    assert float(bound.total.value) == pytest.approx(float((kl + rec).mean()), rel=EXACT_RTOL)
    se = float((kl + rec).std() / math.sqrt(N))
    assert float(bound.total.stderr) == pytest.approx(se, rel=EXACT_RTOL)


def test_vae_kl_term_averages_to_the_closed_form_kl(vae, xb):
    pyro.set_rng_seed(0)
    draws = torch.stack([likelihood_bound(vae, xb).per_datum["kl"] for _ in range(300)])
    q = vae.posterior(xb).base_dist
    exact = td.kl_divergence(q, td.Normal(0.0, 1.0)).sum(-1).detach()
    se = draws.std(0) / math.sqrt(draws.shape[0])
    assert ((draws.mean(0) - exact).abs() <= Z_MAX * se).all()


def test_the_total_bounds_the_importance_sampled_log_likelihood(vae, xb):
    """-ELBO >= -log p(x) per datum on average; the IWAE estimate with K = 2000 is tight."""
    pyro.set_rng_seed(0)
    totals = torch.stack([likelihood_bound(vae, xb).total.value for _ in range(50)])
    nll = -evaluate.log_likelihood(vae, xb, num_particles=2000).value
    assert float(totals.mean()) >= float(nll) - Z_MAX * float(totals.std() / math.sqrt(50))


def test_bits_per_dim_divide_each_term_by_d_log_2(vae, xb):
    bound = likelihood_bound(vae, xb)
    bpd = bound.bits_per_dim()
    assert set(bpd) == {"kl", "reconstruction", "total"}
    for name, est in (*bound.terms.items(), ("total", bound.total)):
        assert float(bpd[name].value) == pytest.approx(float(est.value) / (D * math.log(2)))
        assert bpd[name].unit == "bits/dim"
    lines = bound.table().splitlines()
    assert [line.split()[0] for line in lines[1:]] == ["kl", "reconstruction", "total"]


def test_batches_change_nothing_but_the_order_of_draws(vae, xb):
    pyro.set_rng_seed(5)
    whole = likelihood_bound(vae, xb)
    pyro.set_rng_seed(5)
    parts = likelihood_bound(vae, xb, batch_size=7)
    assert isinstance(parts, Bound)
    assert parts.per_datum["kl"].shape == (N,)
    # different draws, the same quantity: within the two standard errors
    diff = float(whole.total.value - parts.total.value)
    assert abs(diff) < Z_MAX * math.hypot(float(whole.total.stderr), float(parts.total.stderr))


def test_a_ddpm_reports_its_prior_diffusion_and_decoder_terms():
    torch.manual_seed(0)
    x = torch.randn(30, 2, dtype=torch.float64)
    model = DDPM(2, steps=8, hidden=(16,)).double()
    g = torch.Generator().manual_seed(4)
    bound = likelihood_bound(model, x, generator=g)
    assert list(bound.terms) == ["prior", "diffusion", "decoder"]
    g = torch.Generator().manual_seed(4)
    direct = model.bound_terms(x, generator=g)
    for name, values in direct.items():
        torch.testing.assert_close(bound.per_datum[name], values, rtol=EXACT_RTOL, atol=0)
    total = sum(direct.values())
    assert float(bound.total.value) == pytest.approx(float(total.mean()), rel=EXACT_RTOL)
    # its log_likelihood is the negative bound, datum by datum
    g = torch.Generator().manual_seed(4)
    sampled = likelihood_bound(model, x, generator=g, timesteps=2)
    assert sampled.per_datum["diffusion"].shape == (30,)


def test_bad_arguments_are_named(vae, xb):
    with pytest.raises(ValueError, match="has no bound_terms"):
        likelihood_bound(vae, xb, timesteps=3)
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        likelihood_bound(vae, xb, batch_size=0)
    with pytest.raises(ValueError, match="features per row"):
        likelihood_bound(vae, xb[:, :3])


def test_a_sampled_global_site_is_refused():
    """theta ~ N(0, 1) shared by all data, sampled by the guide: no per-datum split."""
    import pyro.distributions as dist

    class Shared:
        data_plate = "data"

        def model(self, x):
            theta = pyro.sample("theta", dist.Normal(0.0, 1.0))
            with pyro.plate("data", x.shape[0]):
                pyro.sample(
                    "obs", dist.Normal(theta, 1.0).expand([x.shape[0], 2]).to_event(1), obs=x
                )

        def guide(self, x):
            pyro.sample("theta", dist.Normal(0.1, 0.5))

    x = torch.randn(20, 2, dtype=torch.float64)
    with pytest.raises(ValueError, match="global site 'theta' outside the data plate"):
        likelihood_bound(Shared(), x)


def test_dequantised_data_add_log2_levels_to_the_data_term_and_total(vae, xb):
    bound = likelihood_bound(vae, xb)
    plain, corrected = bound.bits_per_dim(), bound.bits_per_dim(discrete_levels=256)
    assert float(corrected["kl"].value) == float(plain["kl"].value)
    for name in ("reconstruction", "total"):
        assert float(corrected[name].value) == pytest.approx(float(plain[name].value) + 8.0)
    with pytest.raises(ValueError, match="discrete_levels must be an integer >= 2"):
        bound.bits_per_dim(discrete_levels=1)
