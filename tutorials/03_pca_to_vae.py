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
# # From PCA to VAEs: two latent spaces for handwritten digits
#
# Probabilistic PCA and the variational autoencoder tell the *same* generative story,
#
# $$ z_n \sim \mathcal{N}(0, I_q), \qquad x_n \mid z_n \sim p_\theta(x \mid z_n), $$
#
# and differ in the decoder and the likelihood, which decides how they can be fitted:
#
# | | PPCA (Tipping & Bishop 1999) | VAE (Kingma & Welling 2014) |
# |---|---|---|
# | decoder | affine, $W z + \mu$ | a neural network $f_\theta(z)$ |
# | likelihood | $\mathcal{N}(W z + \mu, \sigma^2 I)$ | here Bernoulli, logits $f_\theta(z)$ |
# | posterior | $p(z \mid x)$ exact, Gaussian | an encoder $q_\phi(z \mid x)$ approximates it |
# | fitting | eigendecomposition of the covariance | stochastic gradient ascent on the ELBO |
#
# We fit both to binarized MNIST digits and look at what each latent space looks like
# (scatters, reconstructions, interpolations, traversals), how much of it is used (active units,
# KL per dimension), and how well each model predicts held-out digits, which needs some care
# because a Gaussian *density* and a Bernoulli *probability* are not measured in the same
# currency. The last section asks why the VAE's latent space can be decoded *between* the
# training codes at all.
#
# Run it as a script (`python tutorials/03_pca_to_vae.py`) or open it as a notebook with
# jupytext. It needs the MNIST test-set IDX files (`t10k-images-idx3-ubyte.gz`,
# `t10k-labels-idx1-ubyte.gz`) in `../shared/data/mnist` next to the repository, or in the
# directory named by `PROBGEN_DATA_DIR`. With `PROBGEN_SMOKE=1` every budget shrinks so that
# the tutorial runs in well under a minute (the numbers are then not worth reading; that mode
# exists for tests). The full run takes a few minutes on two CPU cores.

# %%
import math
import os
import sys
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

import probgen
from models.ppca import PPCA
from models.vae import VAE
from probgen import latent
from probgen.data import load_mnist_idx
from probgen.evaluate import bits_per_dim, log_likelihood_pointwise

SEED = 0
IMAGE_SHAPE = (28, 28)
D = IMAGE_SHAPE[0] * IMAGE_SHAPE[1]
HIDDEN = (256,)  # one hidden layer of 256 units in encoder and decoder
BATCH = 256
LR = 2e-3
KNN_K = 5  # neighbours of the k-nearest-neighbour label check of the 2-D codes
HOLE_RADIUS = 3.0  # posterior standard deviations; see section 7

# Budgets. The full run takes a few minutes on two CPU cores; the smoke run well under one.
if SMOKE:
    N_TRAIN, N_TEST = 1000, 200
    EPOCHS, LINEAR_EPOCHS = 1, 1
    IS_PARTICLES, ELBO_DRAWS, PRIOR_DRAWS, PAIRS = 8, 4, 200, 50
else:
    N_TRAIN, N_TEST = 8000, 2000
    EPOCHS, LINEAR_EPOCHS = 30, 50
    IS_PARTICLES, ELBO_DRAWS, PRIOR_DRAWS, PAIRS = 200, 32, 1000, 500

# Per-step work is small (a 256-row minibatch through one hidden layer): intra-op threads add
# synchronisation that, on a shared machine, costs more than it saves.
torch.set_num_threads(1)
torch.set_printoptions(precision=3, sci_mode=False)
pyro.set_rng_seed(SEED)

FIGURE_DIR = Path(os.environ.get("PROBGEN_FIGURE_DIR", "tutorial_figures"))


def show(fig, name):
    """Shows a figure (inline in a notebook, as a PNG file from a script), then closes it."""
    if IN_NOTEBOOK:
        from IPython.display import display

        display(fig)
    else:
        FIGURE_DIR.mkdir(parents=True, exist_ok=True)
        path = FIGURE_DIR / f"03_{name}.png"
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


