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
# # Conditional VAEs: asking for a digit, and changing its label
#
# A VAE models $p(x)$; a **conditional VAE** (CVAE; Sohn, Lee & Yan 2015, "Learning Structured
# Output Representation using Deep Conditional Generative Models", NeurIPS) models $p(x \mid
# y)$ for a label $y$ that is observed both when training and when generating:
#
# $$ z \sim \mathcal{N}(0, I_q), \qquad x \mid z, y \sim \mathrm{Bernoulli}\big(\text{logits}
#    = f_\theta(z, y)\big), \qquad q_\phi(z \mid x, y) = \mathcal{N}\big(\mu_\phi(x, y),
#    \operatorname{diag} \sigma^2_\phi(x, y)\big). $$
#
# The label enters the decoder and the encoder (as a one-hot vector concatenated to their
# inputs), and the ELBO bounds $\log p_\theta(x \mid y)$ instead of $\log p_\theta(x)$. Since
# the decoder is told the label, the latent code no longer has to carry it and is free to
# describe everything else: *style* (slant, stroke width, size). Two things follow, and we try
# both: we can ask for a digit of a given class, and we can keep a digit's style while changing
# its class.
#
# In `probgen` a CVAE is `VAE(..., n_classes=10)`, fitted with
# `probgen.fit(cvae, x, context={"y": labels})`; labels are then passed wherever the model
# runs: `cvae.sample(n, y=3)`, `probgen.latent.encode(cvae, x, y=y)`,
# `probgen.evaluate.log_likelihood(cvae, x, context={"y": y})`.
#
# Run it as a script (`python tutorials/04_conditional_vae.py`) or open it as a notebook with
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
import torch
from torch.nn import functional as F

import probgen
from models.vae import VAE
from probgen import latent
from probgen.data import load_mnist_idx
from probgen.evaluate import log_likelihood_pointwise

SEED = 0
IMAGE_SHAPE = (28, 28)
D = IMAGE_SHAPE[0] * IMAGE_SHAPE[1]
N_CLASSES = 10
LATENT_DIM = 10
HIDDEN = (256,)  # one hidden layer of 256 units in encoder and decoder
BATCH = 256
LR = 2e-3
KNN_K = 5  # neighbours of the k-nearest-neighbour label check of the codes
CLASSIFIER_L2 = 1e-3  # weight decay of the checking classifier (mean cross-entropy + L2 |W|^2)

# Budgets. The full run takes a few minutes on two CPU cores; the smoke run well under one.
if SMOKE:
    N_TRAIN, N_TEST = 1000, 200
    EPOCHS, CLASSIFIER_ITERS = 1, 20
    IS_PARTICLES, SWEEP_PARTICLES, PER_CLASS = 8, 4, 6
else:
    N_TRAIN, N_TEST = 8000, 2000
    EPOCHS, CLASSIFIER_ITERS = 30, 200
    IS_PARTICLES, SWEEP_PARTICLES, PER_CLASS = 200, 50, 100

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
        path = FIGURE_DIR / f"04_{name}.png"
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


