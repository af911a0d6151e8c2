"""Paired verdicts over seeds: is setting A more accurate than B?

Two settings trained with the same seed share the data order, the training
subset and (for the same widths) the initial weights, so the per-seed
difference A − B removes most of the seed-to-seed spread. Its mean gets a
95 % bootstrap interval (percentile method: the seeds resampled with
replacement, a fixed generator so a report is reproducible). The verdict
says "better" or "worse" only when the interval excludes 0, otherwise "not
established" — the rule for every claim in README.md and BENCHMARKS.md.

With 5 seeds the percentile interval is narrower than a t interval would
be (a bootstrap cannot see spread the 5 draws did not show); it is the
floor the issues set, not a proof.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

RESAMPLES = 10_000
LEVEL = 0.95


def bootstrap_interval(values: Sequence[float], resamples: int = RESAMPLES,
                       level: float = LEVEL, seed: int = 0
                       ) -> tuple[float, float]:
    """The `level` percentile bootstrap interval of the mean of `values`.

    >>> bootstrap_interval([1.0, 1.0, 1.0])
    (1.0, 1.0)
    >>> low, high = bootstrap_interval([0.2, -0.1, 0.4, 0.1, 0.3])
    >>> bool(-0.1 <= low < 0.18 < high <= 0.4)
    True
    """
    data = np.asarray(values, dtype=np.float64)
    if data.size == 0:
        raise ValueError("bootstrap_interval: no values.")
    rng = np.random.default_rng(seed)
    means = data[rng.integers(0, data.size, (resamples, data.size))].mean(1)
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(low), float(high)


def verdict(low: float, high: float) -> str:
    """'better' when the interval is above 0, 'worse' below, else 'not
    established'.

    >>> verdict(0.1, 0.5), verdict(-0.5, -0.1), verdict(-0.1, 0.5)
    ('better', 'worse', 'not established')
    """
    if low > 0:
        return "better"
    if high < 0:
        return "worse"
    return "not established"


def paired(a: Mapping[int, float], b: Mapping[int, float],
           scale: float = 1.0) -> dict[str, Any] | None:
    """The per-seed difference `scale × (a − b)` over the seeds both have:
    mean, 95 % bootstrap interval, verdict; None without a common seed.

    >>> row = paired({0: 0.90, 1: 0.91, 2: 0.92}, {0: 0.89, 1: 0.90,
    ...              2: 0.905}, scale=100)
    >>> round(row["mean"], 2), row["seeds"], row["verdict"]
    (1.17, 3, 'better')
    """
    seeds = sorted(set(a) & set(b))
    if not seeds:
        return None
    differences = [scale * (a[s] - b[s]) for s in seeds]
    low, high = bootstrap_interval(differences)
    return {"seeds": len(seeds), "mean": float(np.mean(differences)),
            "low": low, "high": high, "verdict": verdict(low, high),
            "differences": differences}
