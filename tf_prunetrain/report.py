"""Figures from PruneTrain run logs (`<log_dir>/prunetrain.jsonl`).

`render(runs, out_dir)` writes:

* `channels.png` — output channels of every convolution/Dense layer, one line
  per reconfiguration that changed the model (the paper's figure style), for
  each run that reconfigured;
* `flops.png` — training FLOPs per step, cumulative training FLOPs (with
  what the dense model would have spent on the same steps) and parameters,
  per epoch;
* `curves.png` — loss and accuracy per epoch (training and validation), one
  colour per run: give a dense baseline's log (written by `RunLog`) beside a
  PruneTrain run's to compare them.

From the command line: `python -m tools.report --log=... --out_dir=...`.
Needs matplotlib: pip install 'tf-prunetrain[plots]'.
"""

from __future__ import annotations

import json
import os
import warnings
from typing import Any

ACCURACY_KEYS = ("accuracy", "sparse_categorical_accuracy",
                 "categorical_accuracy", "acc")


def load(path: str) -> list[dict[str, Any]]:
    """The records of a run log; a torn last line (a killed run) is skipped
    with a warning."""
    if os.path.isdir(path):
        path = os.path.join(path, "prunetrain.jsonl")
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"report: no run log at '{path}': pass the prunetrain.jsonl a "
            "RunLog/Reconfigure callback with log_dir=... wrote.")
    records = []
    with open(path, encoding="utf-8") as f:
        lines = f.read().splitlines()
    for number, line in enumerate(lines, 1):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if number != len(lines):
                raise ValueError(f"report: '{path}' line {number} is not JSON; "
                                 "the run log is corrupt.") from None
            warnings.warn(f"report: skipped the torn last line of '{path}'.")
    if not any(r.get("event") == "epoch" for r in records):
        raise ValueError(f"report: '{path}' has no epoch record yet.")
    return records


def _events(records: list[dict], event: str) -> list[dict]:
    return [r for r in records if r.get("event") == event]


def _scale(values: list[float]) -> tuple[float, str]:
    top = max((abs(v) for v in values), default=0.0)
    for factor, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if top >= factor:
            return factor, prefix
    return 1.0, ""