def image_rows(rows, titles, suptitle):
    """A grid of 28 x 28 images: one row per tensor ``[k, 784]`` in ``rows``."""
    cols = max(len(r) for r in rows)
    fig, axes = plt.subplots(
        len(rows), cols, figsize=(0.9 * cols, 1.0 * len(rows) + 0.3), squeeze=False
    )
    for i, row in enumerate(rows):
        for j, ax in enumerate(axes[i]):
            ax.set_xticks([])
            ax.set_yticks([])
            if j < len(row):
                ax.imshow(row[j].detach().reshape(IMAGE_SHAPE), cmap="gray", vmin=0, vmax=1)
            else:
                ax.axis("off")
        axes[i, 0].set_ylabel(titles[i], fontsize=7)
    fig.suptitle(suptitle, fontsize=9)
    return fig


def fmt(values, digits=2):
    """A 1-D tensor as a short list of rounded numbers."""
    return "[" + ", ".join(f"{v:.{digits}f}" for v in values.tolist()) + "]"


def mean_se(values):
    """Mean and standard error of per-digit values."""
    return values.mean().item(), (values.std() / math.sqrt(len(values))).item()


# %% [markdown]
# ## 1. Data: binarized MNIST digits with their labels
#
# We use the 10,000 digits of MNIST's test set (the files ship with the labels), binarized by a
# threshold: a pixel is 1 when its grey level is at least 128 of 255. A random 80% train the
# models and the remaining 20% are held out; labels are never used for fitting, only to colour
# the plots and to check what the latent spaces learned.

# %%
mnist = find_mnist()
x_all, y_all = load_mnist_idx(
    mnist / "t10k-images-idx3-ubyte.gz", mnist / "t10k-labels-idx1-ubyte.gz", binarize="threshold"
)
perm = torch.randperm(len(x_all), generator=torch.Generator().manual_seed(SEED))
train_idx, test_idx = perm[:N_TRAIN], perm[N_TRAIN : N_TRAIN + N_TEST]
x_train, y_train = x_all[train_idx], y_all[train_idx]
x_test, y_test = x_all[test_idx], y_all[test_idx]
print(f"{len(x_all)} digits of {D} binary pixels; train {len(x_train)}, held out {len(x_test)}")
print(f"share of pixels that are 1: {x_train.mean():.3f}")
print("training digits per label:", torch.bincount(y_train, minlength=10).tolist())
show(image_rows([x_train[:10]], ["data"], "ten training digits"), "data")

# %% [markdown]
# ## 2. PPCA in closed form
#
# PPCA's maximum-likelihood fit needs no optimisation: with the eigenvalues
# $\lambda_1 \ge \dots \ge \lambda_D$ and eigenvectors $U$ of the sample covariance,
# $\sigma^2 = \frac{1}{D - q}\sum_{j > q} \lambda_j$ and $W = U_q (\Lambda_q - \sigma^2 I)^{1/2}$
# (Tipping & Bishop 1999, eqs. 7–8). `PPCA.fit_closed_form` does exactly that. The posterior
# is Gaussian and exact: $p(z \mid x) = \mathcal{N}(M^{-1} W^\top (x - \mu), \sigma^2 M^{-1})$
# with $M = W^\top W + \sigma^2 I$; `encode` returns its mean.
#
# We fit $q = 2$ (to look at) and $q = 10$ (to compare with a 10-dimensional VAE).

# %%
ppca2, ppca10 = PPCA(n_components=2), PPCA(n_components=10)
ppca2.fit_closed_form(x_train)
ppca10.fit_closed_form(x_train)
centred = x_train - x_train.mean(0)
eigenvalues = torch.linalg.eigvalsh(centred.T @ centred / len(x_train)).flip(0)
for model in (ppca2, ppca10):
    q = model.n_components
    share = eigenvalues[:q].sum() / eigenvalues.sum()
    print(
        f"PPCA q = {q:2d}: sigma^2 = {model.noise_variance_:.4f} (the mean of the {D - q} "
        f"discarded eigenvalues); the {q} components carry {100 * share:.1f}% of the variance"
    )

