# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---
# ruff: noqa: E402

# %% [markdown]
# # Diffusion is a VAE with a fixed encoder
#
# A VAE has a latent variable $z$, a decoder $p_\theta(x \mid z)$ and an encoder
# $q_\phi(z \mid x)$, and trains both by maximising the ELBO. A denoising diffusion
# probabilistic model (DDPM; Sohl-Dickstein et al. 2015, Ho, Jain & Abbeel 2020) is the same
# construction with three twists: there are $T$ latent layers $x_1, \dots, x_T$, each as wide as
# the data; the decoder is a chain that removes noise one layer at a time; and the encoder is
# not learned at all. It is a fixed recipe that adds Gaussian noise, step by step, until
# nothing of the data is left. In `probgen` a DDPM is, like every family, a Pyro model/guide
# pair, and this tutorial takes that literally:
#
# 1. the two programs and the bound they define, checked against Pyro's own `Trace_ELBO`;
# 2. what the fixed encoder does to a 2-D mixture and to a digit;
# 3. a DDPM trained on a 2-D Gaussian mixture, and its network read as a *score*, compared with
#    the exact score of the noised mixture;
# 4. sampling: ancestral (all $T$ steps) against DDIM (10 and 50 steps);
# 5. binarized MNIST: a small DDPM against a VAE on the same data and budget, in bits per
#    pixel, term by term.
#
# Run it as a script (`python tutorials/06_diffusion_is_a_vae.py`) or open it as a notebook
# with jupytext. It needs the MNIST test-set IDX files (`t10k-images-idx3-ubyte.gz`,
# `t10k-labels-idx1-ubyte.gz`) in `../shared/data/mnist` next to the repository, or in the
# directory named by `PROBGEN_DATA_DIR`. With `PROBGEN_SMOKE=1` every budget shrinks so that
# the tutorial runs in well under a minute (the numbers are then not worth reading; that mode
# exists for tests). The full run (budgets below) took five and a half minutes on two CPU
# cores.

# %%
import inspect
import math
import os
import sys
import time
from pathlib import Path

import matplotlib

SMOKE = os.environ.get("PROBGEN_SMOKE") == "1"
IN_NOTEBOOK = "ipykernel" in sys.modules
HAS_DISPLAY = sys.platform in ("darwin", "win32") or bool(
    os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
)
if SMOKE or not (IN_NOTEBOOK or HAS_DISPLAY):
    matplotlib.use("Agg")

import matplotlib.pyplot as plt
import pyro
import pyro.distributions as dist
import torch
from pyro.infer import Trace_ELBO
from torch.nn import functional as F

import probgen
from models.diffusion import DDPM
from models.diffusion_process import normal_kl
from models.diffusion_sampling import ancestral, ddim
from models.vae import VAE
from probgen import latent
from probgen.data import load_mnist_idx
from probgen.diagnostics import mmd, wasserstein
from probgen.evaluate import bits_per_dim, likelihood_bound, log_likelihood

SEED = 0
IMAGE_SHAPE = (28, 28)
D = IMAGE_SHAPE[0] * IMAGE_SHAPE[1]
T_TINY = 5  # the chain of section 1, short enough for Pyro to trace every site
T_2D = 100
HIDDEN_2D = (128, 128, 128)
MNIST_HIDDEN = (512, 512)
VAE_LATENT, VAE_HIDDEN = 20, (400,)
BATCH_2D, BATCH_MNIST = 256, 128
LR_2D, LR_MNIST = 2e-3, 1e-3

# Budgets. The smoke run takes well under a minute; the full run a few minutes on two CPU cores
# (most of it training the MNIST DDPM and evaluating its bound).
if SMOKE:
    TINY_EPOCHS, TRACE_CALLS, TRACE_PARTICLES, TERM_CALLS = 5, 10, 10, 20
    N_2D_TRAIN, N_2D_TEST, EPOCHS_2D = 2000, 1000, 8
    N_TRAIN, N_TEST, T_MNIST, EPOCHS_MNIST, IS_PARTICLES = 300, 100, 20, 3, 20
    PER_STEP_DIGITS = 100
else:
    TINY_EPOCHS, TRACE_CALLS, TRACE_PARTICLES, TERM_CALLS = 50, 100, 20, 200
    N_2D_TRAIN, N_2D_TEST, EPOCHS_2D = 8000, 4000, 100
    N_TRAIN, N_TEST, T_MNIST, EPOCHS_MNIST, IS_PARTICLES = 8000, 1000, 500, 20, 500
    PER_STEP_DIGITS = 200
DDIM_STEPS = (50, 10)

# The networks are small: intra-op threads only add synchronisation, which on a busy machine
# can cost more than the arithmetic itself.
torch.set_num_threads(1)
torch.set_printoptions(precision=3, sci_mode=False)
torch.manual_seed(SEED)
pyro.set_rng_seed(SEED)

FIGURE_DIR = Path(os.environ.get("PROBGEN_FIGURE_DIR", "tutorial_figures"))


def show(fig, name):
    """Shows a figure (inline in a notebook, as a PNG file from a script), then closes it."""
    if IN_NOTEBOOK:
        from IPython.display import display

        display(fig)
    else:
        FIGURE_DIR.mkdir(parents=True, exist_ok=True)
        path = FIGURE_DIR / f"06_{name}.png"
        fig.savefig(path, dpi=60 if SMOKE else 100)
        print(f"[figure saved to {path}]")
    plt.close(fig)


