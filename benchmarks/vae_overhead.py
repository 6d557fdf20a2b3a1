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
import statistics
import sys
import time
from pathlib import Path

import pyro
import torch
from torch import Tensor, nn
from torch.distributions import Bernoulli, Normal
from torch.nn import functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import probgen  # noqa: E402
from models.vae import MIN_SCALE, VAE  # noqa: E402

BATCH, LR, LATENT, HIDDEN = 128, 1e-3, 50, (400,)


def hand_written_epoch(vae: VAE, x: Tensor, seed: int) -> tuple[float, list[Tensor]]:
    """The plain PyTorch loop a user would write for the same VAE and estimator."""
    encoder, head = copy.deepcopy(vae.encoder), copy.deepcopy(vae.encoder_head)
    decoder = copy.deepcopy(vae.decoder)
    modules = nn.ModuleList([encoder, head, decoder])
    opt = torch.optim.Adam(modules.parameters(), lr=LR)
    n = x.shape[0]
    torch.manual_seed(seed)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    prior = Normal(x.new_zeros(LATENT), x.new_ones(LATENT))
    start = time.perf_counter()
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
    return time.perf_counter() - start, [p.detach() for p in modules.parameters()]


def probgen_epoch(vae: VAE, x: Tensor, seed: int) -> tuple[float, list[Tensor]]:
    """``probgen.fit`` for one epoch on the same VAE (a deep copy, same initial weights)."""
    model = copy.deepcopy(vae)
    pyro.set_rng_seed(seed)
    start = time.perf_counter()
    probgen.fit(model, x, epochs=1, batch_size=BATCH, lr=LR, seed=seed, progress=False)
    elapsed = time.perf_counter() - start
    params = [*model.encoder.parameters(), *model.encoder_head.parameters()]
    return elapsed, [p.detach() for p in params + list(model.decoder.parameters())]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--data", default=str(ROOT.parent / "shared/data/binarized_mnist/binarized_mnist.npz")
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--n", type=int, default=50_000, help="training images used")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    x = probgen.data.load_binarized_mnist(args.data, "train")[: args.n].float()
    torch.manual_seed(args.seed)
    vae = VAE(784, LATENT, HIDDEN)
    print(
        f"torch {torch.__version__}, pyro {pyro.__version__}, threads {torch.get_num_threads()}, "
        f"N={x.shape[0]}, batch {BATCH}, steps/epoch {-(-x.shape[0] // BATCH)}"
    )
    hand_written_epoch(vae, x[:4096], args.seed)  # warm-up (allocator, kernels)
    probgen_epoch(vae, x[:4096], args.seed)
    times: dict[str, list[float]] = {"hand-written": [], "probgen": []}
    for r in range(args.repeats):
        t_hand, p_hand = hand_written_epoch(vae, x, args.seed)
        t_pg, p_pg = probgen_epoch(vae, x, args.seed)
        times["hand-written"].append(t_hand)
        times["probgen"].append(t_pg)
        diff = max((a - b).abs().max().item() for a, b in zip(p_hand, p_pg, strict=True))
        print(f"repeat {r}: hand {t_hand:.2f} s, probgen {t_pg:.2f} s, max |param diff| {diff:.2e}")
    med = {k: statistics.median(v) for k, v in times.items()}
    ratios = [p / h for p, h in zip(times["probgen"], times["hand-written"], strict=True)]
    print(f"median epoch: hand-written {med['hand-written']:.2f} s, probgen {med['probgen']:.2f} s")
    print(
        f"ratio probgen / hand-written: median {statistics.median(ratios):.3f} "
        f"(per repeat: {', '.join(f'{r:.3f}' for r in ratios)}); goal <= 1.05"
    )


if __name__ == "__main__":
    main()
