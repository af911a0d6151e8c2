r"""PruneTrain vs dense, side by side in one process.

Runs the CIFAR recipe twice with the same data, seed, epochs and schedule —
dense (`--noprunetrain`) and PruneTrain — and reports wall time, training
FLOPs spent, inference FLOPs, parameters, held-out top-1, time inside
reconfigurations, gradient bytes per step, and the group-lasso step overhead
(the initial model's median train-step time with its GroupLasso regularizers
vs without, same widths, alternating rounds). Ratios are the headline;
absolute times are context only (a noisy 2-core machine).

    python tools/benchmark.py                                  # MNIST-5k, ResNet-20
    python tools/benchmark.py --epochs=40 --lr_decay_epochs=20,30 --json=bench.json
    python tools/benchmark.py --data=synthetic --image_size=32 --synthetic_size=2048 \
        --epochs=4 --steps_per_epoch=20                        # CIFAR-shape throughput

Every recipe flag (`recipes/common.py`) is accepted; `--prunetrain` is set
by the tool. See BENCHMARKS.md for the latest figures.
"""

from __future__ import annotations

import dataclasses
import json
import os
import statistics
import sys
import time
from typing import Any

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "..", "recipes"))

import keras  # noqa: E402
import numpy as np  # noqa: E402
from absl import app  # noqa: E402
from absl import flags  # noqa: E402

import common  # noqa: E402  (recipes/common.py)
import tf_prunetrain  # noqa: E402

# The default workload, with the settings tuned for it (BENCHMARKS.md): the
# proximal lasso on kernels and BatchNorm scales, λ = 0.15 for the first 3
# epochs, one reconfiguration after them. The paper's settings (λ calibrated
# from a 0.2 penalty ratio, lasso on throughout, every 2 epochs):
# --noproximal --noscales --strength=-1 --penalty_epochs=0 --interval=2.
DEFAULTS = common.Config(model="resnet20", epochs=20, batch_size=128,
                         lr_decay_epochs=(10, 15), proximal=True, scales=True,
                         strength=0.15, penalty_epochs=3, interval=3,
                         verbose=0)
_JSON = flags.DEFINE_string("json", None, "Also write the figures here.")
_ROUNDS = flags.DEFINE_integer("overhead_rounds", 8, "Alternating rounds of "
                               "the group-lasso overhead measurement.")
_STEPS = flags.DEFINE_integer("overhead_steps", 5, "Timed steps per round.")


def group_lasso_overhead(config: common.Config, rounds: int,
                         steps: int) -> dict[str, float]:
    """Median train-step seconds of the initial model with and without its
    GroupLasso regularizers (same widths, same batch), alternating rounds;
    with `config.proximal` the regularizers' cost is their proximal step."""
    data = common.load_data(config)
    x, y = next(iter(data.train(config.batch_size, True)))
    models = {}
    for name, lasso in (("with", True), ("without", False)):
        model = common.build_model(config, data.shape, data.num_classes)
        if lasso:
            model = tf_prunetrain.add_group_lasso(
                model, strength=1e-4, proximal=config.proximal)
        model.compile(keras.optimizers.SGD(0.01, momentum=0.9),
                      keras.losses.SparseCategoricalCrossentropy(
                          from_logits=True))
        tf_prunetrain.attach_proximal_step(model)
        model.train_on_batch(x, y)  # trace
        models[name] = model
    times: dict[str, list[float]] = {"with": [], "without": []}
    for _ in range(rounds):
        for name, model in models.items():
            for _ in range(steps):
                start = time.perf_counter()
                model.train_on_batch(x, y)
                times[name].append(time.perf_counter() - start)
    with_, without = (statistics.median(times[k]) for k in ("with", "without"))
    return {"step_with": with_, "step_without": without,
            "ratio": with_ / without}


def _figures(result: dict[str, Any]) -> dict[str, Any]:
    return {key: result[key] for key in (
        "accuracy", "params", "initial_params", "inference_flops",
        "initial_inference_flops", "train_flops_spent", "train_flops_dense",
        "gradient_bytes", "initial_gradient_bytes", "memory_traffic_bytes",
        "initial_memory_traffic_bytes", "reconfiguration_seconds",
        "retrace_seconds", "train_seconds", "seconds")}


