"""One training run of a sweep: the recipe's `run` (`recipes.common`) in a
fresh Keras state, here or in a worker process (`tools.sweep`), and the
figures a results file keeps of it.
"""

from __future__ import annotations

import dataclasses
import gc
import os
import tempfile
from typing import Any

import keras

from recipes import common

# What a results file keeps of a recipe run's outcome.
FIGURES = ("accuracy", "params", "channels", "inference_flops",
           "train_flops_spent", "train_flops_dense", "gradient_bytes",
           "memory_traffic_bytes", "reconfiguration_seconds",
           "retrace_seconds", "step_changes", "removed_layers", "timeline",
           "train_seconds", "seconds", "removed_norms", "mask_distances",
           "recalibration_seconds", "search_seconds", "teaching_steps")


def fresh_state() -> None:
    """Frees the previous runs' models and traced functions before a run,
    so that collecting them does not land inside the next run's training.
    Measured once (four identical 2-epoch dense runs in a row): 29.5 / 47.9
    / 27.0 / 23.9 s without it, 25.4 / 25.0 / 28.5 / 25.9 s with it."""
    keras.backend.clear_session()
    gc.collect()


def figures(outcome: dict[str, Any]) -> dict[str, Any]:
    """The `FIGURES` of a recipe run's outcome, and its one-off seconds:
    what the replay adds to a run's steps (the surgery, the first step
    after each reconfiguration minus a steady one, and the frozen
    BatchNorm statistics' re-estimation after cuts, the searched ranking's
    candidates).

    >>> outcome = {key: 0 for key in FIGURES}
    >>> outcome.update(reconfiguration_seconds=0.5, retrace_seconds=1.0,
    ...                recalibration_seconds=0.25, search_seconds=2.0)
    >>> figures(outcome)["one_off_seconds"]
    3.75
    """
    kept = {key: outcome[key] for key in FIGURES}
    kept["one_off_seconds"] = (outcome["reconfiguration_seconds"]
                               + outcome["retrace_seconds"]
                               + outcome["recalibration_seconds"]
                               + outcome["search_seconds"])
    return kept


def train(config: common.Config, architecture: str | None = None
          ) -> dict[str, Any]:
    """One training run, here or in a worker process: its figures, its
    timeline, the model JSON of every architecture it trained, and the
    load average at its end (`architecture`: a model JSON text the run
    trains, as --architecture)."""
    fresh_state()  # a worker's earlier run
    with tempfile.TemporaryDirectory() as folder:
        if architecture is not None:
            path = os.path.join(folder, "architecture.json")
            with open(path, "w", encoding="utf-8") as f:
                f.write(architecture)
            config = dataclasses.replace(config, architecture=path)
        outcome = common.run(config)
    # The 1-minute load average at the run's end: its one-off seconds
    # (re-traces, fades) are measured in the run, not replayed, and a
    # load above the CPU count inflates them.
    return {**figures(outcome), "architectures": outcome["architectures"],
            "load_average": os.getloadavg()[0]}