# %% [markdown]
# ## 3. A VAE with a two-dimensional latent space
#
# The VAE's decoder maps $z$ through one hidden layer of 256 ReLU units to 784 logits, and
# $x \mid z$ is a product of Bernoullis, the right likelihood for binary pixels. The encoder
# mirrors it and outputs the mean and standard deviation of a diagonal Gaussian
# $q_\phi(z \mid x)$. `probgen.fit(vae, x)` maximises the ELBO
#
# $$ \mathcal{L}(x) = \mathbb{E}_{q_\phi(z \mid x)}[\log p_\theta(x \mid z)]
#    - \mathrm{KL}\big(q_\phi(z \mid x) \,\|\, \mathcal{N}(0, I)\big) \le \log p_\theta(x) $$
#
# with Adam on minibatches. We fit a $q = 2$ VAE for pictures and a $q = 10$ one for the
# numbers of sections 4–6.


# %%
def fit_vae(vae, name, epochs=EPOCHS, lr=LR):
    fit = probgen.fit(
        vae,
        x_train,
        method="svi",
        epochs=epochs,
        batch_size=BATCH,
        lr=lr,
        seed=SEED,
        progress=False,
    )
    print(
        f"{name}: {fit.n_iter} steps in {fit.wall_time:.0f} s; last minibatch "
        f"{fit.objective} {fit.final_objective:.2f}"
    )
    return vae


vae2 = fit_vae(VAE(D, latent_dim=2, hidden=HIDDEN), "VAE q = 2")
vae10 = fit_vae(VAE(D, latent_dim=10, hidden=HIDDEN), "VAE q = 10")

# %% [markdown]
# ### The two 2-D latent spaces
#
# `probgen.latent.latent_scatter` plots the codes (PPCA's posterior means, the VAE encoder's
# means) of the held-out digits, coloured by their labels. PPCA's codes are a linear projection
# onto the two leading principal axes, so digits that differ mainly along other directions
# overlap; the VAE's encoder is nonlinear and may place them apart. A number rather than an
# impression: the share of held-out digits whose label is the majority label of their
# $k = 5$ nearest training codes.


# %%
def knn_accuracy(model):
    z_train, z_test = latent.encode(model, x_train), latent.encode(model, x_test)
    nearest = torch.cdist(z_test, z_train).topk(KNN_K, largest=False).indices
    predicted = y_train[nearest].mode(dim=1).values
    return (predicted == y_test).float().mean().item()


knn = {}
for name, model in (("ppca", ppca2), ("vae", vae2)):
    knn[name] = knn_accuracy(model)
    fig = latent.latent_scatter(model, x_test, y_test)
    fig.axes[0].set_title(f"{name.upper()} q = 2: held-out codes", fontsize=9)
    show(fig, f"scatter_{name}")
    print(f"{name.upper()} q = 2: {KNN_K}-NN label accuracy of the held-out codes {knn[name]:.3f}")
print(f"(guessing the most frequent label: {torch.bincount(y_test).max() / len(y_test):.3f})")

# %% [markdown]
# ### Reconstructions
#
# `reconstruction_grid` shows held-out digits above `decode(encode(x))`: the decoder's mean at
# the code, i.e. $W \mathbb{E}[z \mid x] + \mu$ for PPCA (real numbers, not restricted to
# $[0, 1]$) and the pixel probabilities for the VAE. Two numbers cannot hold a whole digit:
# both blur, but differently.

# %%
for name, model in (("ppca2", ppca2), ("vae2", vae2), ("ppca10", ppca10), ("vae10", vae10)):
    fig = latent.reconstruction_grid(model, x_test[:10], IMAGE_SHAPE)
    fig.suptitle(f"{name}: reconstructions of held-out digits", fontsize=9)
    show(fig, f"reconstructions_{name}")

# %% [markdown]
# ## 4. Walking through the latent space
#
# ### Linear versus spherical interpolation
#
# Between the codes $z_0, z_1$ of two digits, the straight line $(1 - t) z_0 + t z_1$ is the
# obvious path. In $q$ dimensions, though, prior draws concentrate on a shell of radius about
# $\sqrt{q}$, and two codes are nearly orthogonal, so the midpoint of the line is shorter than
# either end (by about $1/\sqrt 2$ for orthogonal codes of equal norm): the line cuts through
# the low-norm interior that typical codes avoid. The prior *density* is highest there, but
# that is the mode, not where the codes live. Spherical interpolation (slerp, Shoemake 1985;
# White 2016, arXiv:1609.04468) follows the great circle instead and keeps the norm when the
# endpoints have equal norms. We compare both on the $q = 10$ VAE between a held-out "2" and a
# held-out "7", and measure the norm dip over many random pairs of held-out codes: the
# midpoint's norm divided by the mean norm of the two ends, and the share of held-out codes
# shorter than that midpoint.

