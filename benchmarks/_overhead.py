"""Shared by the overhead benchmarks: interleaved timed runs of several sides, and the report
of probgen's time over each hand-written anchor (median over repeats of the per-repeat ratio)."""

from __future__ import annotations

import statistics
from collections.abc import Callable

from torch import Tensor

#: What one timed run returns: wall seconds, CPU seconds, per-step losses, final parameters.
Run = tuple[float, float, list[float], list[Tensor]]
ANCHORS = ("hand-written", "hand-written, fused Adam")


def interleaved(
    sides: dict[str, Callable[[], Run]], repeats: int
) -> tuple[dict[str, list[float]], dict[str, list[float]], dict[str, Run]]:
    """Runs every side once per repeat, in turn (so slow drifts of the machine hit all sides
    alike); returns wall and CPU times per side and each side's last run."""
    walls: dict[str, list[float]] = {k: [] for k in sides}
    cpus: dict[str, list[float]] = {k: [] for k in sides}
    last: dict[str, Run] = {}
    for r in range(repeats):
        for name, run in sides.items():
            last[name] = run()
            walls[name].append(last[name][0])
            cpus[name].append(last[name][1])
        print(
            f"repeat {r}: wall "
            + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in walls.items())
            + "; cpu "
            + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in cpus.items()),
            flush=True,
        )
    return walls, cpus, last


def report(
    walls: dict[str, list[float]],
    cpus: dict[str, list[float]],
    steps: int,
    unit: str,
    per_step: bool = False,
) -> None:
    """Prints the median ratio probgen / anchor (goal <= 1.05) against both hand-written loops,
    optionally the median time per step of each side, and the framework's cost per step."""
    for anchor in ANCHORS:
        for kind, table in (("wall", walls), ("cpu", cpus)):
            ratios = [p / h for p, h in zip(table["probgen"], table[anchor], strict=True)]
            print(
                f"{kind} vs {anchor}: median {unit} {statistics.median(table[anchor]):.2f} s, "
                f"probgen {statistics.median(table['probgen']):.2f} s; ratio median "
                f"{statistics.median(ratios):.3f} (per repeat: "
                f"{', '.join(f'{q:.3f}' for q in ratios)}); goal <= 1.05"
            )
    if per_step:
        for kind, table in (("wall", walls), ("cpu", cpus)):
            ms = {k: statistics.median(v) / steps * 1e3 for k, v in table.items()}
            print(f"median {kind} per step: " + ", ".join(f"{k} {v:.3f} ms" for k, v in ms.items()))
    extra = statistics.median(
        [(p - h) / steps for p, h in zip(walls["probgen"], walls[ANCHORS[1]], strict=True)]
    )
    print(f"framework cost per step vs the fused hand loop (median): {extra * 1e3:.3f} ms")
