r"""How train-step time follows FLOPs on this machine: thin models side by side.

Times the median train step (`train_on_batch`, SGD with momentum) of the
CIFAR ResNet at several uniform width multipliers, in alternating rounds in
one process, and fits `step = fixed + per_flop × FLOPs` (least squares, as
fractions of the full-width model). `fixed` is the share of a step that no
channel pruning can remove (kernel launches, BatchNorm/optimizer
bookkeeping, the first convolution's input, the classifier): it bounds the
wall-time ratio a FLOPs target can reach, whatever channels it removes.

    python tools/step_time.py                          # ResNet-20, 28x28x1, batch 128
    python tools/step_time.py --multipliers=1,0.75,0.5 --rounds=8 --json=steps.json
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
from tf_prunetrain.models import resnet_cifar


def measure(depth: int, shape: tuple[int, ...], batch: int,
            multipliers: list[float], rounds: int, steps: int
            ) -> dict[str, Any]:
    """Median step seconds and FLOPs of each width; the linear fit."""
    rng = np.random.default_rng(0)
    x = rng.random((batch, *shape), np.float32)
    y = rng.integers(0, 10, batch)
    models = {}
    for m in multipliers:
        widths = tuple(max(1, round(w * m)) for w in (16, 32, 64))
        model = resnet_cifar(depth, 10, shape, widths, seed=0)
        model.compile(keras.optimizers.SGD(0.01, momentum=0.9),
                      keras.losses.SparseCategoricalCrossentropy(
                          from_logits=True))
        for _ in range(2):  # trace, then one warm step
            model.train_on_batch(x, y)
        models[m] = (widths, model)
    times: dict[float, list[float]] = {m: [] for m in multipliers}
    for _ in range(rounds):
        for m, (_, model) in models.items():
            for _ in range(steps):
                start = time.perf_counter()
                model.train_on_batch(x, y)
                times[m].append(time.perf_counter() - start)
    base = multipliers[0]
    full_flops = tf_prunetrain.forward_flops(models[base][1])
    full_step = statistics.median(times[base])
    rows = [{"multiplier": m, "widths": list(models[m][0]),
             "flops": tf_prunetrain.forward_flops(models[m][1]) / full_flops,
             "step": statistics.median(times[m]) / full_step,
             "step_seconds": statistics.median(times[m])}
            for m in multipliers]
    per_flop, fixed = np.polyfit([r["flops"] for r in rows],
                                 [r["step"] for r in rows], 1)
    return {"rows": rows, "fixed": float(fixed), "per_flop": float(per_flop)}


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    f = flags.FLAGS
    result = measure(f.depth, tuple(int(d) for d in f.input_shape),
                     f.batch_size, [float(m) for m in f.multipliers],
                     f.rounds, f.steps)
    print("multiplier  widths       FLOPs ratio  step-time ratio")
    for r in result["rows"]:
        print(f"{r['multiplier']:>10g}  {'/'.join(map(str, r['widths'])):<11}"
              f"  {r['flops']:>11.3f}  {r['step']:>15.3f}")
    print(f"fit: step = {result['fixed']:.3f} + {result['per_flop']:.3f} × "
          "FLOPs (fractions of the full-width model)")
    if f.json:
        with open(f.json, "w", encoding="utf-8") as out:
            json.dump(result, out, indent=1)


def define_flags() -> None:
    """The command line (defined here, not at import: tests import this
    module beside other tools)."""
    flags.DEFINE_integer("depth", 20, "ResNet depth (6n+2).")
    flags.DEFINE_list("input_shape", ["28", "28", "1"], "Image shape.")
    flags.DEFINE_integer("batch_size", 128, "Examples per step.")
    flags.DEFINE_list("multipliers", ["1", "0.75", "0.625", "0.5", "0.375",
                                      "0.25"],
                      "Width multipliers of the 16/32/64 stages (the first "
                      "is the reference).")
    flags.DEFINE_integer("rounds", 6, "Alternating timing rounds.")
    flags.DEFINE_integer("steps", 4, "Timed steps per model per round.")
    flags.DEFINE_string("json", None, "Also write the figures here.")


if __name__ == "__main__":
    define_flags()
    app.run(main)