# %%
STEPS = 9
i0 = int((y_test == 2).nonzero()[0])
i1 = int((y_test == 7).nonzero()[0])
z0, z1 = latent.encode(vae10, x_test[[i0, i1]])
codes10 = latent.encode(vae10, x_test)
code_norms = codes10.norm(dim=1)
print(
    f"held-out code norms |E_q[z | x]|: median {code_norms.median():.2f}; sqrt(q) = "
    f"{math.sqrt(10):.2f}; the two endpoints {z0.norm():.2f} and {z1.norm():.2f}"
)
for method in latent.INTERPOLATION_METHODS:
    norms = latent.interpolate(z0, z1, STEPS, method).norm(dim=1)
    print(f"{method:6s}: norm along the 2 -> 7 path {fmt(norms)}")
    show(
        latent.interpolation_figure(vae10, x_test[i0], x_test[i1], STEPS, IMAGE_SHAPE, method),
        f"interpolation_{method}",
    )
pairs = torch.randint(len(x_test), (PAIRS, 2), generator=torch.Generator().manual_seed(SEED))
for method in latent.INTERPOLATION_METHODS:
    mids = torch.stack([latent.interpolate(codes10[a], codes10[b], 3, method)[1] for a, b in pairs])
    ratio = mids.norm(dim=1) / code_norms[pairs].mean(1)
    below = (code_norms[None, :] < mids.norm(dim=1)[:, None]).float().mean(1)
    print(
        f"{method:6s}, {PAIRS} random pairs: midpoint norm / mean end norm, median "
        f"{ratio.median():.2f}; median share of held-out codes shorter than the midpoint "
        f"{below.median():.2f}"
    )

# %% [markdown]
# ### Traversals
#
# A traversal changes one coordinate of $z$ and keeps the others fixed. For PPCA the decoded
# mean $W z + \mu$ is affine in $z$, so a traversal adds a multiple of one fixed image (a column
# of $W$) and every step changes the picture by the same amount (up to rounding: the sizes
# printed below agree). For the VAE the change can
# depend on where we are: that is the nonlinearity. We traverse both 2-D models from the origin
# and the three most used dimensions of the $q = 10$ VAE (largest KL, see section 5) from the
# code of the held-out "2".

# %%
values = torch.linspace(-2.5, 2.5, 9)
for name, model in (("ppca2", ppca2), ("vae2", vae2)):
    fig = latent.traversal_figure(model, torch.zeros(2), [0, 1], values, IMAGE_SHAPE)
    fig.suptitle(f"{name}: z[d] from -2.5 to 2.5, the other coordinate 0", fontsize=9)
    show(fig, f"traversal_{name}")
    means = latent.traverse(model, torch.zeros(2), 0, values)
    steps = (means[1:] - means[:-1]).norm(dim=1)
    print(
        f"{name}: Euclidean size of the {len(steps)} traversal steps along z[0] in pixel "
        f"space: min {steps.min():.3f}, max {steps.max():.3f}"
    )
kl10 = latent.kl_per_dimension(vae10, x_test)
top = kl10.argsort(descending=True)[:3].tolist()
fig = latent.traversal_figure(vae10, z0, top, values, IMAGE_SHAPE)
fig.suptitle(f"VAE q = 10: dimensions {top} from the code of a '2'", fontsize=9)
show(fig, "traversal_vae10")