def _channels_figure(plt: Any, runs: list[tuple[str, list[dict]]],
                     path: str) -> bool:
    pruned = [(label, records) for label, records in runs
              if any(r.get("changes") for r in _events(records, "reconfiguration"))]
    if not pruned:
        return False
    fig, axes = plt.subplots(len(pruned), 1, squeeze=False,
                             figsize=(11, 4.2 * len(pruned)))
    for ax, (label, records) in zip(axes[:, 0], pruned):
        start = records[0].get("channels") or {}
        names = list(start)
        snapshots = [("initial", start)] + [
            (f"after epoch {r['epoch']}", r["channels"])
            for r in _events(records, "reconfiguration") if r.get("changes")]
        for index, (name, channels) in enumerate(snapshots):
            ax.plot(range(len(names)), [channels.get(n, 0) for n in names],
                    marker="o", markersize=3, linewidth=1.2,
                    color=plt.cm.viridis(index / max(len(snapshots) - 1, 1)),
                    label=name)
        step = max(1, len(names) // 40)
        ax.set_xticks(range(0, len(names), step))
        ax.set_xticklabels(names[::step], rotation=90, fontsize=7)
        ax.set_ylabel("output channels")
        ax.set_title(f"{label}: channels per layer at each reconfiguration")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _flops_figure(plt: Any, runs: list[tuple[str, list[dict]]],
                  path: str) -> None:
    fig, (per_step, total, params) = plt.subplots(1, 3, figsize=(15, 4.2))
    everything = [r for _, records in runs for r in _events(records, "epoch")]
    step_scale, step_prefix = _scale(
        [r["cost"]["train_flops"] for r in everything if "cost" in r])
    total_scale, total_prefix = _scale(
        [r["train_flops_dense"] for r in everything]
        + [r["train_flops_spent"] for r in everything])
    for index, (label, records) in enumerate(runs):
        epochs = [r for r in _events(records, "epoch") if "cost" in r]
        if not epochs:
            continue
        colour = f"C{index}"
        x = [r["epoch"] for r in epochs]
        # What each epoch ran: its FLOPs over its steps (a record's cost is
        # the model after that epoch's reconfiguration).
        ran, spent, steps = [], 0, 0
        for r in epochs:
            ran.append((r["train_flops_spent"] - spent)
                       / max(r["steps"] - steps, 1) / step_scale)
            spent, steps = r["train_flops_spent"], r["steps"]
        per_step.plot(x, ran, color=colour, marker=".", label=label)
        total.plot([0] + x, [0] + [r["train_flops_spent"] / total_scale
                                   for r in epochs],
                   color=colour, label=f"{label}: spent")
        if any(r["train_flops_spent"] != r["train_flops_dense"]
               for r in epochs):
            saved = 1 - epochs[-1]["train_flops_spent"] / max(
                epochs[-1]["train_flops_dense"], 1)
            total.plot([0] + x, [0] + [r["train_flops_dense"] / total_scale
                                       for r in epochs],
                       color=colour, linestyle="--",
                       label=f"{label}: dense, same steps "
                             f"({100 * saved:.0f}% saved)")
        params.plot(x, [r["cost"]["params"] for r in epochs], color=colour,
                    marker=".", label=label)
    batch = {r.get("batch_size") for _, rs in runs for r in _events(rs, "start")}
    per_example = batch == {None}
    per_step.set_title("Training FLOPs per "
                       + ("example-step" if per_example else "step"))
    per_step.set_ylabel(f"{step_prefix}FLOPs")
    total.set_title("Cumulative training FLOPs")
    total.set_ylabel(f"{total_prefix}FLOPs")
    params.set_title("Parameters at the end of each epoch")
    params.set_ylabel("parameters")
    for ax in (per_step, total, params):
        ax.xaxis.set_major_locator(plt.MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _curves_figure(plt: Any, runs: list[tuple[str, list[dict]]],
                   path: str) -> None:
    keys = {k for _, rs in runs for r in _events(rs, "epoch") for k in r["logs"]}
    accuracy = next((k for k in ACCURACY_KEYS if k in keys), None)
    metrics = ["loss"] + ([accuracy] if accuracy else [])
    fig, axes = plt.subplots(1, len(metrics), figsize=(6.5 * len(metrics), 4.2),
                             squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        for index, (label, records) in enumerate(runs):
            epochs = _events(records, "epoch")
            for prefix, style in (("", "-"), ("val_", "--")):
                values = [(r["epoch"], r["logs"][prefix + metric])
                          for r in epochs if prefix + metric in r["logs"]]
                if values:
                    ax.plot(*zip(*values), color=f"C{index}", linestyle=style,
                            label=f"{label} ({'validation' if prefix else 'training'})")
        for r in _events(runs[0][1], "reconfiguration"):
            if r.get("changes"):
                ax.axvline(r["epoch"], color="grey", alpha=0.3, linewidth=0.8)
        ax.set_title(metric.replace("_", " ")
                     + (" (grey: reconfigurations)" if metric == "loss" else ""))
        ax.xaxis.set_major_locator(plt.MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def render(runs: list[tuple[str, list[dict]]], out_dir: str) -> list[str]:
    """Draws the figures for `(label, records)` runs; returns the PNG paths."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        raise ImportError("report: needs matplotlib: pip install "
                          "'tf-prunetrain[plots]'.") from e
    os.makedirs(out_dir, exist_ok=True)
    written = []
    path = os.path.join(out_dir, "channels.png")
    if _channels_figure(plt, runs, path):
        written.append(path)
    for name, draw in (("flops.png", _flops_figure),
                       ("curves.png", _curves_figure)):
        path = os.path.join(out_dir, name)
        draw(plt, runs, path)
        written.append(path)
    return written
