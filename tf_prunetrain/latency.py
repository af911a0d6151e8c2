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
the spirit of HALP's latency look-up table. `Reconfigure(round_to="auto")`
uses it (and broadcasts it, so every replica rounds alike).

`roofline()` measures the other half of a step's time: the seconds per
training FLOP of a convolution and per byte of memory traffic of the
bandwidth-bound layers (BatchNorm, activations, merges; `cost`'s count of 8
accesses per output activation). `Reconfigure(flops_target=..., rank=
"time")` ranks channels by weight norm per *second* they cost under this
model (`budget.plan_to_flops(roofline=...)`), so a FLOPs budget is spent
where it buys time: on this CPU a byte of traffic costs as much as tens of
FLOPs, and narrowing a 7×7 layer saves FLOPs but almost no seconds.

`python tools/step_time.py` prints this device's table and choice.
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
from tf_prunetrain import cost as cost_lib

CANDIDATES = (1, 2, 4, 8, 16, 32)
TOLERANCE = 0.03  # timing noise a "free" round-up may show
_TABLES: dict[tuple, "LatencyTable"] = {}
_ROOFLINES: dict[tuple, "Roofline"] = {}
_LAYER_RATES: dict[tuple, float] = {}  # seconds per training FLOP


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


@dataclasses.dataclass(frozen=True)
class Roofline:
    """What a training step's work costs on one device, at the margin: the
    seconds one more training FLOP of a layer costs
    (`layer_seconds_per_flop`, by layer path; `seconds_per_flop` for the
    others) and one more byte of memory traffic of the bandwidth-bound
    layers (counted as `cost` counts them). Marginal rates leave out what a
    layer costs whatever its width (dispatch, small-op overhead), which
    pruning does not save. The FLOP rate depends on the layer: on the 2-core
    CPU of BENCHMARKS.md a FLOP cut from a 7×7 convolution saves several
    times less time than one cut from a 28×28 one.

    >>> r = Roofline("CPU", "float32", seconds_per_flop=1e-11,
    ...              seconds_per_byte=2e-10)
    >>> round(r.flops_per_byte, 6)  # a byte of traffic costs 20 FLOPs' time
    20.0
    >>> r.seconds(flops=3e9, traffic_bytes=1e8)  # 0.03 + 0.02
    0.05
    """

    device: str
    dtype: str
    seconds_per_flop: float
    seconds_per_byte: float
    layer_seconds_per_flop: dict[str, float] = dataclasses.field(
        default_factory=dict)

    @property
    def flops_per_byte(self) -> float:
        return self.seconds_per_byte / self.seconds_per_flop

    def seconds(self, flops: float, traffic_bytes: float,
                layer: str | None = None) -> float:
        """Seconds of `flops` training FLOPs (of the layer at path `layer`,
        if measured) and `traffic_bytes` bytes of traffic."""
        rate = self.layer_seconds_per_flop.get(layer, self.seconds_per_flop)
        return flops * rate + traffic_bytes * self.seconds_per_byte


@dataclasses.dataclass(frozen=True)
class TimedLayer:
    """A layer call whose marginal FLOP rate `roofline` measures: a copy of
    `layer` (from its config) on `input_shape`, at its width and at half of
    it (config key `count_key`, e.g. "filters"; None: the average rate, as
    for layers whose width the config does not hold)."""

    path: str
    layer: keras.layers.Layer
    input_shape: tuple
    train_flops: int  # per example, at the layer's width
    count_key: str | None


def roofline(dtype: str | None = None, layers: Sequence[TimedLayer] = (),
             batch_size: int = 32, spatial: int = 16, channels: int = 32,
             rounds: int = 5) -> Roofline:
    """Measures this device's `Roofline` (cached per process and device).

    Each rate is a difference: the time of a training step at a width minus
    at half the width, over the work the half saves. The byte rate is a
    BatchNormalization + ReLU step (2 layers × 8 accesses per output
    activation), the default FLOP rate a 3×3 convolution's step (forward,
    input and kernel gradients: 3 × 2·9·c²·s² FLOPs per example), both on
    (batch_size, spatial, spatial, channels) inputs; every `TimedLayer`
    gets its own FLOP rate (copies alike in config and input shape are
    timed once per process). Steps are timed in alternating rounds, the
    median round counts; a difference lost in the noise counts a twentieth
    of the step's average rate.

    >>> r = roofline()
    >>> r.seconds_per_flop > 0 and r.seconds_per_byte > 0
    True
    """
    for name, value in (("batch_size", batch_size), ("spatial", spatial),
                        ("channels", channels), ("rounds", rounds)):
        _checks.positive_int(value, name, "roofline")
    dtype = dtype or keras.config.dtype_policy().compute_dtype
    device = _device()
    key = (device, dtype, batch_size, spatial, channels, rounds)
    if key not in _ROOFLINES:
        _ROOFLINES[key] = _device_roofline(dtype, batch_size, spatial,
                                           channels, rounds, device)
    rates = {}
    for timed in layers:
        config = {k: v for k, v in _compute_config(timed.layer).items()
                  if k != "name"}
        cache = (device, batch_size, rounds, type(timed.layer).__name__,
                 repr(sorted(config.items())), tuple(timed.input_shape))
        if cache not in _LAYER_RATES:
            _LAYER_RATES[cache] = _layer_rate(timed, batch_size, rounds,
                                              device)
        rates[timed.path] = _LAYER_RATES[cache]
    return dataclasses.replace(_ROOFLINES[key], layer_seconds_per_flop=rates)