# %% [markdown]
# ## 5. How much of the latent space is used: active units and KL per dimension
#
# Two measures from the VAE literature:
#
# * **active units** (Burda et al. 2016, arXiv:1509.00519): unit $u$ is active when the code
#   moves with the data, $A_u = \mathrm{Var}_x(\mathbb{E}_q[z_u \mid x]) > 0.01$;
# * **KL per dimension**: the average over the data of $\mathrm{KL}(q(z_u \mid x) \,\|\,
#   \mathcal{N}(0, 1))$, the nats per digit that dimension $u$ carries. An unused dimension
#   has $q(z_u \mid x) = \mathcal{N}(0, 1)$ for every $x$ ("posterior collapse" of that unit)
#   and costs nothing.
#
# For PPCA both have closed forms. With the closed-form fit, the posterior of dimension $u$
# has variance $\sigma^2 / \lambda_u$ and its mean has variance $(\lambda_u - \sigma^2) /
# \lambda_u$ over the training data, so its KL is
# $\tfrac12 \log(\lambda_u / \sigma^2)$: PPCA uses every dimension, the more the larger its
# eigenvalue. We check the identity on the training digits.

# %%
kl_ppca_train = latent.kl_per_dimension(ppca10, x_train)
closed = 0.5 * (eigenvalues[:10] / ppca10.noise_variance_).log()
print(
    "PPCA q = 10, training digits: max |KL per dim - 1/2 log(lambda_u / sigma^2)| = "
    f"{(kl_ppca_train - closed).abs().max():.2e} nats"
)
usage = {}
for name, model in (("PPCA q = 10", ppca10), ("VAE q = 10", vae10)):
    units = latent.active_units(model, x_test)
    kl = latent.kl_per_dimension(model, x_test)
    usage[name] = (units, kl)
    print(
        f"{name}: {units.count} of 10 units active (threshold {units.threshold}); held-out "
        f"KL per dimension {fmt(kl)}, total {kl.sum():.2f} nats"
    )

fig, axes = plt.subplots(1, 2, figsize=(8, 3), layout="constrained", sharey=True)
for ax, (name, (units, kl)) in zip(axes, usage.items(), strict=True):
    order = kl.argsort(descending=True)
    ax.bar(range(10), kl[order], color=["C0" if a else "C3" for a in units.active[order]])
    ax.set(title=f"{name} (red: inactive)", xlabel="latent dimension, sorted", ylabel="nats")
show(fig, "kl_per_dimension")

# %% [markdown]
# PPCA's KL is spread over all ten dimensions by construction. The VAE decides for itself: the
# KL term of its ELBO charges for every nat a dimension carries, so a dimension that does not
# improve the reconstruction by more than it costs is switched off. How many stay on depends on
# the decoder, the data and the training budget.
#
# ## 6. Held-out log-likelihood: compare like with like
#
# `probgen.evaluate.log_likelihood(model, x)` estimates $\frac1N \sum_n \log p(x_n)$ on held-out
# digits: exactly for PPCA ($x \sim \mathcal{N}(\mu, W W^\top + \sigma^2 I)$) and by importance
# sampling from the encoder for a VAE,
# $\log \frac1K \sum_k p(x_n, z_k) / q(z_k \mid x_n)$ with $z_k \sim q(z \mid x_n)$, a
# stochastic lower bound that tightens as $K$ grows (Burda et al. 2016).
#
# **PPCA's number and the Bernoulli VAE's number must not be compared.** PPCA is a Gaussian
# *density* on $\mathbb{R}^{784}$: its log-likelihood is measured against volume, depends on the
# units of the pixels, and can be positive (a density can exceed 1). The Bernoulli VAE defines a
# *probability mass function* on $\{0, 1\}^{784}$: $\log p(x) \le 0$ always, and $-\log_2 p(x)$
# is the number of bits a lossless code built from the model needs for $x$. A density puts
# positive mass on every non-binary image too; it can be made arbitrarily large at the binary
# points without ever being a better model of binary digits. We show the unit dependence
# directly: fitting PPCA to the same digits with pixels in $\{0, c\}$ instead of $\{0, 1\}$
# shifts every log-density by exactly $-D \log c$, while the digits, and any probability of
# them, are unchanged.

# %%
ll = {}  # per-digit held-out log-likelihoods
for name, model in (("PPCA q = 2", ppca2), ("PPCA q = 10", ppca10)):
    ll[name] = log_likelihood_pointwise(model, x_test)