def find_mnist():
    """The directory holding MNIST's test-set IDX files (see the introduction)."""
    files = ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
    candidates = []
    if os.environ.get("PROBGEN_DATA_DIR"):
        root = Path(os.environ["PROBGEN_DATA_DIR"])
        candidates += [root / "mnist", root]
    try:  # a script knows where it lives; a notebook has no __file__ and uses its cwd
        repo = Path(__file__).resolve().parents[1]
        candidates.append(repo.parent / "shared" / "data" / "mnist")
    except NameError:
        pass
    for repo in (Path.cwd(), Path.cwd().parent):
        candidates.append(repo.resolve().parent / "shared" / "data" / "mnist")
    candidates = list(dict.fromkeys(candidates))  # drop repeats, keep the order
    for path in candidates:
        if all((path / f).is_file() for f in files):
            return path
    tried = "\n  ".join(str(p) for p in candidates)
    raise FileNotFoundError(
        f"MNIST files {', '.join(files)} not found; looked in:\n  {tried}\n"
        "Put them in ../shared/data/mnist next to the repository or set PROBGEN_DATA_DIR."
    )


def image_rows(rows, titles, suptitle, vmin=0.0, vmax=1.0, col_titles=None):
    """A grid of 28 x 28 images: one row per tensor ``[k, 784]`` in ``rows``."""
    cols = max(len(r) for r in rows)
    fig, axes = plt.subplots(
        len(rows), cols, figsize=(0.9 * cols, 1.0 * len(rows) + 0.4), squeeze=False
    )
    for i, row in enumerate(rows):
        for j, ax in enumerate(axes[i]):
            ax.set_xticks([])
            ax.set_yticks([])
            if j < len(row):
                image = row[j].detach().reshape(IMAGE_SHAPE).numpy()
                ax.imshow(image, cmap="gray", vmin=vmin, vmax=vmax)
            else:
                ax.axis("off")
            if i == 0 and col_titles:
                ax.set_title(col_titles[j], fontsize=7)
        axes[i, 0].set_ylabel(titles[i], fontsize=7)
    fig.suptitle(suptitle, fontsize=9)
    return fig


def mean_se(values):
    """Mean and standard error of a 1-D tensor of independent values."""
    return values.mean().item(), (values.std() / math.sqrt(len(values))).item()


def q_draw(process, x0, t):
    """One draw of ``x_t ~ q(x_t | x_0)`` for every row of ``x0`` (``x0`` itself at ``t = 0``)."""
    if t == 0:
        return x0
    return process.q_sample(x0, torch.full(x0.shape[:1], t), torch.randn_like(x0))


def timed(fn):
    """``fn()`` and the seconds it took."""
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


# %% [markdown]
# ## 1. The model, the guide, and the bound
#
# Time is 1-based: $x_0$ is a datum, $x_1, \dots, x_T$ are latent, $\beta_t \in (0, 1)$ is a
# fixed *noise schedule* and $\bar\alpha_t = \prod_{s \le t} (1 - \beta_s)$.
#
# **The model** (the decoder, learned) runs time backwards from pure noise:
#
# $$
# p(x_T) = \mathcal N(0, I), \qquad
# p_\theta(x_{t-1} \mid x_t) = \mathcal N\big(\mu_\theta(x_t, t), \sigma_t^2 I\big)
# \ \ (t = T, \dots, 2), \qquad p_\theta(x_0 \mid x_1) \text{ observed}.
# $$
#
# **The guide** (the encoder, fixed: no parameters) is the forward noising process
# $q(x_t \mid x_{t-1}) = \mathcal N(\sqrt{1 - \beta_t}\, x_{t-1}, \beta_t I)$. Its marginals
# are closed-form, $q(x_t \mid x_0) = \mathcal N(\sqrt{\bar\alpha_t}\, x_0, (1 - \bar\alpha_t)
# I)$, and so are its *posteriors* given the datum,
#
# $$
# q(x_{t-1} \mid x_t, x_0) = \mathcal N\big(\tilde\mu_t(x_t, x_0), \tilde\beta_t I\big),
# \quad \tilde\mu_t = \frac{\sqrt{\bar\alpha_{t-1}}\beta_t}{1 - \bar\alpha_t} x_0
#   + \frac{\sqrt{1 - \beta_t}(1 - \bar\alpha_{t-1})}{1 - \bar\alpha_t} x_t,
# \quad \tilde\beta_t = \frac{1 - \bar\alpha_{t-1}}{1 - \bar\alpha_t} \beta_t ,
# $$
#
# so the same joint can be written in the model's order, $q(x_{1:T} \mid x_0) = q(x_T \mid
# x_0) \prod_{t=2}^T q(x_{t-1} \mid x_t, x_0)$. Written that way, guide and model pair up site
# by site, and minus the ELBO splits into one KL per site (Ho et al. 2020, eq. 5):
#
# $$
# -\mathrm{ELBO}(x_0) =
# \underbrace{\mathrm{KL}\big(q(x_T \mid x_0) \,\|\, p(x_T)\big)}_{L_T\text{: prior}}
# + \sum_{t=2}^T \underbrace{\mathbb E_q\, \mathrm{KL}\big(q(x_{t-1} \mid x_t, x_0) \,\|\,
#   p_\theta(x_{t-1} \mid x_t)\big)}_{L_{t-1}\text{: diffusion}}
# \underbrace{-\ \mathbb E_q \log p_\theta(x_0 \mid x_1)}_{L_0\text{: decoder}}
# \ \ge\ -\log p_\theta(x_0).
# $$
#
# Compared with a VAE's $\mathrm{KL}(q(z \mid x) \| p(z)) - \mathbb E_q \log p(x \mid z)$: the
# prior term $L_T$ has no parameters (it is close to 0 when the schedule ends near pure noise),
# all the learning is in the $T - 1$ diffusion terms, and $L_0$ is the reconstruction. The
# price of a fixed encoder is that the latents carry no compressed code of $x$: the decoder has
# to undo a known corruption, in many small steps. The network is parameterised by what it
# predicts: here $v = \sqrt{\bar\alpha_t}\,\epsilon - \sqrt{1 - \bar\alpha_t}\, x_0$ (Salimans
# & Ho 2022), from which $\hat x_0$, $\hat\epsilon$ and $\mu_\theta = \tilde\mu_t(x_t, \hat
# x_0)$ follow. These are the two programs of `models.diffusion.DDPM`:

