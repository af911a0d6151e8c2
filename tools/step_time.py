r"""How train-step time follows FLOPs and channel counts on this machine.

Times the median train step (`train_on_batch`, SGD with momentum) of the
CIFAR ResNet at several stage widths, in alternating rounds in one process,
and fits `step = fixed + per_flop × FLOPs` (least squares, as fractions of
the first model). `fixed` is the share of a step that no channel pruning can
remove (kernel launches, BatchNorm/optimizer bookkeeping, the first
convolution's input, the classifier): it bounds the wall-time ratio a FLOPs
target can reach, whatever channels it removes. The default widths are
issue #14's table: one channel less per stage can be slower than dense.

It then prints this device's convolution latency table
(`tf_prunetrain.latency`) and the channel multiple `round_to="auto"` picks
from it.

    python tools/step_time.py                      # ResNet-20, 28x28x1, batch 128
    python tools/step_time.py --widths=1,0.75,0.5 --rounds=8 --json=steps.json
"""

from __future__ import annotations

import json
import statistics
import time
from typing import Any

import keras
import numpy as np
from absl import app
from absl import flags

import tf_prunetrain
from tf_prunetrain import latency
from tf_prunetrain.models import resnet_cifar


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
            entries: list[float | tuple[int, ...]], rounds: int, steps: int
            ) -> dict[str, Any]:
    """Median step seconds and FLOPs of each width (multipliers or stage
    widths; the first is the reference); the linear fit."""
    rng = np.random.default_rng(0)
    x = rng.random((batch, *shape), np.float32)
    y = rng.integers(0, 10, batch)
    models = {}
    for m in entries:
        widths = stage_widths(m)
        model = resnet_cifar(depth, 10, shape, widths, seed=0)
        model.compile(keras.optimizers.SGD(0.01, momentum=0.9),
                      keras.losses.SparseCategoricalCrossentropy(
                          from_logits=True))
        for _ in range(2):  # trace, then one warm step
            model.train_on_batch(x, y)
        models[m] = (widths, model)
    times: dict[Any, list[float]] = {m: [] for m in entries}
    for _ in range(rounds):
        for m, (_, model) in models.items():
            for _ in range(steps):
                start = time.perf_counter()
                model.train_on_batch(x, y)
                times[m].append(time.perf_counter() - start)
    base = entries[0]
    full_flops = tf_prunetrain.forward_flops(models[base][1])
    full_step = statistics.median(times[base])
    rows = [{"widths": list(models[m][0]),
             "flops": tf_prunetrain.forward_flops(models[m][1]) / full_flops,
             "step": statistics.median(times[m]) / full_step,
             "step_seconds": statistics.median(times[m])}
            for m in entries]
    per_flop, fixed = np.polyfit([r["flops"] for r in rows],
                                 [r["step"] for r in rows], 1)
    return {"rows": rows, "fixed": float(fixed), "per_flop": float(per_flop)}


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
    print(f"round_to='auto' picks {multiple} here")
    result["latency"] = {"device": table.device, "dtype": table.dtype,
                         "seconds": table.seconds, "round_up_cost": costs,
                         "auto": multiple}
    if f.json:
        with open(f.json, "w", encoding="utf-8") as out:
            json.dump(result, out, indent=1)


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
    flags.DEFINE_integer("rounds", 6, "Alternating timing rounds.")
    flags.DEFINE_integer("steps", 4, "Timed steps per model per round.")
    flags.DEFINE_string("json", None, "Also write the figures here.")


if __name__ == "__main__":
    define_flags()
    app.run(main)