SCALE = 2.0
ppca10_scaled = PPCA(n_components=10)
ppca10_scaled.fit_closed_form(SCALE * x_train)
shift = (log_likelihood_pointwise(ppca10_scaled, SCALE * x_test) - ll["PPCA q = 10"]).mean()
print(
    f"PPCA q = 10 held-out log-density: {ll['PPCA q = 10'].mean():.2f} nats per digit on pixels "
    f"in {{0, 1}}; {ll['PPCA q = 10'].mean() + shift:.2f} on pixels in {{0, {SCALE:g}}}: "
    f"shift {shift:.3f}, -D log c = {-D * math.log(SCALE):.3f}"
)
print(f"largest held-out PPCA q = 10 log-density: {ll['PPCA q = 10'].max():.2f} nats (> 0)")

# %% [markdown]
# ### Bernoulli models: a VAE against a factorised Bernoulli baseline
#
# The fair baseline for a Bernoulli VAE is another probability mass function on the same binary
# images. The simplest has no latent variable at all: independent pixels,
# $p(x) = \prod_d \pi_d^{x_d} (1 - \pi_d)^{1 - x_d}$ with $\pi_d$ the share of training digits
# whose pixel $d$ is on (add-one smoothed, because some border pixels are never on in training
# and a held-out digit with such a pixel on would otherwise get probability 0). Whatever the
# VAEs gain over it is what the latent variable buys. We also report the ELBO: the importance-
# sampled estimate should lie above it, the gap being (at most) the KL from the encoder to the
# true posterior. Differences are paired (the same held-out digits for every model), with
# their own standard errors.

# %%
pixel_probs = (x_train.sum(0) + 1) / (len(x_train) + 2)
ll["factorised Bernoulli"] = dist.Bernoulli(probs=pixel_probs).to_event(1).log_prob(x_test)
elbos = {}
for name, model in (("VAE q = 2", vae2), ("VAE q = 10", vae10)):
    ll[name] = log_likelihood_pointwise(model, x_test, num_particles=IS_PARTICLES)
    elbos[name] = latent.elbo_split(model, x_test, ELBO_DRAWS, seed=SEED)
print(f"held-out log p(x) in nats per digit (IS with K = {IS_PARTICLES} particles for VAEs):")
for name in ("factorised Bernoulli", "VAE q = 2", "VAE q = 10"):
    value, se = mean_se(ll[name])
    line = f"  {name:21s} {value:9.2f} ± {se:.2f}  ({bits_per_dim(value, D).value:.4f} bits/pixel)"
    if name in elbos:
        split = elbos[name]
        line += (
            f"; ELBO {split.elbo.value:.2f} = reconstruction {split.reconstruction.value:.2f}"
            f" - KL {split.kl.value:.2f}"
        )
    print(line)
for name in ("VAE q = 2", "VAE q = 10"):
    gain, se = mean_se(ll[name] - ll["factorised Bernoulli"])
    print(f"  {name} - factorised Bernoulli: {gain:+.2f} ± {se:.2f} nats per digit (paired)")

# %% [markdown]
# ### Gaussian models: PPCA against a linear Gaussian VAE
#
# If PPCA is to be compared with a VAE, the VAE must also be a Gaussian density. `VAE(...,
# hidden=(), likelihood="gaussian")` has a linear decoder and a linear encoder: its model is
# exactly PPCA's, $x \mid z \sim \mathcal{N}(W z + \mu, \sigma^2 I)$, and only the inference
# differs (an amortised diagonal Gaussian encoder and stochastic gradients instead of the
# eigendecomposition). We fix its $\sigma$ at PPCA's maximum-likelihood value, so the two
# models share their family and PPCA's closed form is the optimum the VAE is climbing towards.
# Lucas et al. (2019, "Don't Blame the ELBO! A Linear VAE Perspective on Posterior Collapse",
# arXiv:1911.02469) show that at that optimum the diagonal Gaussian encoder is the exact
# posterior, so the ELBO equals $\log p(x)$ there; before it, the VAE's held-out
# log-likelihood should stay below PPCA's (up to the train/test difference and Monte Carlo
# error), and the distance left is unfinished optimisation.