# %%
print(inspect.getsource(DDPM.chain_model))
print(inspect.getsource(DDPM.chain_guide))

# %% [markdown]
# `chain_model`/`chain_guide` trace all $T$ sites, which is what Pyro's ELBOs expect. Training
# uses an equivalent, cheaper pair (the default `estimator="sampled"`): one uniformly drawn
# $t$ per datum, $x_t \sim q(x_t \mid x_0)$ directly, and $T$ times that step's term with its
# Gaussian KL in closed form; its expectation is the same bound. `DDPM.bound_terms` computes
# $L_T$, $\sum_t L_{t-1}$ and $L_0$ per datum with every KL analytic, given one draw of $x_t$
# per $t$.
#
# The claim "Pyro's ELBO on this pair *is* the DDPM bound" can be checked. The data: a 2-D
# mixture of four Gaussians (defined below, used throughout sections 2 to 4). A DDPM with
# $T = 5$ is trained briefly, then minus the ELBO is estimated three ways on the same 64 points:
# Pyro's `Trace_ELBO` (plain Monte Carlo over the whole chain) on the posterior-order guide, the
# same on `forward_guide` (the Markov order $x_1, x_2, \dots$: the same joint, so the same
# expectation), and `bound_terms`. Each number is a mean over independent repeats with its
# standard error.

# %%
WEIGHTS = torch.tensor([0.3, 0.25, 0.25, 0.2], dtype=torch.float64)
MEANS = torch.tensor([[-1.6, -1.0], [1.6, -1.0], [-0.6, 1.5], [1.3, 1.3]], dtype=torch.float64)
COVS = torch.tensor(
    [
        [[0.10, 0.06], [0.06, 0.10]],
        [[0.05, 0.00], [0.00, 0.20]],
        [[0.30, -0.05], [-0.05, 0.03]],
        [[0.03, 0.00], [0.00, 0.03]],
    ],
    dtype=torch.float64,
)


def noised_mixture(abar):
    """``q(x_t)`` for mixture data: components ``N(sqrt(abar) mu_k, abar S_k + (1 - abar) I)``.

    ``abar = 1`` is the data distribution itself.
    """
    abar = torch.as_tensor(abar, dtype=torch.float64)
    eye = torch.eye(2, dtype=torch.float64)
    return dist.MixtureSameFamily(
        dist.Categorical(WEIGHTS),
        dist.MultivariateNormal(abar.sqrt() * MEANS, abar * COVS + (1 - abar) * eye),
    )


mixture = noised_mixture(1.0)
x2_train = mixture.sample((N_2D_TRAIN,)).float()
x2_test = mixture.sample((N_2D_TEST,)).float()

tiny = DDPM(2, steps=T_TINY, schedule="cosine", parameterization="v", hidden=(64, 64))
probgen.fit(
    tiny, x2_train, epochs=TINY_EPOCHS, batch_size=BATCH_2D, lr=LR_2D, seed=SEED, progress=False
)
x_check = x2_test[:64]
elbo = Trace_ELBO(num_particles=TRACE_PARTICLES, vectorize_particles=True, max_plate_nesting=1)
estimates = {}
for name, guide in (("chain_guide", tiny.chain_guide), ("forward_guide", tiny.forward_guide)):
    losses = [
        elbo.loss(tiny.chain_model, guide, x_check) / len(x_check) for _ in range(TRACE_CALLS)
    ]
    estimates[f"Trace_ELBO, {name}"] = mean_se(torch.tensor(losses))
repeats = [tiny.bound_terms(x_check) for _ in range(TERM_CALLS)]
totals = torch.stack([sum(terms.values()).mean() for terms in repeats])
estimates["bound_terms (analytic KLs)"] = mean_se(totals)
print(f"-ELBO in nats per point, T = {T_TINY}, on the same {len(x_check)} points:")
for name, (value, se) in estimates.items():
    print(f"  {name:28s} {value:8.4f} ± {se:.4f}")
split = {k: torch.stack([r[k] for r in repeats]).mean().item() for k in repeats[0]}
print("  bound_terms split: " + ", ".join(f"{k} {v:.4f}" for k, v in split.items()))
ref, ref_se = estimates["bound_terms (analytic KLs)"]
other, other_se = estimates["Trace_ELBO, chain_guide"]
agreement_z = (other - ref) / math.hypot(ref_se, other_se)
print(f"  Trace_ELBO - bound_terms = {other - ref:+.4f} nats ({agreement_z:+.1f} standard errors)")

