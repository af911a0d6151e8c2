"""Hardware-aware widths: the channel multiple that runs fast on this device.

Real kernels work on blocks of channels: oneDNN on an AVX-512 CPU packs 16
fp32 channels per vector, Tensor Cores want multiples of 8 (fp16/bf16). A
width just under a block boundary costs about as much as the boundary, and
an odd width can cost more than the full width (a slower kernel path). So
the channel counts a pruning leaves decide its speed, not only its FLOPs.

`latency_table()` measures it: the training step (forward, input and kernel
gradients) of a 3×3 convolution with `c` input and `c` output channels, for
every `c` in a range, timed in alternating rounds (`round_robin`: machine
drift hits every width alike), once per process and device.
`channel_multiple()` reads the table: the largest multiple `m` whose
round-up costs no more time than the best candidate's — the geometric
mean, over the measured widths `c`, of `time(round_up(c, m)) / time(c)`
within `tolerance` of the smallest — in the spirit of HALP's latency
look-up table.

Measuring is an explicit call: pass its result to `Reconfigure(round_to=
...)` yourself (the same value on every replica). The default, 8, is fixed
so that the same run gives the same widths everywhere; README, "Channel
multiples", has the measurements behind it. `python -m tools.step_time`
prints this device's table and choice.

`time_calls` and `round_robin` are the timing primitive of this table and
of the repository's tools (the replay of `tools/replay.py`, the benchmarks'
group-lasso overhead): seconds of consecutive calls, and callables run in
rounds whose order reverses every other round.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from typing import Any, Callable, Hashable, Mapping, Sequence, TypeVar

import keras
import numpy as np
import tensorflow as tf

from tf_prunetrain import _checks

CANDIDATES = (1, 2, 4, 8, 16, 32)
TOLERANCE = 0.03  # timing noise a "free" round-up may show
_TABLES: dict[tuple, "LatencyTable"] = {}
Key = TypeVar("Key", bound=Hashable)


def time_calls(call: Callable[[], Any], times: int,
               clock: Callable[[], float] = time.perf_counter
               ) -> list[float]:
    """Seconds of each of `times` consecutive calls of `call` (which must
    wait for its work: return numpy values, not pending tensors). `clock`
    is injectable (seconds, monotonic).

    >>> ticks = iter([0.0, 0.5, 0.5, 1.5])
    >>> time_calls(lambda: None, 2, clock=lambda: next(ticks))
    [0.5, 1.0]
    """
    seconds = []
    for _ in range(times):
        start = clock()
        call()
        seconds.append(clock() - start)
    return seconds


def round_robin(runners: Mapping[Key, Callable[[], Sequence[float]]],
                rounds: int,
                progress: Callable[[int, float], None] | None = None,
                clock: Callable[[], float] = time.perf_counter
                ) -> dict[Key, list[float]]:
    """Calls every runner once per round, the order reversed every other
    round (a drift within a round then favours no one: A B, B A, A B, ...),
    and collects the seconds each returns, in order. `progress(r, s)` hears
    after round `r` (1-based) that it took `s` seconds.

    >>> calls = []
    >>> def runner(name):
    ...     return lambda: calls.append(name) or [float(len(calls))]
    >>> round_robin({"a": runner("a"), "b": runner("b")}, rounds=2)
    {'a': [1.0, 4.0], 'b': [2.0, 3.0]}
    >>> calls
    ['a', 'b', 'b', 'a']
    """
    _checks.positive_int(rounds, "rounds", "round_robin")
    times: dict[Key, list[float]] = {key: [] for key in runners}
    order = list(runners)
    for r in range(rounds):
        start = clock()
        for key in (order if r % 2 == 0 else reversed(order)):
            times[key].extend(runners[key]())
        if progress:
            progress(r + 1, clock() - start)
    return times


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
    """Median seconds of each (tf.function, args) over `round_robin`
    rounds of one call each (after a trace and a warm call each)."""
    def call(step: Callable, args: tuple) -> Callable[[], Any]:
        return lambda: [g.numpy() for g in step(*args)]  # waits for it

    calls = [call(step, args) for step, args in steps]
    for run in calls:
        time_calls(run, 2)
    times = round_robin({i: (lambda run=run: time_calls(run, 1))
                         for i, run in enumerate(calls)}, rounds)
    return [statistics.median(times[i]) for i in range(len(calls))]


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
