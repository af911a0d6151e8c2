"""Hardware-aware widths: the channel multiple that runs fast on this device.

Real kernels work on blocks of channels: oneDNN on an AVX-512 CPU packs 16
fp32 channels per vector, Tensor Cores want multiples of 8 (fp16/bf16). A
width just under a block boundary costs about as much as the boundary, and
an odd width can cost more than the full width (a slower kernel path). So
the channel counts a pruning leaves decide its speed, not only its FLOPs.

`latency_table()` measures it: the training step (forward, input and kernel
gradients) of a 3×3 convolution with `c` input and `c` output channels, for
every `c` in a range, timed in alternating rounds (machine drift hits every
width alike), once per process and device. `channel_multiple()` reads the
table: the largest multiple `m` whose round-up costs no more time than the
best candidate's — the geometric mean, over the measured widths `c`, of
`time(round_up(c, m)) / time(c)` within `tolerance` of the smallest — in
the spirit of HALP's latency look-up table.

Measuring is an explicit call: pass its result to `Reconfigure(round_to=
...)` yourself (the same value on every replica). The default, 8, is fixed
so that the same run gives the same widths everywhere; README, "Channel
multiples", has the measurements behind it. `python tools/step_time.py`
prints this device's table and choice.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from typing import Sequence

import keras
import numpy as np
import tensorflow as tf

from tf_prunetrain import _checks

CANDIDATES = (1, 2, 4, 8, 16, 32)
TOLERANCE = 0.03  # timing noise a "free" round-up may show
_TABLES: dict[tuple, "LatencyTable"] = {}


@dataclasses.dataclass(frozen=True)
class LatencyTable:
    """Median step seconds of a c→c 3×3 convolution, per width c."""

    device: str
    dtype: str
    seconds: dict[int, float]

    def round_up_cost(self, multiple: int, widths: Sequence[int]) -> float:
        """Geometric mean over `widths` c of time(round_up(c, multiple)) /
        time(c): what rounding every width up costs (below 1: it saves)."""
        ratios = [self.seconds[_round_up(c, multiple)] / self.seconds[c]
                  for c in widths]
        return float(np.exp(np.mean(np.log(ratios))))

    def multiple(self, candidates: Sequence[int] = CANDIDATES,
                 tolerance: float = TOLERANCE) -> int:
        """The largest candidate whose round-up cost is within `tolerance`
        of the cheapest candidate's (1 always costs 1.0: nothing rounds).
        The widths averaged over are those measured whose round-up to every
        candidate was measured too.

        >>> steps = LatencyTable("CPU", "float32", {c: float(-(-c // 8))
        ...                                         for c in range(1, 33)})
        >>> steps.multiple(candidates=(1, 2, 4, 8, 16))  # a step every 8
        8
        >>> linear = LatencyTable("CPU", "float32", {c: float(c)
        ...                                          for c in range(1, 33)})
        >>> linear.multiple(candidates=(1, 2, 4, 8, 16))  # any rounding costs
        1
        """
        cost = self.costs(candidates)
        best = min(cost.values())
        return max(m for m, c in cost.items() if c <= best * (1 + tolerance))

    def costs(self, candidates: Sequence[int] = CANDIDATES) -> dict[int, float]:
        """`round_up_cost` of each candidate (and of 1), over the measured
        widths whose round-up to every candidate was measured too."""
        candidates = sorted({1, *candidates})
        widths = [c for c in self.seconds
                  if all(_round_up(c, m) in self.seconds for m in candidates)]
        if not widths:
            raise ValueError(
                "LatencyTable: no measured width has its round-up to every "
                f"candidate {candidates} measured; time widths up to twice "
                "the largest candidate.")
        return {m: self.round_up_cost(m, widths) for m in candidates}


@tf.function
def _conv_step(x: tf.Tensor, kernel: tf.Tensor) -> list[tf.Tensor]:
    with tf.GradientTape() as tape:
        tape.watch([x, kernel])
        loss = tf.reduce_sum(tf.cast(tf.nn.conv2d(x, kernel, 1, "SAME"),
                                     tf.float32))
    return tape.gradient(loss, [x, kernel])


def _median_seconds(steps: list[tuple], rounds: int) -> list[float]:
    """Median seconds of each (tf.function, args) over alternating rounds
    (after a trace and a warm call each)."""
    def run(step, args) -> float:
        start = time.perf_counter()
        _ = [g.numpy() for g in step(*args)]  # .numpy() waits for it
        return time.perf_counter() - start

    for step, args in steps:
        run(step, args), run(step, args)
    times: list[list[float]] = [[] for _ in steps]
    for _ in range(rounds):  # alternating: drift hits every step alike
        for i, (step, args) in enumerate(steps):
            times[i].append(run(step, args))
    return [statistics.median(t) for t in times]


def _round_up(c: int, multiple: int) -> int:
    return -(-c // multiple) * multiple


def _device() -> str:
    gpus = tf.config.list_logical_devices("GPU")
    return gpus[0].name if gpus else tf.config.list_logical_devices("CPU")[0].name


def latency_table(widths: Sequence[int] = tuple(range(8, 65)),
                  dtype: str | None = None, batch_size: int = 32,
                  spatial: int = 16, rounds: int = 5) -> LatencyTable:
    """Times the c→c convolution step at every width (cached per process).

    Args:
      widths: channel counts to time.
      dtype: the compute dtype (default: the global Keras dtype policy's,
        e.g. float16 under mixed_float16).
      batch_size, spatial: the input is (batch_size, spatial, spatial, c).
      rounds: alternating timing rounds; the median round counts.
    """
    widths = tuple(sorted({_checks.positive_int(int(c), "widths",
                                                "latency_table")
                           for c in widths}))
    _checks.positive_int(rounds, "rounds", "latency_table")
    dtype = dtype or keras.config.dtype_policy().compute_dtype
    device = _device()
    key = (device, dtype, widths, batch_size, spatial, rounds)
    if key not in _TABLES:
        _TABLES[key] = LatencyTable(device, dtype, _measure(
            widths, dtype, batch_size, spatial, rounds, device))
    return _TABLES[key]


def _measure(widths: tuple[int, ...], dtype: str, batch_size: int,
             spatial: int, rounds: int, device: str) -> dict[int, float]:
    rng = np.random.default_rng(0)
    logger, level = tf.get_logger(), tf.get_logger().level
    logger.setLevel("ERROR")  # one trace per width is the point: no warning
    try:
        with tf.device(device):
            steps = [(_conv_step, (
                tf.constant(rng.standard_normal(
                    (batch_size, spatial, spatial, c)), dtype),
                tf.constant(rng.standard_normal((3, 3, c, c)) * 0.1, dtype)))
                for c in widths]
            seconds = _median_seconds(steps, rounds)
    finally:
        logger.setLevel(level)
    return dict(zip(widths, seconds))


def channel_multiple(dtype: str | None = None,
                     candidates: Sequence[int] = CANDIDATES,
                     tolerance: float = TOLERANCE) -> int:
    """The channel multiple widths should keep on this device (measured
    once per process; see the module docstring).

    >>> m = channel_multiple()
    >>> m in CANDIDATES
    True
    """
    return candidate_table(dtype, candidates).multiple(candidates, tolerance)


def candidate_table(dtype: str | None = None,
                    candidates: Sequence[int] = CANDIDATES) -> LatencyTable:
    """The table `channel_multiple` reads: widths from a quarter of the
    largest candidate to twice it."""
    top = max(candidates)
    return latency_table(range(max(1, top // 4), 2 * top + 1), dtype)