def image_grid(images, row_labels, col_labels, suptitle):
    """A grid of 28 x 28 images, ``images`` ``[rows, cols, 784]``."""
    rows, cols = images.shape[:2]
    fig, axes = plt.subplots(
        rows, cols, figsize=(0.8 * cols, 0.85 * rows + 0.4), squeeze=False, layout="constrained"
    )
    for i in range(rows):
        for j in range(cols):
            ax = axes[i, j]
            ax.imshow(images[i, j].detach().reshape(IMAGE_SHAPE), cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if j == 0:
                ax.set_ylabel(row_labels[i], fontsize=7)
            if i == 0 and col_labels:
                ax.set_title(col_labels[j], fontsize=7)
    fig.suptitle(suptitle, fontsize=9)
    return fig


def mean_se(values):
    """Mean and standard error of per-digit values."""
    return values.mean().item(), (values.std() / math.sqrt(len(values))).item()


# %% [markdown]
# ## 1. Data
#
# As in tutorial 03: the 10,000 digits of MNIST's test set with their labels, binarized by a
# threshold (pixel on when its grey level is at least 128 of 255), split at random into
# training digits and held-out digits.

# %%
mnist = find_mnist()
x_all, y_all = load_mnist_idx(
    mnist / "t10k-images-idx3-ubyte.gz", mnist / "t10k-labels-idx1-ubyte.gz", binarize="threshold"
)
perm = torch.randperm(len(x_all), generator=torch.Generator().manual_seed(SEED))
train_idx, test_idx = perm[:N_TRAIN], perm[N_TRAIN : N_TRAIN + N_TEST]
x_train, y_train = x_all[train_idx], y_all[train_idx]
x_test, y_test = x_all[test_idx], y_all[test_idx]
label_freq = torch.bincount(y_train, minlength=N_CLASSES).float() / len(y_train)
print(f"train {len(x_train)}, held out {len(x_test)} digits of {D} binary pixels")
print("training label frequencies:", [round(p, 3) for p in label_freq.tolist()])

# %% [markdown]
# ## 2. A referee: a classifier to check generated digits
#
# Whether a generated image "is a 3" is a judgement. To make it a number we train a plain
# multinomial logistic regression on the training digits (mean cross-entropy plus
# `CLASSIFIER_L2` $\|W\|^2$, by L-BFGS) and use it only to label generated images. Its held-out
# accuracy says how far to trust it.

# %%
classifier = torch.nn.Linear(D, N_CLASSES)
optimizer = torch.optim.LBFGS(
    classifier.parameters(), max_iter=CLASSIFIER_ITERS, line_search_fn="strong_wolfe"
)


def closure():
    optimizer.zero_grad()
    loss = F.cross_entropy(classifier(x_train), y_train)
    loss = loss + CLASSIFIER_L2 * classifier.weight.square().sum()
    loss.backward()
    return loss


optimizer.step(closure)


@torch.no_grad()
def classify(images):
    return classifier(images).argmax(-1)


referee_accuracy = (classify(x_test) == y_test).float().mean().item()
print(f"referee's accuracy on held-out digits: {referee_accuracy:.3f}")

# %% [markdown]
# ## 3. Fitting a CVAE and, for comparison, a VAE
#
# Both have the same networks (one hidden layer of 256 units, $q = 10$); the CVAE's encoder and
# decoder take the one-hot label as 10 extra inputs. The only change to the training call is
# the `context`: it holds per-datum keyword arguments of the model and guide, batched along
# with the data.


# %%
def fit(model, context=None):
    result = probgen.fit(
        model,
        x_train,
        method="svi",
        epochs=EPOCHS,
        batch_size=BATCH,
        lr=LR,
        seed=SEED,
        progress=False,
        context=context,
    )
    print(
        f"{type(model).__name__}(n_classes={model.n_classes}): {result.n_iter} steps in "
        f"{result.wall_time:.0f} s; last minibatch {result.objective} {result.final_objective:.2f}"
    )
    return model


cvae = fit(VAE(D, LATENT_DIM, HIDDEN, n_classes=N_CLASSES), context={"y": y_train})
vae = fit(VAE(D, LATENT_DIM, HIDDEN))

# %% [markdown]
# ### The code needs the label less
#
# The VAE has to put the class somewhere, and the only place is $z$; the CVAE gets the class for
# free, so its code has less reason to carry it. Less, not none: style and class are
# correlated (how much ink, how round, how slanted a digit is says something about which digit
# it is), and nothing in the objective removes that from $z$. A $k$-nearest-neighbour
# classifier on the codes of held-out digits (trained on the codes of the training digits)
# measures how much label information the codes hold. The scatters show the codes' first two
# principal components, coloured by label.


# %%
def knn_accuracy(z_train, z_test):
    nearest = torch.cdist(z_test, z_train).topk(KNN_K, largest=False).indices
    return (y_train[nearest].mode(dim=1).values == y_test).float().mean().item()


codes = {
    "VAE": (latent.encode(vae, x_train), latent.encode(vae, x_test)),
    "CVAE": (latent.encode(cvae, x_train, y=y_train), latent.encode(cvae, x_test, y=y_test)),
}
knn = {name: knn_accuracy(*pair) for name, pair in codes.items()}
for name, acc in knn.items():
    print(f"{name:4s}: {KNN_K}-NN label accuracy from the {LATENT_DIM}-D codes {acc:.3f}")
print(f"(guessing the most frequent label: {torch.bincount(y_test).max() / len(y_test):.3f})")
fig = latent.latent_scatter(cvae, x_test, y_test, y=y_test)
fig.axes[0].set_title("CVAE: held-out codes, coloured by label", fontsize=9)
show(fig, "scatter_cvae")
fig = latent.latent_scatter(vae, x_test, y_test)
fig.axes[0].set_title("VAE: held-out codes, coloured by label", fontsize=9)
show(fig, "scatter_vae")

# %% [markdown]
# ## 4. Asking for a class
#
# `cvae.sample(n, y=c)` draws $z \sim \mathcal{N}(0, I)$ and then $x \sim p(x \mid z, c)$: the
# Bernoulli draws, speckled because every pixel is sampled independently given $z$. The decoded
# means $\mathbb{E}[x \mid z, c]$ show the shapes more clearly; below, each *column* uses one
# $z$ for all ten classes, so what a column shares is what $z$ encodes. The referee then
# labels `PER_CLASS` Bernoulli draws and `PER_CLASS` decoded means of every class (it was
# trained on clean binary digits, so the speckle of the draws may cost some accuracy).

# %%
grid_samples = torch.stack([cvae.sample(8, y=c) for c in range(N_CLASSES)])
show(
    image_grid(grid_samples, [f"y = {c}" for c in range(N_CLASSES)], None, "cvae.sample(8, y=c)"),
    "samples_per_class",
)
z_shared = torch.randn(8, LATENT_DIM, generator=torch.Generator().manual_seed(SEED))
grid_means = torch.stack([latent.decode(cvae, z_shared, y=c) for c in range(N_CLASSES)])
show(
    image_grid(
        grid_means,
        [f"y = {c}" for c in range(N_CLASSES)],
        [f"z{j}" for j in range(8)],
        "decoded means E[x | z, y]: one z per column",
    ),
    "means_shared_z",
)
hits, hits_means = [], []
for c in range(N_CLASSES):
    hits.append((classify(cvae.sample(PER_CLASS, y=c)) == c).float().mean())
    z = torch.randn(PER_CLASS, LATENT_DIM)
    hits_means.append((classify(latent.decode(cvae, z, y=c)) == c).float().mean())
hits, hits_means = torch.stack(hits), torch.stack(hits_means)
print(f"share of {PER_CLASS} CVAE samples per class that the referee labels as asked:")
print("  Bernoulli draws: " + ", ".join(f"{c}: {h:.2f}" for c, h in enumerate(hits.tolist())))
print("  decoded means:   " + ", ".join(f"{c}: {h:.2f}" for c, h in enumerate(hits_means.tolist())))
print(
    f"  all classes: {hits.mean():.3f} (draws), {hits_means.mean():.3f} (means); chance "
    f"{1 / N_CLASSES:.2f}; the referee's own held-out accuracy {referee_accuracy:.3f}"
)
vae_labels = torch.bincount(classify(vae.sample(N_CLASSES * PER_CLASS)), minlength=N_CLASSES)
print(
    "the unconditional VAE cannot be asked; the referee's labels of its "
    f"{N_CLASSES * PER_CLASS} samples: {vae_labels.tolist()}"
)

# %% [markdown]
# ## 5. Style transfer: same $z$, another label
#
# Encode a held-out digit with its own label, $z = \mathbb{E}_q[z \mid x, y]$, and decode it
# with every other label. If the code holds the style and the label the class, each row keeps
# the handwriting of its source digit. Two checks over all held-out digits: the referee's
# verdict on every transfer, and whether stroke weight survives, measured by the correlation
# between the ink of a source digit (its number of on pixels) and the mean expected ink
# $\sum_d \mathbb{E}[x_d \mid z, y']$ of its ten decodings.

# %%
z_test = latent.encode(cvae, x_test, y=y_test)
labels = torch.arange(N_CLASSES)
transfers = torch.stack([latent.decode(cvae, z.expand(N_CLASSES, -1), y=labels) for z in z_test])
SHOW = 6
images = torch.cat([x_test[:SHOW, None], transfers[:SHOW]], dim=1)
show(
    image_grid(
        images,
        [f"a {int(y)}" for y in y_test[:SHOW]],
        ["data"] + [f"as {c}" for c in range(N_CLASSES)],
        "held-out digits decoded with every label",
    ),
    "style_transfer",
)
transfer_hits = (classify(transfers.reshape(-1, D)).reshape(-1, N_CLASSES) == labels).float()
ink_source = x_test.sum(1)
ink_transfer = transfers.sum(-1).mean(1)
ink_corr = torch.corrcoef(torch.stack([ink_source, ink_transfer]))[0, 1].item()
print(
    f"referee agrees with the new label for {transfer_hits.mean():.3f} of "
    f"{transfer_hits.numel()} transfers; correlation of source ink with transferred ink "
    f"{ink_corr:.2f}"
)

# %% [markdown]
# Changing the label works only as far as the code has left the class to the label: where $z$
# itself still says "9" (section 3 measured how much label information the codes keep), the
# decoder receives contradictory instructions and the transfer comes out as a blend. The
# referee's agreement above and the figure show how often that happens here.

# %% [markdown]
# ## 6. Held-out likelihood: $\log p(x \mid y)$ against $\log p(x)$
#
# `probgen.evaluate.log_likelihood(cvae, x, context={"y": y})` estimates
# $\frac1N\sum_n \log p(x_n \mid y_n)$ by importance sampling from the encoder
# $q(z \mid x_n, y_n)$ (Burda et al. 2016, arXiv:1509.00519); for the VAE the same call without
# `context` estimates $\frac1N \sum_n \log p(x_n)$. It returns the mean and standard error of
# the per-digit values of `log_likelihood_pointwise`, which we call directly because paired
# differences between models need the per-digit values. Both are log-probabilities of the same
# binary images, but of different events, and Bayes' rule relates them:
#
# $$ \log p(x \mid y) = \log p(x) + \log p(y \mid x) - \log p(y). $$
#
# Since $\log p(y \mid x) \le 0$, $\log p(x \mid y) - \log p(x) \le -\log p(y)$ *within one
# model*: knowing the label can save at most the $-\log p(y)$ nats it takes to encode the label
# itself; on average at most the entropy of the labels, about $\log 10 \approx 2.30$ nats,
# attained when the image determines its label. A higher $\log p(x \mid y)$ is therefore not,
# by itself, a better model of the images.
#
# The CVAE's conditional and the VAE's marginal come from two models, so the difference
# between them mixes two things. The CVAE separates them: with the label frequencies $\pi_c$ as
# $p(y)$ it defines the marginal $p(x) = \sum_c \pi_c\, p(x \mid c)$, a model of unlabelled
# images comparable with the VAE, and a classifier $p(y \mid x) \propto \pi_y\, p(x \mid y)$.
# Then, exactly,
#
# $$ \underbrace{\log p_{\mathrm{CVAE}}(x \mid y) - \log p_{\mathrm{VAE}}(x)}_{\text{the
#    naive comparison}} = \underbrace{\log p_{\mathrm{CVAE}}(x \mid y) - \log
#    p_{\mathrm{CVAE}}(x)}_{= \log p(y \mid x) - \log \pi_y \;\le\; -\log \pi_y} +
#    \underbrace{\log p_{\mathrm{CVAE}}(x) - \log p_{\mathrm{VAE}}(x)}_{\text{two models of
#    } p(x)}. $$
#
# We estimate $\log p(x \mid c)$ for all ten labels of every held-out digit, with fewer
# particles (ten times the work), and use the same number of particles for every term of the
# decomposition. A caveat: for a wrong label the encoder $q(z \mid x, c)$ was never trained, so
# it is a poorer proposal and the importance estimate, a lower bound in expectation, is looser;
# that biases $p(x \mid c)$ for wrong labels downwards, the marginal slightly downwards, and the
# classifier's confidence upwards.

# %%
ll_cond = log_likelihood_pointwise(cvae, x_test, num_particles=IS_PARTICLES, context={"y": y_test})
ll_vae = log_likelihood_pointwise(vae, x_test, num_particles=IS_PARTICLES)
print(f"held-out nats per digit, K = {IS_PARTICLES} particles:")
for name, values in (("CVAE log p(x | y)", ll_cond), ("VAE  log p(x)", ll_vae)):
    value, se = mean_se(values)
    print(f"  {name:18s} {value:9.2f} ± {se:.2f}")
naive, naive_se = mean_se(ll_cond - ll_vae)
print(f"  difference         {naive:+9.2f} ± {naive_se:.2f} (paired)")

sweep = torch.stack(
    [
        log_likelihood_pointwise(
            cvae, x_test, num_particles=SWEEP_PARTICLES, context={"y": torch.full_like(y_test, c)}
        )
        for c in range(N_CLASSES)
    ],
    dim=1,
)  # [N, classes]: log p(x_n | c)
log_joint = sweep + label_freq.log()
ll_marginal = log_joint.logsumexp(1)  # the CVAE's log p(x) = log sum_c pi_c p(x | c)
log_posterior = log_joint - ll_marginal[:, None]  # the CVAE's log p(c | x)
rows = torch.arange(len(y_test))
own = sweep[rows, y_test]
ll_vae_sweep = log_likelihood_pointwise(vae, x_test, num_particles=SWEEP_PARTICLES)
label_nats = -label_freq.log()[y_test].mean().item()
naive_k, naive_k_se = mean_se(own - ll_vae_sweep)
within, within_se = mean_se(own - ll_marginal)
marginal_gap, marginal_se = mean_se(ll_marginal - ll_vae_sweep)
print(f"the decomposition, K = {SWEEP_PARTICLES} particles for every term (paired, nats/digit):")
print(f"  CVAE log p(x|y) - VAE log p(x)          {naive_k:+7.2f} ± {naive_k_se:.2f}")
print(
    f"  = CVAE log p(x|y) - CVAE log p(x)        {within:+7.2f} ± {within_se:.2f}  "
    f"(<= -mean log pi_y = {label_nats:.2f}; mean log p(y|x) = "
    f"{log_posterior[rows, y_test].mean():.3f})"
)
print(f"  + CVAE log p(x) - VAE log p(x)          {marginal_gap:+7.2f} ± {marginal_se:.2f}")
generative_accuracy = (log_posterior.argmax(1) == y_test).float().mean().item()
print(
    f"the CVAE as a classifier, argmax_c pi_c p(x|c): held-out accuracy "
    f"{generative_accuracy:.3f} (the referee: {referee_accuracy:.3f})"
)

# %% [markdown]
# Reading the decomposition: the first term is what the label is worth to the CVAE itself,
# never more than the label's own nats, and the closer to them the better the CVAE can tell the
# class from the image (its accuracy as a classifier is printed above). The second term compares
# two models of unlabelled images and can have either sign: the CVAE's marginal is a mixture of
# ten label-specific decoders, a discrete latent variable that the labels supervised, which may
# or may not model digits better than the VAE's single decoder. Only that second term says which
# model describes the images better; the naive comparison adds the label's information to it.

# %% [markdown]
# ## 7. What to remember
#
# The numbers are read off the results above (rerun the tutorial and they update).

# %%
print(
    f"* Label information in the codes ({KNN_K}-NN accuracy): {knn['VAE']:.2f} for the VAE, "
    f"{knn['CVAE']:.2f} for the CVAE, whose decoder is given the label."
)
print(
    f"* Asking for a class: the referee labels {hits.mean():.2f} of the CVAE's draws, "
    f"{hits_means.mean():.2f} of its decoded means and "
    f"{transfer_hits.mean():.2f} of the style transfers as asked (chance {1 / N_CLASSES:.2f}); "
    f"source and transferred ink correlate at {ink_corr:.2f}."
)
print(
    f"* CVAE log p(x|y) - VAE log p(x) = {naive_k:+.1f} nats (K = {SWEEP_PARTICLES}) splits "
    f"into {within:+.1f} nats of label information within the CVAE (at most {label_nats:.1f}) "
    f"and {marginal_gap:+.1f} nats by which the CVAE's marginal p(x) differs from the VAE's."
)