# %%
linear = VAE(
    D,
    latent_dim=10,
    hidden=(),
    likelihood="gaussian",
    obs_scale=float(ppca10.noise_variance_.sqrt()),
)
fit_vae(linear, "linear Gaussian VAE q = 10", epochs=LINEAR_EPOCHS, lr=5e-3)
ll["linear Gaussian VAE q = 10"] = log_likelihood_pointwise(
    linear, x_test, num_particles=IS_PARTICLES
)
elbos["linear Gaussian VAE q = 10"] = latent.elbo_split(linear, x_test, ELBO_DRAWS, seed=SEED)
print("held-out log-density in nats per digit (Gaussian densities: comparable with each other):")
for name in ("PPCA q = 2", "PPCA q = 10", "linear Gaussian VAE q = 10"):
    value, se = mean_se(ll[name])
    line = f"  {name:27s} {value:9.2f} ± {se:.2f}"
    if name in elbos:
        line += f"; ELBO {elbos[name].elbo.value:.2f}"
    print(line)
gap, se = mean_se(ll["linear Gaussian VAE q = 10"] - ll["PPCA q = 10"])
print(f"  linear Gaussian VAE - PPCA (q = 10): {gap:+.2f} ± {se:.2f} nats per digit (paired)")

# %% [markdown]
# ## 7. Why VAE latent spaces are continuous
#
# Decoding a point *between* two codes gives a plausible digit only if the decoder was trained
# near that point. During training the decoder only sees draws $z \sim q_\phi(z \mid x_n)$ for
# training digits $x_n$, so what matters is whether those draws cover the space. The KL term
# $\mathrm{KL}(q_\phi(z \mid x) \,\|\, \mathcal{N}(0, I))$ does two things: it pulls every
# $q_\phi(z \mid x)$ towards the origin, and it penalises $\log \sigma_\phi$ going to
# $-\infty$, so each digit's posterior keeps a width and neighbouring posteriors overlap.
#
# To see the effect we train the same $q = 2$ VAE with the KL term weighted by
# $\beta = 10^{-3}$ (`VAE(..., beta=1e-3)`, the $\beta$-VAE objective of Higgins et al. 2017 with a
# tiny $\beta$): almost a plain autoencoder, free to spread its codes and shrink its
# posteriors. We measure
#
# * the posterior standard deviation against the spread of the codes;
# * **holes**: the share of points $z$ farther than 3 posterior standard deviations
#   (Mahalanobis distance under $q(z \mid x_n)$) from *every* training digit's posterior,
#   i.e. points where the decoder was essentially never trained, for draws from the prior and
#   for the straight path between a held-out "2" and a held-out "7";
# * the reconstruction term of the ELBO on training and on held-out digits, and the KL: what,
#   if anything, the autoencoder buys with its freedom.

# %%
vae2_ae = fit_vae(VAE(D, latent_dim=2, hidden=HIDDEN, beta=1e-3), "VAE q = 2, beta = 1e-3")


@torch.no_grad()
def hole_share(model, z):
    """Share of the codes ``z`` [M, q] beyond HOLE_RADIUS posterior sds of every training digit."""
    posterior = model.posterior(x_train).base_dist  # diagonal Normal [N, q]
    nearest = torch.cat(
        [
            ((chunk[:, None] - posterior.loc) / posterior.scale).norm(dim=-1).min(1).values
            for chunk in z.split(100)
        ]
    )
    return (nearest > HOLE_RADIUS).float().mean().item()


z_prior = torch.randn(PRIOR_DRAWS, 2, generator=torch.Generator().manual_seed(SEED))
continuity = {}
path_rows, prior_rows = [], []
for name, model in (("beta = 1e-3", vae2_ae), ("beta = 1", vae2)):
    with torch.no_grad():
        post = model.posterior(x_test).base_dist
    codes = post.loc
    ends = latent.encode(model, x_test[[i0, i1]])
    path = latent.interpolate(ends[0], ends[1], 25)
    split = latent.elbo_split(model, x_test, ELBO_DRAWS, seed=SEED)
    recon_train = latent.elbo_split(model, x_train, ELBO_DRAWS, seed=SEED).reconstruction.value
    continuity[name] = (hole_share(model, z_prior), hole_share(model, path), split, recon_train)
    print(
        f"{name:12s}: code sd {fmt(codes.std(0), 3)}, median posterior sd "
        f"{fmt(post.scale.median(0).values, 3)}; holes: {100 * continuity[name][0]:.1f}% of "
        f"prior draws, {100 * continuity[name][1]:.0f}% of the 2 -> 7 path"
    )
    print(
        f"{'':12s}  reconstruction term {recon_train:.2f} (training digits), "
        f"{split.reconstruction.value:.2f} (held out); held-out KL {split.kl.value:.2f} nats"
    )
    path_rows.append(latent.decode(model, latent.interpolate(ends[0], ends[1], 10)))
    prior_rows.append(latent.decode(model, z_prior[:10]))
