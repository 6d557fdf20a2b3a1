"""Framework overhead: one VAE training epoch through ``probgen.fit`` vs a hand-written loop.

The network is the 784-400-50 MLP VAE of Kingma & Welling (2014) / Burda et al. (2016) with a
Bernoulli likelihood on binarized MNIST (train split, 50,000 images), batch 128, Adam(lr=1e-3).
Both sides use *the same* modules (the hand loop deep-copies the VAE's encoder, head and
decoder, so their initial weights are identical), the same shuffled batch order (a
``torch.Generator`` seeded like ``probgen.fit``'s), the same reparameterised draws (the global
torch seed is reset before each run and both draw ``z`` with ``Normal.rsample`` in the same
order) and the same single-sample ELBO estimator scaled by ``N / B``. The two runs therefore
compute the same numbers: the script checks that the final parameters agree.

Timing is end-to-end and conservative for probgen: ``probgen.fit`` includes its input checks,
the family's data checks (binary values), building the objective and the run record. We
report the median over ``--repeats`` interleaved runs of each side, after one warm-up each, and
the ratio probgen / hand-written (goal: <= 1.05).

Usage::

    python benchmarks/vae_overhead.py --data ../shared/data/binarized_mnist/binarized_mnist.npz
"""

from __future__ import annotations

import argparse
import copy
import functools
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pyro
import torch
from torch import Tensor, nn
from torch.distributions import Bernoulli, Normal
from torch.nn import functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _overhead import Run, interleaved, report  # noqa: E402

import probgen  # noqa: E402
from models.vae import MIN_SCALE, VAE  # noqa: E402

BATCH, LR, LATENT, HIDDEN = 128, 1e-3, 50, (400,)


def hand_written_epoch(
    vae: VAE, x: Tensor, seed: int, fused: bool = False
) -> tuple[float, float, list[float], list[Tensor]]:
    """The plain PyTorch loop a user would write for the same VAE and estimator.

    ``fused=True`` gives it the fused Adam kernel that ``probgen.fit`` picks, so that the ratio
    isolates the framework's own cost; ``False`` is ``torch.optim.Adam``'s default, as most
    hand-written loops use it.
    """
    encoder, head = copy.deepcopy(vae.encoder), copy.deepcopy(vae.encoder_head)
    decoder = copy.deepcopy(vae.decoder)
    modules = nn.ModuleList([encoder, head, decoder])
    opt = torch.optim.Adam(modules.parameters(), lr=LR, fused=True if fused else None)
    n = x.shape[0]
    torch.manual_seed(seed)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    prior = Normal(x.new_zeros(vae.latent_dim), x.new_ones(vae.latent_dim))
    start, cpu = time.perf_counter(), time.process_time()
    losses = []
    for idx in order.split(BATCH):
        xb = x[idx]
        loc, raw = head(encoder(xb)).chunk(2, -1)
        q = Normal(loc, F.softplus(raw) + MIN_SCALE)
        z = q.rsample()
        log_lik = Bernoulli(logits=decoder(z)).log_prob(xb).sum()
        elbo = log_lik + prior.log_prob(z).sum() - q.log_prob(z).sum()
        loss = -elbo * (n / idx.numel())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item() / n)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    return wall, cpu, losses, [p.detach() for p in modules.parameters()]


def probgen_epoch(vae: VAE, x: Tensor, seed: int) -> tuple[float, float, list[float], list[Tensor]]:
    """``probgen.fit`` for one epoch on the same VAE (a deep copy, same initial weights)."""
    model = copy.deepcopy(vae)
    pyro.set_rng_seed(seed)
    start, cpu = time.perf_counter(), time.process_time()
    fit = probgen.fit(model, x, epochs=1, batch_size=BATCH, lr=LR, seed=seed, progress=False)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    params = [*model.encoder.parameters(), *model.encoder_head.parameters()]
    return (
        wall,
        cpu,
        list(fit.history),
        [p.detach() for p in params + list(model.decoder.parameters())],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--data", default=str(ROOT.parent / "shared/data/binarized_mnist/binarized_mnist.npz")
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--n", type=int, default=50_000, help="training images used")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all)")
    parser.add_argument(
        "--tiny",
        action="store_true",
        help="a compute-free 8-4-2 VAE on random binary data: isolates the per-step overhead",
    )
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    torch.manual_seed(args.seed)
    if args.tiny:
        x = (torch.rand(args.n, 8) < 0.5).float()
        vae = VAE(8, 2, (4,))
    else:
        x = probgen.data.load_binarized_mnist(args.data, "train")[: args.n].float()
        vae = VAE(784, LATENT, HIDDEN)
    print(
        f"torch {torch.__version__}, pyro {pyro.__version__}, threads {torch.get_num_threads()}, "
        f"N={x.shape[0]}, batch {BATCH}, steps/epoch {-(-x.shape[0] // BATCH)}"
    )
    sides: dict[str, Callable[[VAE, Tensor, int], Run]] = {
        "hand-written": hand_written_epoch,
        "hand-written, fused Adam": lambda v, d, s: hand_written_epoch(v, d, s, fused=True),
        "probgen": probgen_epoch,
    }
    for run in sides.values():
        run(vae, x[:4096], args.seed)  # warm-up (allocator, kernels)
    walls, cpus, out = interleaved(
        {k: functools.partial(run, vae, x, args.seed) for k, run in sides.items()}, args.repeats
    )
    # Same seed, same draws: the first losses agree to rounding; later ones drift apart by
    # rounding amplified through Adam's normalised steps, so compare the epoch means.
    (*_, l_hand, p_hand), (*_, l_pg, p_pg) = out["hand-written, fused Adam"], out["probgen"]
    first = abs(l_hand[0] - l_pg[0]) / abs(l_hand[0])
    drift = max((a - b).abs().max().item() for a, b in zip(p_hand, p_pg, strict=True))
    print(
        f"first-step loss per datum: hand {l_hand[0]:.6f}, probgen {l_pg[0]:.6f} (rel. diff "
        f"{first:.1e}); epoch mean: hand {statistics.mean(l_hand):.3f}, probgen "
        f"{statistics.mean(l_pg):.3f}; max |param diff| after the epoch {drift:.1e}"
    )
    report(walls, cpus, steps=-(-x.shape[0] // BATCH), unit="epoch")


if __name__ == "__main__":
    main()
