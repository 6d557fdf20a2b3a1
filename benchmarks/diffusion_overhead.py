"""Framework overhead: DDPM training steps through ``probgen.fit`` vs a hand-written PyTorch loop.

The model is a DDPM (Ho, Jain & Abbeel 2020, arXiv:2006.11239) on binarized MNIST (train
split), ``T = 1000`` linear-schedule steps, the DDPM's defaults (eps-parameterisation, fixed
variances ``sigma_t^2 = beta_t``), the binary (L = 2 discretised Gaussian) decoder, and by
default the 784-512-512 time-conditioned MLP (``--network unet`` for the small U-Net); batch 128,
Adam(lr=2e-4), ``--steps`` optimisation steps. The loss is the sampled bound that
``probgen.fit`` minimises for ``estimator="sampled", loss="vlb"``: per datum ``t ~ U{1..T}``,
``x_t ~ q(x_t | x_0)``, and

    L = L_T + T * [t >= 2] KL(q(x_{t-1} | x_t, x_0) || p(x_{t-1} | x_t))
            + T * [t = 1] (-log p(x_0 | x_1)),       L_T = KL(q(x_T | x_0) || N(0, I)),

summed over the minibatch and scaled by ``N / B``. The hand loop writes that sum directly with
the ``models.diffusion_process`` helpers and the DDPM's ``reverse`` and ``decoder`` on a deep copy
of the model (so the network and its initial weights are identical), the same shuffled batch
order (a ``torch.Generator`` seeded like ``probgen.fit``'s) and the same global torch seed.

Random draws: per step the Pyro guide draws ``t`` and the ``x_t`` noise, and the model
integrates ``x_T`` and ``x_{t-1}`` out analytically (no draws), so the hand loop, drawing ``t``
and then the noise, sees the same stream: the script compares every step's loss and the final
parameters of a short check run (``--check-steps``), then the first-step and mean losses of the
timed runs.

Timing is end-to-end and conservative for probgen, as in ``vae_overhead.py``: ``probgen.fit``
includes its input and data checks, the probe run of model and guide, building the objective and
the run record. We report the median over ``--repeats`` interleaved runs of each side, after one
warm-up each, and the ratio probgen / hand-written (goal: <= 1.05), against the fused-Adam hand
loop (the kernel ``probgen.fit`` uses: like for like) and the default-Adam one.

Usage::

    python benchmarks/diffusion_overhead.py --steps 200 --repeats 3
"""

from __future__ import annotations

import argparse
import copy
import functools
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pyro
import torch
from torch import Tensor

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _overhead import Run, interleaved, report  # noqa: E402

import probgen  # noqa: E402
from models import diffusion_process as dp  # noqa: E402
from models.diffusion import DDPM  # noqa: E402
from probgen.nn_time import TimeMLP  # noqa: E402

BATCH, LR, HIDDEN = 128, 2e-4, (512, 512)


def _batches(n: int, steps: int, seed: int, device: torch.device) -> Iterator[Tensor]:
    """``steps`` index batches of successive shuffled epochs, as ``probgen.fit`` draws them."""
    gen = torch.Generator(device=device).manual_seed(seed)
    done = 0
    while True:
        for idx in torch.randperm(n, generator=gen, device=device).split(BATCH):
            if done == steps:
                return
            done += 1
            yield idx


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def hand_written(ddpm: DDPM, x: Tensor, seed: int, steps: int, fused: bool = False) -> Run:
    """The plain PyTorch loop a user would write for the same DDPM and sampled bound.

    ``fused=True`` gives it the fused Adam kernel that ``probgen.fit`` picks, so that the ratio
    isolates the framework's own cost; ``False`` is ``torch.optim.Adam``'s default.
    """
    model = copy.deepcopy(ddpm)
    proc, T = model.process, model.steps
    opt = torch.optim.Adam(model.net.parameters(), lr=LR, fused=True if fused else None)
    n, device = x.shape[0], x.device
    torch.manual_seed(seed)
    losses: list[float] = []
    _sync(device)
    start, cpu = time.perf_counter(), time.process_time()
    for idx in _batches(n, steps, seed, device):
        xb = x[idx]
        b = xb.shape[0]
        y0 = model.to_chain(xb)
        t = torch.randint(1, T + 1, (b,), device=device)
        # x_t ~ q(x_t | x_0), reparameterised as Normal.rsample draws it (same stream).
        mean_t, var_t = proc.q_marginal(y0, t)
        y_t = mean_t + torch.empty_like(y0).normal_() * var_t.sqrt()
        last = torch.full_like(t, T)
        m_T, v_T = proc.q_marginal(y0, last)
        prior = dp.normal_kl(m_T, v_T.log(), torch.zeros_like(m_T), torch.zeros_like(v_T))
        mean, log_var, _ = model.reverse(y_t, t)
        q_mean, q_var = proc.q_posterior(y0, y_t, t)
        later = t >= 2
        # btilde_1 = 0; the t = 1 rows use the decoder, so give them a harmless variance.
        q_var = torch.where(later.unsqueeze(-1), q_var, torch.ones_like(q_var))
        kl = dp.normal_kl(q_mean, q_var.log(), mean, log_var).sum(-1)
        nll0 = -model.decoder(mean, log_var).log_prob(xb)
        per_datum = prior.sum(-1) + T * torch.where(later, kl, nll0)
        loss = per_datum.sum() * (n / b)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item() / n)
    _sync(device)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    return wall, cpu, losses, [p.detach() for p in model.net.parameters()]