def compare(config: common.Config, rounds: int, steps: int) -> dict[str, Any]:
    """Runs dense and PruneTrain with `config`; returns both and the ratios."""
    dense = common.run(dataclasses.replace(config, prunetrain=False))
    pruned = common.run(dataclasses.replace(config, prunetrain=True))
    overhead = group_lasso_overhead(config, rounds, steps)
    d, p = _figures(dense), _figures(pruned)
    wall = p["train_seconds"] / d["train_seconds"]
    flops = p["train_flops_spent"] / d["train_flops_spent"]
    return {
        "config": dataclasses.asdict(config), "dense": d, "prunetrain": p,
        "group_lasso_overhead": overhead,
        "ratios": {
            "wall_time": wall, "train_flops": flops,
            "wall_over_flops": wall / flops,
            "inference_flops": p["inference_flops"] / d["inference_flops"],
            "params": p["params"] / d["params"],
            "gradient_bytes": p["gradient_bytes"] / d["gradient_bytes"],
            "memory_traffic": p["memory_traffic_bytes"]
            / d["memory_traffic_bytes"],
            "top1_points": 100 * (p["accuracy"] - d["accuracy"]),
            "reconfiguration_share": (p["reconfiguration_seconds"]
                                      + p["retrace_seconds"])
            / p["train_seconds"],
        },
    }


def table(result: dict[str, Any]) -> str:
    d, p, r = result["dense"], result["prunetrain"], result["ratios"]
    o = result["group_lasso_overhead"]
    rows = [
        ("training wall time", f"{d['train_seconds']:.1f} s",
         f"{p['train_seconds']:.1f} s", f"{r['wall_time']:.3f}x"),
        ("training FLOPs spent", f"{d['train_flops_spent']:.3e}",
         f"{p['train_flops_spent']:.3e}", f"{r['train_flops']:.3f}x"),
        ("wall / FLOPs ratio", "", "", f"{r['wall_over_flops']:.3f}"),
        ("inference FLOPs/example", f"{d['inference_flops']:,}",
         f"{p['inference_flops']:,}", f"{r['inference_flops']:.3f}x"),
        ("parameters", f"{d['params']:,}", f"{p['params']:,}",
         f"{r['params']:.3f}x"),
        ("gradient bytes/step", f"{d['gradient_bytes']:,}",
         f"{p['gradient_bytes']:,}", f"{r['gradient_bytes']:.3f}x"),
        ("memory traffic/step (final)", f"{d['memory_traffic_bytes']:.3e}",
         f"{p['memory_traffic_bytes']:.3e}", f"{r['memory_traffic']:.3f}x"),
        ("top-1 (held out)", f"{d['accuracy']:.4f}", f"{p['accuracy']:.4f}",
         f"{r['top1_points']:+.2f} points"),
        ("in reconfigurations", "",
         f"{p['reconfiguration_seconds']:.2f} s + "
         f"{p['retrace_seconds']:.2f} s re-trace",
         f"{100 * r['reconfiguration_share']:.2f}% of training"),
        ("group-lasso step", f"{1e3 * o['step_without']:.1f} ms",
         f"{1e3 * o['step_with']:.1f} ms", f"{o['ratio']:.3f}x"),
    ]
    header = ("", "dense", "PruneTrain", "PruneTrain / dense")
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(4)]
    return "\n".join("  ".join(cell.ljust(w) if i == 0 else cell.rjust(w)
                               for i, (cell, w) in enumerate(zip(row, widths)))
                     for row in [header, *rows])


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    config = common.config_from_flags()
    result = compare(config, _ROUNDS.value, _STEPS.value)
    print(table(result))
    if _JSON.value:
        with open(_JSON.value, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=1,
                      default=lambda v: np.asarray(v).tolist())


if __name__ == "__main__":
    common.define_flags(DEFAULTS)
    app.run(main)
