"""Quality and sampling speed: a DDPM next to a VAE on binarized MNIST under one training budget.

(b) Likelihood. A DDPM (Ho, Jain & Abbeel 2020, arXiv:2006.11239; ``T`` linear-schedule steps,
v-prediction and learned variances by default (``--parameterization``, ``--variance``: on a
2,000-image, 320-step pilot these gave 2.59 bits/dim against 2.93 for v with beta_t, 3.20 for
x0 and 3.95 for eps, both learned), the binary decoder, the 784-512-512 time-conditioned MLP
with its pointwise path, or ``--network unet``) and the 784-400-50 VAE of Kingma & Welling
(2014) with a Bernoulli likelihood are trained by ``probgen.fit`` (Adam, batch 128, lr 1e-3
for both: Ho et al.'s 2e-4 assumes 800k steps) on the first ``--train-n`` images of the fixed
binarization (Larochelle & Murray 2011), for ``--epochs`` passes each, or (``--vae-budget
wall``) the VAE for as many epochs as fit in the DDPM's training time. On the first
``--test-n`` test images:

* DDPM: the negative bound ``L_vlb = L_T + sum_{t=2}^T L_{t-1} + L_0`` with all ``T`` terms
  (``probgen.evaluate.likelihood_bound``: analytic KLs at one ``x_t ~ q(x_t | x_0)`` per datum and
  step), per term (prior / diffusion / decoder) in bits per dimension;
* VAE: ``-log p(x)`` by importance sampling with ``--particles`` draws from the encoder
  (``probgen.evaluate.log_likelihood``), and its ``-ELBO`` split into KL and reconstruction.

Both are upper bounds on the test NLL (the IS estimate in expectation); bits/dim =
nats / (784 log 2). Standard errors are over test images.

(c) Sampling speed: samples per second of ancestral sampling (``T`` network calls,
``models.diffusion_sampling.ancestral``) and deterministic DDIM (``--ddim-steps`` calls, eta = 0,
``ddim``) for a batch of ``--sample-n``, after a warm-up call; with the mean pixel of the draws
next to the test data's as a sanity check.

``--smoke`` runs a tiny configuration (1,000 training images, 1 epoch, ``T = 100``, 100 test
images, 100 particles, 64 samples, one torch thread) in well under a minute; flags given
explicitly override it.

Usage::

    python benchmarks/diffusion_mnist.py --epochs 10 --test-n 1000 --out ddpm_mnist.json
    python benchmarks/diffusion_mnist.py --device cuda --epochs 100 --test-n 10000
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import probgen  # noqa: E402
from models.diffusion import DDPM  # noqa: E402
from models.diffusion_sampling import ancestral, ddim  # noqa: E402
from models.vae import VAE  # noqa: E402

BATCH, DDPM_LR, VAE_LR = 128, 1e-3, 1e-3
HIDDEN, CHANNELS = (512, 512), (32, 64)
VAE_LATENT, VAE_HIDDEN = 50, (400,)
D = 784

#: Budget and evaluation sizes: the full run and the ``--smoke`` one.
FULL = {
    "epochs": 10,
    "train_n": 50_000,
    "test_n": 1000,
    "T": 1000,
    "particles": 1000,
    "sample_n": 256,
    "ddim_steps": 50,
    "threads": None,
}
SMOKE = {
    "epochs": 1,
    "train_n": 1000,
    "test_n": 100,
    "T": 100,
    "particles": 100,
    "sample_n": 64,
    "ddim_steps": 50,
    # One thread: on a loaded machine, two threads' barriers cost more than they gain here.
    "threads": 1,
}


def _timed(fn: Callable[[], Any], device: torch.device) -> tuple[float, Any]:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start, out


def _fmt(est: Any, digits: int = 4) -> str:
    return f"{float(est.value):.{digits}f} ± {float(est.stderr):.{digits}f}"


def _vae_epochs(args: argparse.Namespace, x: Tensor, ddpm_seconds: float) -> int:
    """The VAE's epochs: ``--vae-epochs``, ``--epochs``, or those that fit in the DDPM's time
    (per-step cost measured on a short throw-away fit)."""
    if args.vae_epochs is not None:
        return int(args.vae_epochs)
    if args.vae_budget == "epochs":
        return int(args.epochs)
    fit_kw = {"batch_size": BATCH, "lr": VAE_LR, "seed": args.seed, "progress": False}
    seconds = []
    for steps in (10, 60):  # the difference leaves out fit's fixed costs
        vae = VAE(D, VAE_LATENT, VAE_HIDDEN).to(x.device)
        seconds.append(_timed(partial(probgen.fit, vae, x, steps=steps, **fit_kw), x.device)[0])
    per_epoch = max(seconds[1] - seconds[0], 1e-9) / 50 * math.ceil(x.shape[0] / BATCH)
    epochs = max(1, round(ddpm_seconds / per_epoch))
    print(
        f"VAE budget: the DDPM's {ddpm_seconds:.1f} s at ~{per_epoch:.2f} s/epoch: {epochs} epochs"
    )
    return epochs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--data", default=str(ROOT.parent / "shared/data/binarized_mnist/binarized_mnist.npz")
    )
    parser.add_argument("--smoke", action="store_true", help="tiny run (< 60 s on a laptop CPU)")
    parser.add_argument("--epochs", type=int, default=None, help=f"default {FULL['epochs']}")
    parser.add_argument("--vae-budget", choices=("epochs", "wall"), default="epochs")
    parser.add_argument("--vae-epochs", type=int, default=None, help="overrides --vae-budget")
    parser.add_argument("--train-n", type=int, default=None, help=f"default {FULL['train_n']}")
    parser.add_argument("--test-n", type=int, default=None, help=f"default {FULL['test_n']}")
    parser.add_argument("--T", type=int, default=None, help=f"default {FULL['T']}")
    parser.add_argument("--network", choices=("mlp", "unet"), default="mlp")
    parser.add_argument("--parameterization", choices=("eps", "x0", "v"), default="v")
    parser.add_argument("--variance", choices=("beta", "beta_tilde", "learned"), default="learned")
    parser.add_argument("--lr", type=float, default=DDPM_LR, help="DDPM learning rate")
    parser.add_argument("--particles", type=int, default=None, help="VAE IS draws (1000)")
    parser.add_argument("--sample-n", type=int, default=None, help="batch for sampling speed")
    parser.add_argument("--ddim-steps", type=int, default=None, help="default 50")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: all; 1 with --smoke)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="also write the results as JSON here")
    args = parser.parse_args()
    for key, value in (SMOKE if args.smoke else FULL).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda was asked for but CUDA is not available")

    x = probgen.data.load_binarized_mnist(args.data, "train")[: args.train_n].float().to(device)
    x_test = probgen.data.load_binarized_mnist(args.data, "test")[: args.test_n].float().to(device)
    torch.manual_seed(args.seed)
    ddpm = DDPM(
        D,
        steps=args.T,
        decoder="bernoulli",
        parameterization=args.parameterization,
        variance=args.variance,
        network=args.network,
        hidden=HIDDEN,
        image_shape=(28, 28),
        channels=CHANNELS,
    )
    arch = (
        f"MLP {'-'.join(map(str, HIDDEN))}"
        if args.network == "mlp"
        else f"U-Net {'-'.join(map(str, CHANNELS))}"
    )
    n_params = sum(p.numel() for p in ddpm.parameters())
    print(
        f"torch {torch.__version__}, device {device}, threads {torch.get_num_threads()}; train "
        f"{tuple(x.shape)}, test {tuple(x_test.shape)}; DDPM {arch} ({n_params:,} parameters), "
        f"T={args.T}, {args.parameterization}-prediction, {args.variance} variances, lr "
        f"{args.lr}; epochs {args.epochs}{' (smoke)' if args.smoke else ''}",
        flush=True,
    )
    fit_kw = {"batch_size": BATCH, "seed": args.seed, "progress": False, "device": args.device}

    # ---------------------------------------------------------------- training
    ddpm_train_s, ddpm_fit = _timed(
        lambda: probgen.fit(ddpm, x, epochs=args.epochs, **{**fit_kw, "lr": args.lr}), device
    )
    print(
        f"DDPM trained: {ddpm_train_s:.1f} s, final objective {ddpm_fit.final_objective:.2f} "
        "nats/datum (sampled bound, last 10 steps)",
        flush=True,
    )
    vae_epochs = _vae_epochs(args, x, ddpm_train_s)
    torch.manual_seed(args.seed)
    vae = VAE(D, VAE_LATENT, VAE_HIDDEN)
    vae_train_s, vae_fit = _timed(
        lambda: probgen.fit(vae, x, epochs=vae_epochs, lr=VAE_LR, **fit_kw), device
    )
    print(
        f"VAE trained: {vae_epochs} epochs, {vae_train_s:.1f} s, final objective "
        f"{vae_fit.final_objective:.2f} nats/datum",
        flush=True,
    )

    # ---------------------------------------------------------------- (b) likelihood
    gen = torch.Generator(device=device).manual_seed(args.seed)
    ddpm_eval_s, bound = _timed(
        lambda: probgen.evaluate.likelihood_bound(ddpm, x_test, generator=gen), device
    )
    print(f"\nDDPM test bound ({ddpm_eval_s:.1f} s, all {args.T} terms):\n{bound.table()}")
    torch.manual_seed(args.seed)
    vae_eval_s, vae_ll = _timed(
        lambda: probgen.evaluate.log_likelihood(vae, x_test, num_particles=args.particles), device
    )
    vae_bpd = probgen.evaluate.bits_per_dim(vae_ll, D)
    vae_bound = probgen.evaluate.likelihood_bound(vae, x_test)
    print(
        f"\nVAE test NLL (IS, K={args.particles}, {vae_eval_s:.1f} s): "
        f"{-float(vae_ll.value):.3f} ± {float(vae_ll.stderr):.3f} nats, {_fmt(vae_bpd)} bits/dim"
        f"\nVAE test -ELBO:\n{vae_bound.table()}",
        flush=True,
    )

    # ---------------------------------------------------------------- (c) sampling speed
    gen = torch.Generator(device=device).manual_seed(args.seed)
    ddim(ddpm, 8, steps=min(2, args.T), generator=gen)  # warm-up
    samplers = {
        "ancestral": (args.T, lambda: ancestral(ddpm, args.sample_n, generator=gen)),
        f"DDIM-{args.ddim_steps} (eta=0)": (
            args.ddim_steps,
            lambda: ddim(ddpm, args.sample_n, steps=args.ddim_steps, generator=gen),
        ),
    }
    speed = {}
    for name, (calls, draw) in samplers.items():
        seconds, draws = _timed(draw, device)
        speed[name] = {
            "network_calls": calls,
            "seconds": seconds,
            "samples_per_s": args.sample_n / seconds,
            "mean_pixel": float(draws.float().mean()),
        }

    # ---------------------------------------------------------------- results
    ddpm_bpd = bound.bits_per_dim()
    results = {
        "config": {
            k: getattr(args, k) for k in ("train_n", "test_n", "T", "network", "device", "seed")
        }
        | {"threads": torch.get_num_threads(), "torch": torch.__version__, "smoke": args.smoke},
        "ddpm": {
            "epochs": args.epochs,
            "train_s": ddpm_train_s,
            "eval_s": ddpm_eval_s,
            "nll_bound_nats": [float(bound.total.value), float(bound.total.stderr)],
            "bits_per_dim": {k: [float(v.value), float(v.stderr)] for k, v in ddpm_bpd.items()},
        },
        "vae": {
            "epochs": vae_epochs,
            "budget": "explicit" if args.vae_epochs is not None else args.vae_budget,
            "train_s": vae_train_s,
            "eval_s": vae_eval_s,
            "nll_is_nats": [-float(vae_ll.value), float(vae_ll.stderr)],
            "nll_is_bits_per_dim": [float(vae_bpd.value), float(vae_bpd.stderr)],
            "neg_elbo_nats": [float(vae_bound.total.value), float(vae_bound.total.stderr)],
        },
        "sampling": {"batch": args.sample_n} | speed,
        "test_mean_pixel": float(x_test.mean()),
    }
    neg_elbo_bpd = vae_bound.bits_per_dim()["total"]
    terms = ", ".join(f"{k} {float(v.value):.4f}" for k, v in ddpm_bpd.items() if k != "total")
    print(
        f"\n### DDPM vs VAE, binarized MNIST ({device}, {torch.get_num_threads()} threads, "
        f"torch {torch.__version__}{', SMOKE' if args.smoke else ''})\n"
        f"Train: first {x.shape[0]} images, batch {BATCH}. Test: first {x_test.shape[0]} test "
        "images; ± is the standard error over them.\n\n"
        "| model | epochs | train s | test NLL, bits/dim | nats/image |\n|---|---|---|---|---|\n"
        f"| DDPM {arch}, T={args.T}, bound (all T terms) | {args.epochs} | {ddpm_train_s:.1f} | "
        f"{_fmt(ddpm_bpd['total'])} | {_fmt(bound.total, 2)} |\n"
        f"| VAE 784-400-50, IS K={args.particles} | {vae_epochs} | {vae_train_s:.1f} | "
        f"{_fmt(vae_bpd)} | {-float(vae_ll.value):.2f} ± {float(vae_ll.stderr):.2f} |\n"
        f"| VAE 784-400-50, -ELBO | {vae_epochs} | {vae_train_s:.1f} | {_fmt(neg_elbo_bpd)} | "
        f"{_fmt(vae_bound.total, 2)} |\n\n"
        f"DDPM bound terms (bits/dim): {terms}.\n\n"
        f"| sampler | network calls | batch | s | samples/s | mean pixel (test "
        f"{float(x_test.mean()):.3f}) |\n|---|---|---|---|---|---|"
    )
    for name, row in speed.items():
        print(
            f"| {name} | {row['network_calls']} | {args.sample_n} | {row['seconds']:.2f} | "
            f"{row['samples_per_s']:.1f} | {row['mean_pixel']:.3f} |"
        )
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