def via_probgen(ddpm: DDPM, x: Tensor, seed: int, steps: int) -> Run:
    """``probgen.fit`` for ``steps`` steps on a deep copy of the same DDPM."""
    model = copy.deepcopy(ddpm)
    pyro.set_rng_seed(seed)
    _sync(x.device)
    start, cpu = time.perf_counter(), time.process_time()
    fit = probgen.fit(model, x, steps=steps, batch_size=BATCH, lr=LR, seed=seed, progress=False)
    _sync(x.device)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    return wall, cpu, list(fit.history), [p.detach() for p in model.net.parameters()]


def _max_diff(a: list[Tensor], b: list[Tensor]) -> float:
    return max((p - q).abs().max().item() for p, q in zip(a, b, strict=True))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--data", default=str(ROOT.parent / "shared/data/binarized_mnist/binarized_mnist.npz")
    )
    parser.add_argument("--steps", type=int, default=200, help="optimisation steps per run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--n", type=int, default=50_000, help="training images used")
    parser.add_argument("--T", type=int, default=1000, help="diffusion steps")
    parser.add_argument("--network", choices=("mlp", "unet"), default="mlp")
    parser.add_argument(
        "--check-steps", type=int, default=5, help="steps of the draw-matched check"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all)")
    parser.add_argument(
        "--tiny",
        action="store_true",
        help="a compute-free 8-dim DDPM (8-wide MLP) on random binary data: the per-step overhead",
    )
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    torch.manual_seed(args.seed)
    if args.tiny:
        x = (torch.rand(args.n, 8) < 0.5).float()
        net = TimeMLP(8, (8, 8), time_dim=8)
        ddpm = DDPM(8, steps=args.T, decoder="bernoulli", network=net)
    else:
        x = probgen.data.load_binarized_mnist(args.data, "train")[: args.n].float()
        ddpm = DDPM(
            784,
            steps=args.T,
            decoder="bernoulli",
            network=args.network,
            hidden=HIDDEN,
            image_shape=(28, 28),
        )
    x, ddpm = x.to(device), ddpm.to(device)
    params = sum(p.numel() for p in ddpm.net.parameters())
    print(
        f"torch {torch.__version__}, pyro {pyro.__version__}, device {device}, threads "
        f"{torch.get_num_threads()}, N={x.shape[0]}, D={x.shape[1]}, T={args.T}, network "
        f"{'tiny' if args.tiny else args.network} ({params:,} parameters), batch {BATCH}, "
        f"lr {LR}, steps {args.steps}"
    )
    sides: dict[str, Callable[[DDPM, Tensor, int, int], Run]] = {
        "hand-written": hand_written,
        "hand-written, fused Adam": lambda m, d, s, k: hand_written(m, d, s, k, fused=True),
        "probgen": via_probgen,
    }
    for run in sides.values():
        run(ddpm, x[:4096], args.seed, 5)  # warm-up (allocator, kernels)

    # Correctness first: the hand loop draws t and x_t in probgen's order, so every draw matches.
    _, _, l_hand, p_hand = hand_written(ddpm, x, args.seed, args.check_steps, fused=True)
    _, _, l_pg, p_pg = via_probgen(ddpm, x, args.seed, args.check_steps)
    rel = max(abs(a - b) / abs(a) for a, b in zip(l_hand, l_pg, strict=True))
    print(
        f"draw-matched check, {args.check_steps} steps: losses per datum hand "
        f"{', '.join(f'{v:.6g}' for v in l_hand)}; probgen {', '.join(f'{v:.6g}' for v in l_pg)}; "
        f"max rel. diff {rel:.1e}; max |param diff| {_max_diff(p_hand, p_pg):.1e}"
    )

    walls, cpus, out = interleaved(
        {k: functools.partial(run, ddpm, x, args.seed, args.steps) for k, run in sides.items()},
        args.repeats,
    )
    # Same draws throughout; rounding (fused kernels, summation order) makes the runs drift
    # apart slowly, so compare the first losses and the means.
    l_hand, l_pg = out["hand-written, fused Adam"][2], out["probgen"][2]
    first = abs(l_hand[0] - l_pg[0]) / abs(l_hand[0])
    half = len(l_hand) // 2
    print(
        f"timed runs: first-step loss per datum hand {l_hand[0]:.6f}, probgen {l_pg[0]:.6f} "
        f"(rel. diff {first:.1e}); mean over the last {len(l_hand) - half} steps (same draws): "
        f"hand {statistics.mean(l_hand[half:]):.2f}, probgen "
        f"{statistics.mean(l_pg[half:]):.2f} nats per datum"
    )
    report(walls, cpus, steps=args.steps, unit="run", per_step=True)


if __name__ == "__main__":
    main()