def _rate(full: float, reduced: float, saved: float, work: float) -> float:
    """Seconds per unit of work that a reduced step saves: `full` and
    `reduced` seconds, `saved` of the full step's `work` units saved;
    floored at a twentieth of the full step's average rate (noise)."""
    return max((full - reduced) / saved, full / work / 20)


def _device_roofline(dtype: str, batch_size: int, spatial: int,
                     channels: int, rounds: int, device: str) -> Roofline:
    rng = np.random.default_rng(0)
    steps = []
    with tf.device(device):
        for c in (channels, channels // 2 or 1):
            x = tf.constant(rng.standard_normal(
                (batch_size, spatial, spatial, c)), dtype)
            kernel = tf.constant(rng.standard_normal((3, 3, c, c)) * 0.1,
                                 dtype)
            steps += [(_conv_step, (x, kernel)),
                      (_norm_step, (x, tf.ones((c,), dtype)))]
        conv, norm, conv_half, norm_half = _median_seconds(steps, rounds)
    elements = batch_size * spatial * spatial * channels
    # Halving c halves the traffic and quarters the FLOPs (c_in and c_out):
    # the FLOP rate's "half" saves 3/4 of the work.
    flops = 3 * 2 * 9 * channels * elements
    traffic = 2 * cost_lib.ACCESSES_PER_ACTIVATION * elements \
        * np.dtype(dtype).itemsize  # BatchNorm and ReLU outputs
    return Roofline(device, dtype,
                    _rate(conv, conv_half, 0.75 * flops, flops),
                    _rate(norm, norm_half, 0.5 * traffic, traffic))


@tf.function
def _conv_step(x: tf.Tensor, kernel: tf.Tensor) -> list[tf.Tensor]:
    with tf.GradientTape() as tape:
        tape.watch([x, kernel])
        loss = tf.reduce_sum(tf.cast(tf.nn.conv2d(x, kernel, 1, "SAME"),
                                     tf.float32))
    return tape.gradient(loss, [x, kernel])


@tf.function
def _norm_step(x: tf.Tensor, scale: tf.Tensor) -> list[tf.Tensor]:
    with tf.GradientTape() as tape:
        tape.watch([x, scale])
        mean, variance = tf.nn.moments(x, axes=[0, 1, 2])
        y = tf.nn.relu(tf.nn.batch_normalization(x, mean, variance, scale,
                                                 scale, 1e-3))
        loss = tf.reduce_sum(tf.cast(y, tf.float32))
    return tape.gradient(loss, [x, scale])


def _compute_config(layer: keras.layers.Layer) -> dict:
    """The layer's config without what does not change its compute
    (regularizers, constraints, initializers)."""
    return {k: v for k, v in layer.get_config().items()
            if not k.endswith(("_regularizer", "_constraint", "_initializer"))}


def _layer_rate(timed: TimedLayer, batch_size: int, rounds: int,
                device: str) -> float:
    """Marginal seconds per training FLOP of `timed` (see `roofline`)."""
    config = _compute_config(timed.layer)
    widths = [None]
    if timed.count_key is not None and int(config[timed.count_key]) > 1:
        widths.append(int(config[timed.count_key]) // 2)
    shape = (batch_size, *timed.input_shape[1:])
    steps = []
    with tf.device(device):
        for width in widths:
            copy = type(timed.layer).from_config(
                config if width is None else {**config,
                                              timed.count_key: width})
            copy.build(shape)
            x = tf.constant(np.random.default_rng(0).standard_normal(shape),
                            copy.compute_dtype)
            steps.append((_layer_step(copy), (x,)))
        seconds = _median_seconds(steps, rounds)
    work = batch_size * timed.train_flops
    if len(seconds) == 1:
        return seconds[0] / work
    saved = 1 - widths[1] / int(config[timed.count_key])
    return _rate(*seconds, saved * work, work)


def _layer_step(layer: keras.layers.Layer) -> tf.function:
    @tf.function
    def step(x: tf.Tensor) -> list[tf.Tensor]:
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(tf.cast(layer(x, training=True),
                                         tf.float32))
        return tape.gradient(loss, [x, *layer.trainable_variables])
    return step


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
