"""What has not measured worth it: off unless chosen, imported on first use.

* `EarlyBird(target)`: one cut to `target` when the channel mask stops
  moving (You et al., ICLR 2020), or at a deadline (`early_bird`).
* `Rewarm(epochs)`: the learning rate lifted after each cut and let fall
  back (`rewarm`). A model saved during a re-warmed `fit` wraps its
  learning-rate schedule: loading it needs `tf_prunetrain.experimental.
  Rewarm` (or `tf_prunetrain.experimental.rewarm`) imported first.
* `RecalibrateBatchNorm(data)` / `recalibrate_batchnorm(model, data)`:
  frozen BatchNorm statistics re-estimated on training batches after each
  cut (`recalibration`). On a frozen-BatchNorm fine-tune it lifted 4 of
  PruneTrain's 5 seeds and left one to diverge later.

* `SearchedWidths(data)`: a ranking whose cut keeps the candidate widths
  with the lowest loss after BatchNorm re-calibration, the thin widths
  among them (`search`). Its widths beat thin ones from scratch on VGG-11
  only; cutting to them in the run never beat the thin widths' cut.
* `Distill(epochs)`: the model before each cut teaches the one after it
  (`distillation`). It cost 1 to 3 points wherever it was measured.

BENCHMARKS.md ("Issue 31, cut time and re-warm"; "Issue 37" for the
re-estimation; "Issue 38" for the last two) has their figures. None is imported with `tf_prunetrain`: the first access to a name below imports
its module.

Example:
>>> import tf_prunetrain
>>> tf_prunetrain.experimental.EarlyBird(0.5).cut_epochs(10)
[1, 2, 3, 4, 5]
"""

from __future__ import annotations

import importlib
from typing import Any

# Public name -> the submodule defining it.
_LAZY = {"Distill": "distillation", "EarlyBird": "early_bird", "Rewarm": "rewarm", "Rewarmed": "rewarm",
         "RecalibrateBatchNorm": "recalibration",
         "recalibrate_batchnorm": "recalibration",
         "SearchedWidths": "search"}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module = importlib.import_module(f"{__name__}.{_LAZY[name]}")
        return getattr(module, name)
    if name in set(_LAZY.values()):
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY) | set(_LAZY.values()))