fig = image_rows(
    path_rows + prior_rows,
    ["path, β=1e-3", "path, β=1", "prior, β=1e-3", "prior, β=1"],
    "decoded means: a straight path between two codes, and ten draws z ~ N(0, I)",
)
show(fig, "continuity")

# %% [markdown]
# With $\beta \approx 0$ nothing keeps the posteriors wide: their standard deviations shrink to
# a small fraction of the spread of the codes, and the codes drift away from the prior's unit
# scale. Prior draws, and parts of a straight path between two codes, then fall into holes
# where the decoder's output is an extrapolation (see the figure), and sampling
# $z \sim \mathcal{N}(0, I)$ no longer draws from what the network learned. With $\beta = 1$
# the posteriors overlap around the origin and holes are rare.
#
# Dropping the KL term is usually defended by sharper reconstructions. Whether it bought any
# here is read off the reconstruction terms above, on training *and* held-out digits: tiny
# posteriors can let an autoencoder fit its training digits better without reconstructing new
# digits any better. (Two dimensions and one seed make this an illustration, not a
# benchmark.)
#
# ## 8. What to remember
#
# The numbers are read off the results above (rerun the tutorial and they update).

# %%
print(
    f"* 2-D codes: a {KNN_K}-NN classifier on held-out codes gets {knn['ppca']:.2f} of the labels "
    f"right for PPCA and {knn['vae']:.2f} for the VAE; neither saw a label."
)
(units10, kl_vae10), (units_p, _) = usage["VAE q = 10"], usage["PPCA q = 10"]
print(
    f"* The q = 10 VAE keeps {units10.count} of 10 units active ({kl_vae10.sum():.1f} nats of "
    f"KL); PPCA uses all {units_p.count}, with KL 1/2 log(lambda_u / sigma^2) per dimension."
)
gain2, _ = mean_se(ll["VAE q = 2"] - ll["factorised Bernoulli"])
gain10, _ = mean_se(ll["VAE q = 10"] - ll["factorised Bernoulli"])
print(
    f"* Bernoulli pmfs: held-out log p(x) minus that of independent pixels is {gain2:+.1f} "
    f"(q = 2) and {gain10:+.1f} (q = 10) nats per digit: what the latent variable buys."
)
ll_lin, ll_ppca = ll["linear Gaussian VAE q = 10"].mean(), ll["PPCA q = 10"].mean()
print(
    f"* Gaussian densities: the linear Gaussian VAE reaches {ll_lin:.1f} nats against PPCA's "
    f"closed-form {ll_ppca:.1f} (the same model family). PPCA's {ll_ppca:.1f} and the "
    f"Bernoulli VAE's {ll['VAE q = 10'].mean():.1f} are a log-density and a log-probability: "
    f"not comparable (pixels in {{0, 2}} moved PPCA's by {shift:.0f} nats)."
)
(holes_ae, path_ae, split_ae, train_ae), (holes_vae, path_vae, split_vae, train_vae) = (
    continuity.values()
)
print(
    f"* Continuity: holes hold {100 * holes_ae:.0f}% of prior draws and {100 * path_ae:.0f}% of "
    f"the 2 -> 7 path at beta = 1e-3, {100 * holes_vae:.0f}% and {100 * path_vae:.0f}% at "
    f"beta = 1. Reconstruction term (training / held out): {train_ae:.1f} / "
    f"{split_ae.reconstruction.value:.1f} nats at beta = 1e-3, {train_vae:.1f} / "
    f"{split_vae.reconstruction.value:.1f} at beta = 1."
)