# %% [markdown]
# The estimates agree within their standard errors (a difference of a couple of standard
# errors or less is what agreement looks like). Nothing in Pyro knows this is a diffusion
# model: it sees a model and a guide with matching latent sites and estimates the same
# expectation that `bound_terms` computes more cleverly.
#
# ## 2. The fixed encoder at work
#
# The guide needs no training: `q_sample` draws $x_t = \sqrt{\bar\alpha_t}\, x_0 +
# \sqrt{1 - \bar\alpha_t}\, \epsilon$. We use the cosine schedule of Nichol & Dhariwal (2021),
# with $\bar\alpha_t$ falling smoothly from 1 to almost 0, here for $T = 100$ on the mixture.

# %%
ddpm2d = DDPM(2, steps=T_2D, schedule="cosine", parameterization="v", hidden=HIDDEN_2D)
process = ddpm2d.process
show_t = [0, T_2D // 10, T_2D // 4, T_2D // 2, 3 * T_2D // 4, T_2D]
fig, axes = plt.subplots(1, len(show_t), figsize=(2.2 * len(show_t), 2.4), layout="constrained")
for ax, t in zip(axes, show_t, strict=True):
    xt = q_draw(process, x2_test[:1000], t)
    ax.scatter(*xt.T.numpy(), s=2, alpha=0.4)
    ax.set(xlim=(-4, 4), ylim=(-4, 4), xticks=[], yticks=[])
    ax.set_title(f"t = {t}, abar = {process.abar[t]:.2f}", fontsize=8)
fig.suptitle("the forward process q(x_t | x_0) on the 2-D mixture", fontsize=9)
show(fig, "forward_2d")

# %% [markdown]
# For binary images the chain lives in $y = 2x - 1 \in \{-1, 1\}^{784}$ (so that the data have
# the scale of the noise), and the decoder $p_\theta(x_0 \mid x_1)$ is a discretised Gaussian:
# the probability that $\mathcal N(\mu_\theta(x_1, 1), \sigma_1^2)$ falls on the right side of
# 0, a probit Bernoulli per pixel, so the bound is a bound on a *probability* of the binary
# image, comparable with a Bernoulli VAE's. The MNIST data are the 10,000 digits of the test
# set, binarized by a threshold (pixel on when its grey level is at least 128 of 255), split
# at random into training and held-out digits, as in tutorials 03 and 04.

# %%
mnist = find_mnist()
x_all, _ = load_mnist_idx(
    mnist / "t10k-images-idx3-ubyte.gz", mnist / "t10k-labels-idx1-ubyte.gz", binarize="threshold"
)
perm = torch.randperm(len(x_all), generator=torch.Generator().manual_seed(SEED))
x_train, x_test = x_all[perm[:N_TRAIN]], x_all[perm[N_TRAIN : N_TRAIN + N_TEST]]
print(f"MNIST: train {len(x_train)}, held out {len(x_test)} digits of {D} binary pixels")

ddpm = DDPM(
    D,
    steps=T_MNIST,
    schedule="cosine",
    parameterization="v",
    variance="learned",
    decoder="bernoulli",  # with clip_x0 (the default for it): x0_theta clipped to [-1, 1]
    hidden=MNIST_HIDDEN,
)
digit = ddpm.to_chain(x_train[:1])
img_t = [0, *(round(f * T_MNIST) for f in (0.1, 0.25, 0.5, 0.75)), T_MNIST]
noised = [q_draw(ddpm.process, digit, t)[0] for t in img_t]
show(
    image_rows(
        [torch.stack(noised)],
        ["y = 2x - 1"],
        f"a digit under q(x_t | x_0), T = {T_MNIST} (chain space; grey scale from -1.5 to 1.5)",
        vmin=-1.5,
        vmax=1.5,
        col_titles=[f"t = {t}" for t in img_t],
    ),
    "forward_mnist",
)

# %% [markdown]
# ## 3. Training on the mixture, and the score view
#
# `probgen.fit` trains the family's own pair with probgen's ELBO objective: per minibatch, the
# one-timestep estimate of the bound (section 1), its KLs in closed form. The loss is noisy
# because every point draws its own $t$ and noise. It bounds $-\log p(x)$ for a *density* in
# the plane, which can be negative.

# %%
fit2d = probgen.fit(
    ddpm2d, x2_train, epochs=EPOCHS_2D, batch_size=BATCH_2D, lr=LR_2D, seed=SEED, progress=False
)
print(
    f"{fit2d.n_iter} steps in {fit2d.wall_time:.1f} s; last steps' {fit2d.objective} "
    f"{fit2d.final_objective:.3f}"
)
history = torch.tensor(fit2d.history)
window = max(1, len(history) // 20)
smooth = history.unfold(0, window, 1).mean(1) if len(history) >= window else history
fig, ax = plt.subplots(figsize=(5, 3), layout="constrained")
ax.plot(history.numpy(), lw=0.5, alpha=0.4, label="per step")
steps_smooth = range(window - 1, window - 1 + len(smooth))
ax.plot(steps_smooth, smooth.numpy(), label=f"mean of {window} steps")
ax.set(xlabel="step", ylabel="-ELBO per point (nats)", title="DDPM on the 2-D mixture")
ax.set_ylim(float(history.quantile(0.02)), float(history.quantile(0.98)))
ax.legend(fontsize=8)
show(fig, "loss_2d")

# %% [markdown]
# ### The network is a score
#
# The guide's marginal $q(x_t) = \int q(x_t \mid x_0) p(x_0)\, dx_0$ is the data distribution
# blurred by noise. By Tweedie's formula (Vincent 2011; Song et al. 2021), the noise that is
# best predicted from $x_t$ is proportional to its score,
# $\mathbb E[\epsilon \mid x_t] = -\sqrt{1 - \bar\alpha_t}\, \nabla_{x_t} \log q(x_t)$, so a
# trained network estimates the score: `model.score(x, t)` returns
# $s_\theta(x_t, t) = -\hat\epsilon_\theta(x_t, t) / \sqrt{1 - \bar\alpha_t}$.
#
# For a Gaussian mixture $q(x_t)$ is known exactly: each component becomes
# $\mathcal N(\sqrt{\bar\alpha_t}\, \mu_k, \bar\alpha_t \Sigma_k + (1 - \bar\alpha_t) I)$, and
# torch's autograd of its log-density gives the true score. The arrows below show directions
# (unit length) on a grid, over the contours of $\log q(x_t)$. The cosine similarity between
# the two fields is reported twice: averaged over the grid, and averaged over points drawn from
# $q(x_t)$ (noised held-out data), where the network was trained and where sampling goes.


# %%
def true_score(x, t):
    """``grad log q(x_t)`` of the noised mixture, by autograd, at ``x`` ``[N, 2]``."""
    xx = x.detach().to(torch.float64).requires_grad_(True)
    (grad,) = torch.autograd.grad(noised_mixture(process.abar[t]).log_prob(xx).sum(), xx)
    return grad.to(x.dtype)


def model_score(x, t):
    with torch.no_grad():
        return ddpm2d.score(x, torch.tensor(t))


score_t = [T_2D // 50, T_2D // 10, 2 * T_2D // 5]
lin = torch.linspace(-3.5, 3.5, 17)
grid = torch.cartesian_prod(lin, lin)
fine = torch.linspace(-3.5, 3.5, 100)
fine_grid = torch.cartesian_prod(fine, fine)
cosines = {}
fig, axes = plt.subplots(
    len(score_t), 2, figsize=(6.4, 3.2 * len(score_t)), layout="constrained", squeeze=False
)
for row, t in enumerate(score_t):
    noisy = q_draw(process, x2_test, t)
    on_grid = F.cosine_similarity(model_score(grid, t), true_score(grid, t), dim=-1)
    on_data = F.cosine_similarity(model_score(noisy, t), true_score(noisy, t), dim=-1)
    cosines[t] = (on_grid.mean().item(), on_data.mean().item())
    log_q = noised_mixture(process.abar[t]).log_prob(fine_grid.double()).reshape(100, 100)
    for col, (name, field) in enumerate(
        (("model score", model_score(grid, t)), ("true score", true_score(grid, t)))
    ):
        ax = axes[row, col]
        ax.contour(
            fine.numpy(),
            fine.numpy(),
            log_q.T.clamp(min=-12).numpy(),
            levels=12,
            linewidths=0.5,
            cmap="Greys",
        )
        unit = field / field.norm(dim=-1, keepdim=True).clamp(min=1e-12)
        ax.quiver(*grid.T.numpy(), *unit.T.numpy(), scale=25, width=0.004)
        ax.set(xticks=[], yticks=[], aspect="equal")
        ax.set_title(f"{name}, t = {t} (abar = {process.abar[t]:.3f})", fontsize=8)
show(fig, "score")
print("mean cosine similarity of model and true score:")
for t, (g, d) in cosines.items():
    print(f"  t = {t:3d} (abar = {process.abar[t]:.3f}): on the grid {g:.3f}, on q(x_t) {d:.3f}")

# %% [markdown]
# In the full run (budgets above) the mean cosine similarity on $q(x_t)$ was 0.96 at $t = 10$
# and 0.97 at $t = 40$, but only 0.83 at $t = 2$. At small $t$ the noise is almost
# unpredictable: $\mathbb E[\epsilon \mid x_t] = -\sqrt{1 - \bar\alpha_t}\, \nabla \log
# q(x_t)$ is small next to $\epsilon$ itself (its sd is 1), so the network learns it from a
# weak signal, and dividing by the small $\sqrt{1 - \bar\alpha_t}$ turns the remaining error
# into wrong directions. Far from the data (the corners of the grid at small $t$) the network
# has never seen a training point and its arrows are an extrapolation; as $t$ grows the noise
# spreads $q(x_t)$ over the whole grid and the agreement extends with it. This is the bridge
# to score-based models (Song & Ermon 2019; Song et al. 2021): a DDPM trained on its ELBO
# learns, at every noise level, the score that a score-matching model learns by design.
#
# ## 4. Sampling: ancestral against DDIM
#
# *Ancestral* sampling runs the model as written: $x_T \sim \mathcal N(0, I)$ and $T$ draws
# $x_{t-1} \sim p_\theta(x_{t-1} \mid x_t)$, one network call each. *DDIM* (Song, Meng & Ermon
# 2021) visits only $S$ of the $T$ times, $\tau_S > \dots > \tau_1$, and moves deterministically
# from $t = \tau_i$ to $s = \tau_{i-1}$ through the predictions of the same network,
#
# $$ x_s = \sqrt{\bar\alpha_s}\, \hat x_0(x_t) + \sqrt{1 - \bar\alpha_s}\, \hat\epsilon(x_t), $$
#
# a discretisation of the probability-flow ODE of the diffusion: no retraining, $S$ network
# calls. The distance of each sampler's draws to held-out data is measured twice: the sliced
# 1-Wasserstein distance SW1 (`probgen.diagnostics.wasserstein`) and the squared MMD with a
# Gaussian kernel (`probgen.diagnostics.mmd`). Both are distances between *empirical*
# distributions, so a second sample from the true mixture, of the same size, gives the floor
# that a perfect sampler would reach.

# %%
n_draws = len(x2_test)
samplers = {"ancestral": lambda: ancestral(ddpm2d, n_draws)}
for s in DDIM_STEPS:
    samplers[f"DDIM {s}"] = lambda s=s: ddim(ddpm2d, n_draws, steps=s)
samplers["true mixture (floor)"] = lambda: mixture.sample((n_draws,)).float()
draws, sampling = {}, {}
print(f"{n_draws} draws each, against {len(x2_test)} held-out points:")
print(f"  {'sampler':22s}{'net calls':>10s}{'seconds':>9s}{'SW1':>16s}{'MMD^2 x 1e3':>20s}")
for name, fn in samplers.items():
    draws[name], seconds = timed(fn)
    sw = wasserstein(draws[name], x2_test, seed=SEED)
    mm = mmd(draws[name], x2_test)
    calls = {"ancestral": T_2D}.get(name, int(name.split()[-1]) if "DDIM" in name else 0)
    sampling[name] = (seconds, float(sw), float(mm))
    print(
        f"  {name:22s}{calls:10d}{seconds:9.2f}{float(sw):9.4f} ± {float(sw.stderr):.4f}"
        f"{1e3 * float(mm):11.3f} ± {1e3 * float(mm.stderr):.3f}"
    )
fig, axes = plt.subplots(1, len(draws), figsize=(2.6 * len(draws), 2.8), layout="constrained")
for ax, (name, xs) in zip(axes, draws.items(), strict=True):
    ax.scatter(*xs.T.numpy(), s=2, alpha=0.4)
    ax.set(xlim=(-3.5, 3.5), ylim=(-3.5, 3.5), xticks=[], yticks=[], aspect="equal")
    ax.set_title(f"{name}\nSW1 {sampling[name][1]:.3f}, {sampling[name][0]:.2f} s", fontsize=8)
show(fig, "samplers_2d")

# %% [markdown]
# DDIM buys speed in proportion to the steps it skips, and can pay in accuracy once the steps
# grow coarse: each step follows the network's prediction for a whole stretch of the path, and
# the deterministic path has no fresh noise to wash out an early error. In the full run, DDIM
# with 50 steps was closer to the held-out data than ancestral sampling (SW1 0.065 against
# 0.087; the floor of two true samples was 0.030) at half the network calls, and DDIM with 10
# steps (0.082) did not fall behind ancestral sampling at this budget. The squared MMD has
# standard errors as large as these differences at these sample sizes. Whatever the sampler,
# this is the cost of a DDPM: a VAE samples with one decoder call, a DDPM with $T$ (or $S$)
# network calls.
#
# A practical note on the parameterisation: predicting $\epsilon$, the usual choice, gives
# $\hat x_0 = (x_t - \sqrt{1 - \bar\alpha_t}\,\hat\epsilon)/\sqrt{\bar\alpha_t}$, and at
# the end of the cosine schedule $\sqrt{\bar\alpha_T}$ is tiny (printed below), so every
# error of $\hat\epsilon$ is multiplied by its inverse, which wrecks DDIM's first, largest step
# and the last KL term of the bound. Predicting $v$ gives $\hat x_0 = \sqrt{\bar\alpha_t}\, x_t
# - \sqrt{1 - \bar\alpha_t}\, \hat v$ without a division.

# %%
print(
    f"cosine schedule, T = {T_2D}: sqrt(abar_T) = {process.sqrt_abar[T_2D]:.2e}, so an eps-model's "
    f"error at t = T is amplified {1 / process.sqrt_abar[T_2D]:.0f}-fold in x0_hat"
)

# %% [markdown]
# ## 5. Binarized MNIST: a DDPM against a VAE, term by term
#
# Both models define a probability of a binary image and are trained on the same digits for
# the same number of epochs, minibatch size and learning rate (the smoke budget: a few hundred
# digits and a few epochs; the full budget: 8,000 digits, 20 epochs, $T = 500$). The DDPM is an
# MLP with the time embedding entering every block (`probgen.nn_time.TimeMLP`, hidden widths
# 512, 512); the VAE is `VAE(784, 20, (400,))`, one hidden layer of 400 units in encoder and
# decoder.

# %%
fit_ddpm = probgen.fit(
    ddpm,
    x_train,
    epochs=EPOCHS_MNIST,
    batch_size=BATCH_MNIST,
    lr=LR_MNIST,
    seed=SEED,
    progress=False,
)
vae = VAE(D, VAE_LATENT, VAE_HIDDEN)
fit_vae = probgen.fit(
    vae,
    x_train,
    epochs=EPOCHS_MNIST,
    batch_size=BATCH_MNIST,
    lr=LR_MNIST,
    seed=SEED,
    progress=False,
)
for name, f in (("DDPM", fit_ddpm), ("VAE", fit_vae)):
    print(
        f"{name:4s}: {f.n_iter} steps in {f.wall_time:.1f} s; last steps' {f.objective} "
        f"{f.final_objective:.1f}"
    )

# %% [markdown]
# Samples: the DDPM by ancestral sampling ($T$ network calls) and by DDIM with 20 steps; the
# VAE by one decoder call, as Bernoulli draws (speckled: pixels are independent given $z$) and
# as decoded means.

# %%
N_SHOW = 8
gen = torch.Generator().manual_seed(SEED)
ddpm_draws, ddpm_seconds = timed(lambda: ancestral(ddpm, N_SHOW, generator=gen))
ddim_draws, ddim_seconds = timed(lambda: ddim(ddpm, N_SHOW, steps=min(20, T_MNIST), generator=gen))
vae_draws, vae_seconds = timed(lambda: vae.sample(N_SHOW))
with torch.no_grad():
    z = torch.randn(N_SHOW, VAE_LATENT, generator=gen)
    vae_means = latent.decode(vae, z)
show(
    image_rows(
        [x_test[:N_SHOW], ddpm_draws, ddim_draws, vae_draws, vae_means],
        ["held out", f"DDPM, {T_MNIST} steps", "DDPM, DDIM 20", "VAE draws", "VAE means"],
        "binarized MNIST: data and samples",
    ),
    "samples_mnist",
)
print(
    f"seconds for {N_SHOW} samples: DDPM ancestral {ddpm_seconds:.2f}, DDIM "
    f"{ddim_seconds:.2f}, VAE {vae_seconds:.3f}"
)

# %% [markdown]
# ### Bits per pixel
#
# `probgen.evaluate.likelihood_bound(model, x)` evaluates minus the ELBO on held-out digits,
# term by term, as a mean over digits with its standard error, in nats per digit and in bits
# per pixel ($\text{nats} / (784 \log 2)$). For the DDPM it calls `bound_terms` (all $T$
# terms, every KL analytic); for the VAE the terms are its KL and its reconstruction. For the
# VAE we also estimate $\log p(x)$ itself by importance sampling from the encoder
# (`probgen.evaluate.log_likelihood`, Burda et al. 2016), which is tighter than its ELBO. No
# such estimate is offered for the DDPM: its bound is the number usually reported. A
# factorised Bernoulli model (independent pixels, add-one smoothed frequencies) is the baseline
# that needs no latent variable at all.

# %%
bound_ddpm = likelihood_bound(ddpm, x_test, generator=torch.Generator().manual_seed(SEED))
bound_vae = likelihood_bound(vae, x_test)
ll_vae = log_likelihood(vae, x_test, num_particles=IS_PARTICLES)
pixel_probs = (x_train.sum(0) + 1) / (len(x_train) + 2)
ll_pixels = dist.Bernoulli(probs=pixel_probs).to_event(1).log_prob(x_test)
print(f"DDPM (T = {T_MNIST}), -ELBO on {len(x_test)} held-out digits:")
print(bound_ddpm.table())
print(f"\nVAE (latent {VAE_LATENT}), -ELBO on the same digits:")
print(bound_vae.table())
bpd = {
    "DDPM, -ELBO": bound_ddpm.bits_per_dim()["total"],
    "VAE, -ELBO": bound_vae.bits_per_dim()["total"],
    f"VAE, -log p(x), K = {IS_PARTICLES}": bits_per_dim(ll_vae, D),
    "independent pixels": bits_per_dim(ll_pixels.mean(), D),
}
print("\nbits per pixel (lower is better):")
for name, est in bpd.items():
    se = f" ± {float(est.stderr):.4f}" if not est.exact else ""
    print(f"  {name:28s} {float(est.value):.4f}{se}")

# %% [markdown]
# Reading the tables: the DDPM's prior term is close to zero by construction, its decoder term
# is small because $x_1$ is barely noised ($\bar\alpha_1 \approx 1$), and nearly all of its
# bits sit in the diffusion terms, the $T - 1$ KLs between the true and the learned denoising
# steps. The VAE splits its bits differently: a KL that pays for the information in the code,
# and a reconstruction that pays for what the code leaves out.
#
# ### Where the DDPM's bits go
#
# The diffusion sum can be taken apart step by step: $L_{t-1}$ for every $t$, each the
# closed-form KL at one draw of $x_t$ per digit, averaged over held-out digits. The dashed
# curve is the same computation for an untrained network (its zero-initialised output predicts
# $v = 0$): the difference is what training has bought at each step.


# %%
def per_step_kl(model, x):
    """``L_{t-1}`` for ``t = 2..T``: the mean over ``x`` of the analytic KL at one ``x_t`` draw."""
    y0 = model.to_chain(x)
    out = []
    with torch.no_grad():
        for t in range(2, model.steps + 1):
            steps = torch.full((len(y0),), t)
            xt = model.process.q_sample(y0, steps, torch.randn_like(y0))
            q_mean, q_var = model.process.q_posterior(y0, xt, steps)
            mean, log_var, _ = model.reverse(xt, steps)
            out.append(normal_kl(q_mean, q_var.log(), mean, log_var).sum(-1).mean())
    return torch.stack(out)


x_steps = x_test[:PER_STEP_DIGITS]
untrained = DDPM(
    D,
    steps=T_MNIST,
    schedule="cosine",
    parameterization="v",
    variance="learned",
    decoder="bernoulli",
    hidden=MNIST_HIDDEN,
)
kl_trained, kl_untrained = per_step_kl(ddpm, x_steps), per_step_kl(untrained, x_steps)
steps_axis = torch.arange(2, T_MNIST + 1)
EARLY_T = max(2, T_MNIST // 10)
early = steps_axis <= EARLY_T
early_share = (kl_trained[early].sum() / kl_trained.sum()).item()
gain = kl_untrained - kl_trained
fig, ax = plt.subplots(figsize=(5, 3.2), layout="constrained")
ax.loglog(steps_axis.numpy(), kl_trained.numpy(), label="trained")
ax.loglog(steps_axis.numpy(), kl_untrained.numpy(), "--", label="untrained (v = 0)")
ax.set(xlabel="t", ylabel="L_{t-1} (nats per digit)", title=f"per-step KL, T = {T_MNIST}")
ax.legend(fontsize=8)
show(fig, "per_step_kl")
print(
    f"diffusion term on {len(x_steps)} digits: {kl_trained.sum():.1f} nats (untrained "
    f"{kl_untrained.sum():.1f}); the steps with t <= {EARLY_T} ({int(early.sum())} of "
    f"{T_MNIST - 1}) carry {early_share:.0%} of it"
)
print(
    f"training lowered the sum by {gain.sum():.1f} nats, {gain[~early].sum():.1f} of them "
    f"at t > {EARLY_T}; at t = 2 the KL is {kl_trained[0]:.1f} nats "
    f"(untrained {kl_untrained[0]:.1f})"
)

# %% [markdown]
# Without the clipping of $\hat x_0$ to $[-1, 1]$ (`DDPM(..., clip_x0=False)`) the picture is
# the opposite: the low-noise steps carry most of the bound, as Nichol & Dhariwal (2021, Fig. 2)
# found for images, because the bound is exacting there. The reverse variances at small $t$
# are of order $\beta_t$, so an error $\delta$ in $\hat x_0$ costs about
# $\delta^2 / (2 t^2 \beta_t)$ nats per pixel, and the prediction must be right to a few
# thousandths. For binary pixels the right answer is easy ($x_0$ is the sign of $x_t$) but an
# unconstrained network output only approaches $\pm 1$; clipped to the data's range it reaches
# it exactly, and those steps become nearly free (the print above: the steps with small $t$
# carry almost none of the sum). The clipping is part of the model, in training, in the bound
# and in the samplers alike; the reference implementation applies it when it evaluates the
# bound (`clip_denoised`). The MLP's *pointwise path* (`TimeMLP(pointwise=32)`, one small
# network applied to every pixel) lets it express such elementwise denoisers despite its
# 512-unit bottleneck.
#
# At this budget the DDPM's bound is close to the VAE's ELBO and both sit above the VAE's
# importance-sampled likelihood; at the smoke budget (a few hundred digits, a few epochs)
# neither model's numbers mean much. A small MLP trained for minutes on a CPU is still far from
# what diffusion models reach with convolutional networks, learned noise schedules and long
# training (Kingma et al. 2021). For figures on the full binarized-MNIST training set with a
# stated budget, command and machine, see `benchmarks/RESULTS.md`.

# %% [markdown]
# ## 6. What to remember
#
# The numbers are read off the results above (rerun the tutorial and they update).

# %%
trace_value, trace_se = estimates["Trace_ELBO, chain_guide"]
print(
    f"* A DDPM is a Pyro model/guide pair whose guide has no parameters; Pyro's Trace_ELBO on it "
    f"({trace_value:.3f} ± {trace_se:.3f} nats, T = {T_TINY}) and the closed-form bound "
    f"({ref:.3f} ± {ref_se:.3f}) estimate the same number."
)
print(
    "* Its network is a score: mean cosine similarity to the exact score of the noised mixture "
    + ", ".join(f"{d:.2f} at t = {t}" for t, (_, d) in cosines.items())
    + " (on q(x_t))."
)
anc, fast = sampling["ancestral"], sampling[f"DDIM {DDIM_STEPS[-1]}"]
print(
    f"* Ancestral sampling ({T_2D} steps): SW1 {anc[1]:.3f} in {anc[0]:.2f} s; DDIM with "
    f"{DDIM_STEPS[-1]} steps: SW1 {fast[1]:.3f} in {fast[0]:.2f} s; the floor of two true "
    f"samples: {sampling['true mixture (floor)'][1]:.3f}."
)
print(
    f"* Binarized MNIST at this budget: DDPM bound {float(bpd['DDPM, -ELBO'].value):.3f}, VAE "
    f"bound {float(bpd['VAE, -ELBO'].value):.3f} and IS estimate "
    f"{float(bpd[f'VAE, -log p(x), K = {IS_PARTICLES}'].value):.3f} bits per pixel"
    + (" (smoke budget: not representative)." if SMOKE else ".")
)
print(
    f"* Where the DDPM's bits go: the diffusion terms with t <= {EARLY_T} ({int(early.sum())} "
    f"of {T_MNIST - 1}) carry {early_share:.0%} of the diffusion sum."
)

# %% [markdown]
# ## References
#
# * Burda, Grosse & Salakhutdinov (2016), "Importance weighted autoencoders", ICLR,
#   arXiv:1509.00519.
# * Ho, Jain & Abbeel (2020), "Denoising diffusion probabilistic models", NeurIPS,
#   arXiv:2006.11239.
# * Kingma, Salimans, Poole & Ho (2021), "Variational diffusion models", NeurIPS,
#   arXiv:2107.00630.
# * Kingma & Welling (2014), "Auto-encoding variational Bayes", ICLR, arXiv:1312.6114.
# * Nichol & Dhariwal (2021), "Improved denoising diffusion probabilistic models", ICML,
#   arXiv:2102.09672.
# * Salimans & Ho (2022), "Progressive distillation for fast sampling of diffusion models",
#   ICLR, arXiv:2202.00512.
# * Sohl-Dickstein, Weiss, Maheswaranathan & Ganguli (2015), "Deep unsupervised learning using
#   nonequilibrium thermodynamics", ICML, arXiv:1503.03585.
# * Song & Ermon (2019), "Generative modeling by estimating gradients of the data
#   distribution", NeurIPS, arXiv:1907.05600.
# * Song, Meng & Ermon (2021), "Denoising diffusion implicit models", ICLR, arXiv:2010.02502.
# * Song, Sohl-Dickstein, Kingma, Kumar, Ermon & Poole (2021), "Score-based generative modeling
#   through stochastic differential equations", ICLR, arXiv:2011.13456.
# * Vincent (2011), "A connection between score matching and denoising autoencoders", Neural
#   Computation 23(7).
