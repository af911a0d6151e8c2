r"""How train-step time follows FLOPs and channel counts on this machine.

A replay of thin architectures (`tools/replay.py`, the instrument that prices
the benchmark's runs): the median train step of the CIFAR ResNet at several
stage widths (`fit` on a repeated in-memory dataset, SGD with momentum),
round-robin rounds in one process (`tf_prunetrain.latency.round_robin`),
the order reversed every other round.
It fits `step = fixed + per_flop × FLOPs` (least squares, as fractions of
the first model) and names the machine (CPU model and vector flags, cores,
TensorFlow build). `fixed` is the share of a step that no channel pruning can
remove (kernel launches, BatchNorm/optimizer bookkeeping, the first
convolution's input, the classifier): it bounds the wall-time ratio a FLOPs
target can reach, whatever channels it removes. The default widths are
issue #14's table: one channel less per stage can be slower than dense.

It then prints this device's convolution latency table
(`tf_prunetrain.latency`) and the channel multiple
`latency.channel_multiple()` picks from it (what to pass as
`Reconfigure(round_to=...)` or `--round_to` instead of the default 8).

    python -m tools.step_time                      # ResNet-20, 28x28x1, batch 128
    python -m tools.step_time --widths=1,0.75,0.5 --rounds=8 --json=steps.json
"""

from __future__ import annotations

from typing import Any

import numpy as np
import tensorflow as tf
from absl import app
from absl import flags

import tf_prunetrain
from tf_prunetrain import latency
from tf_prunetrain.models import resnet_cifar
from tools import replay
from tools import results


def stage_widths(entry: float | tuple[int, ...]) -> tuple[int, ...]:
    """Stage widths: given as such, or a multiplier of 16/32/64."""
    if isinstance(entry, tuple):
        return entry
    return tuple(max(1, round(w * entry)) for w in (16, 32, 64))


def parse_entry(text: str) -> float | tuple[int, ...]:
    """'16/32/64' (stage widths) or '0.5' (a width multiplier)."""
    if "/" in text:
        return tuple(int(w) for w in text.split("/"))
    return float(text)


def measure(depth: int, shape: tuple[int, ...], batch: int,
            entries: list[float | tuple[int, ...]], rounds: int, steps: int,
            warmup: int = 2) -> dict[str, Any]:
    """Median step seconds (replayed) and FLOPs of each width (multipliers
    or stage widths; the first is the reference); the linear fit; the
    machine."""
    rng = np.random.default_rng(0)
    x = rng.random((4 * batch, *shape), np.float32)
    y = rng.integers(0, 10, 4 * batch)
    models = {}
    for m in entries:
        model = resnet_cifar(depth, 10, shape, stage_widths(m), seed=0)
        models["/".join(map(str, stage_widths(m)))] = replay.compile_sgd(
            model, 0.01)

    def dataset() -> tf.data.Dataset:
        return tf.data.Dataset.from_tensor_slices((x, y)).batch(
            batch).repeat()

    seconds = replay.time_models(models, dataset, rounds, steps, warmup)
    keys = list(models)
    full_flops = tf_prunetrain.cost.forward_flops(models[keys[0]])
    rows = [{"widths": [int(w) for w in key.split("/")],
             "flops": tf_prunetrain.cost.forward_flops(models[key]) / full_flops,
             "step": seconds[key] / seconds[keys[0]],
             "step_seconds": seconds[key]} for key in keys]
    per_flop, fixed = np.polyfit([r["flops"] for r in rows],
                                 [r["step"] for r in rows], 1)
    return {"rows": rows, "fixed": float(fixed), "per_flop": float(per_flop),
            "machine": replay.machine()}


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    f = flags.FLAGS
    try:
        entries = [parse_entry(e) for e in f.widths]
    except ValueError:
        raise app.UsageError(f"--widths takes a/b/c stage widths or "
                             f"multipliers, got {f.widths}") from None
    result = measure(f.depth, tuple(int(d) for d in f.input_shape),
                     f.batch_size, entries, f.rounds, f.steps)
    print(f"on {replay.describe(result['machine'])}")
    print("widths       FLOPs ratio  step-time ratio")
    for r in result["rows"]:
        print(f"{'/'.join(map(str, r['widths'])):<11}"
              f"  {r['flops']:>11.3f}  {r['step']:>15.3f}")
    print(f"fit: step = {result['fixed']:.3f} + {result['per_flop']:.3f} × "
          "FLOPs (fractions of the first model)")
    multiple = latency.channel_multiple()
    table = latency.candidate_table()
    costs = table.costs()
    print(f"conv 3x3 c→c latency on {table.device} ({table.dtype}): "
          "round-up cost per multiple " + ", ".join(
              f"{m}: {c:.3f}" for m, c in costs.items()))
    print(f"latency.channel_multiple() picks {multiple} here (the default "
          "round_to is 8)")
    result["latency"] = {"device": table.device, "dtype": table.dtype,
                         "seconds": table.seconds, "round_up_cost": costs,
                         "channel_multiple": multiple}
    results.write(result, f.json)


def define_flags() -> None:
    """The command line (defined here, not at import: tests import this
    module beside other tools)."""
    flags.DEFINE_integer("depth", 20, "ResNet depth (6n+2).")
    flags.DEFINE_list("input_shape", ["28", "28", "1"], "Image shape.")
    flags.DEFINE_integer("batch_size", 128, "Examples per step.")
    flags.DEFINE_list("widths", ["16/32/64", "15/30/60", "12/24/48",
                                 "10/20/40", "9/18/37", "8/16/32", "7/14/29"],
                      "Stage widths a/b/c, or multipliers of 16/32/64 (the "
                      "first is the reference).")
    flags.DEFINE_integer("rounds", 6, "Round-robin timing rounds.")
    flags.DEFINE_integer("steps", 4, "Timed steps per model per round.")
    flags.DEFINE_string("json", None, "Also write the figures here.")


if __name__ == "__main__":
    define_flags()
    app.run(main)
