"""Searched widths: the cut's widths chosen by measured loss.

`budget.ThinWidths` cuts to a uniformly thinner network, so at best it ties
the thin network trained from scratch (issue 38). `SearchedWidths` is a
`budget.Ranking` that, at every cut, scores candidate width vectors at the
FLOPs goal and keeps the best (EagleEye, ECCV 2020; Li et al., CVPR 2022:
random layer-wise widths, each judged after BatchNorm re-calibration):

* Candidate 0 is always the thin widths (`ThinWidths`' own plan); the
  others scale each start width by a random factor `exp(u)`, `u` uniform
  in `[-spread, spread]`: alternately one factor per *stage* (the outputs
  that start equally wide: ResNet's stages, VGG's blocks) and one per
  layer. One multiplier per candidate then meets the goal as `ThinWidths`
  does (bisection on the estimated FLOPs); the channels kept in each layer
  are the highest-scored, as for thin widths. Duplicates are scored once.
* Each candidate is built as a physically smaller copy (`surgery.rebuild`;
  the model itself is not touched), its every BatchNorm's statistics
  re-estimated on `calibration_steps` batches of `data`
  (`recalibrate_batchnorm`), and scored by the compiled loss, in inference
  mode, on the next `eval_steps` batches. The lowest mean loss wins; a tie
  keeps the earlier candidate (the thin widths first).
* Deterministic for a `seed`: candidate k of the n-th search draws from
  `numpy.random.default_rng((seed, n))`; the batches are the first of
  `data`, read once and kept. `Reconfigure` applies the first replica's
  plan on every replica and worker, so one decision holds everywhere.
* Priced: `seconds` adds up the time spent searching (a one-off of the
  cut, like its surgery); `history` lists every search's candidates
  (their `Plan.changes()`, the thin widths first), losses and choice.

A schedule's `from_config` cannot rebuild it (it needs `data`): build the
schedule with it again to resume (`Checkpoint` carries its state).

Give it data the model is not trained on when you can (a held-out slice
of the training set); the recipes' `--ranking=searched` uses a fixed
slice of training batches, the same for every run of a seed.

Example:
>>> import keras, numpy as np, tf_prunetrain
>>> from tf_prunetrain import budget
>>> from tf_prunetrain.experimental import search
>>> x = keras.Input((8, 8, 1))
>>> h = keras.layers.Conv2D(16, 3, padding="same", name="c1")(x)
>>> h = keras.layers.BatchNormalization(name="bn1")(h)
>>> h = keras.layers.Conv2D(32, 3, padding="same", name="c2")(h)
>>> h = keras.layers.GlobalAveragePooling2D()(h)
>>> model = keras.Model(x, keras.layers.Dense(3, name="head")(h))
>>> model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(
...     from_logits=True))
>>> rng = np.random.default_rng(0)
>>> data = [(rng.random((8, 8, 8, 1)), np.arange(8) % 3) for _ in range(4)]
>>> ranking = search.SearchedWidths(data, candidates=4, calibration_steps=2,
...                                 eval_steps=2, seed=0)
>>> graph = tf_prunetrain.channel_groups(model)
>>> plan = budget.plan_to_flops(graph, 0.25 * tf_prunetrain.cost
...                             .forward_flops(model), ranking=ranking)
>>> len(ranking.history[0]["losses"]) >= 2, ranking.seconds > 0
(True, True)
"""

from __future__ import annotations

import itertools
import math
import time
from typing import Any, Iterable

import keras
import numpy as np

from tf_prunetrain import _checks
from tf_prunetrain import budget
from tf_prunetrain import coupling
from tf_prunetrain import importance as importance_lib
from tf_prunetrain import planning
from tf_prunetrain import surgery
from tf_prunetrain.experimental import recalibration

# Bisection steps on the multiplier that meets the goal (2^-30 of its range).
_BISECTIONS = 30


class SearchedWidths(budget.ThinWidths):
    """Cuts to the candidate widths with the lowest measured loss (module
    doc); candidate 0 is always `ThinWidths`' uniform widths.

    Args:
      data: batches `(x, y)` (a `tf.data.Dataset` or any iterable): the
        first `calibration_steps` re-estimate BatchNorm statistics, the next
        `eval_steps` score. Read once, at the first search.
      candidates: width vectors scored per cut, the thin widths included
        (>= 1; 1 is `ThinWidths`).
      spread: the largest |log| of a random width factor (> 0).
      calibration_steps, eval_steps: batches of `data` for each (>= 1).
      seed: the candidates' seed.
      verbose: 1 prints each search's losses.
    """

    def __init__(self, data: Iterable[Any], candidates: int = 8,
                 spread: float = math.log(2.0), calibration_steps: int = 10,
                 eval_steps: int = 5, seed: int = 0, verbose: int = 0
                 ) -> None:
        super().__init__()
        _checks.positive_int(candidates, "candidates", "SearchedWidths")
        _checks.positive_int(calibration_steps, "calibration_steps",
                             "SearchedWidths")
        _checks.positive_int(eval_steps, "eval_steps", "SearchedWidths")
        if isinstance(spread, bool) or not isinstance(
                spread, (int, float)) or not spread > 0:
            raise ValueError(f"SearchedWidths: spread must be a number > 0, "
                             f"got {spread!r}.")
        self.data, self.candidates, self.spread = data, candidates, spread
        self.calibration_steps, self.eval_steps = calibration_steps, eval_steps
        self.seed, self.verbose = seed, verbose
        self.seconds = 0.0
        self.history: list[dict[str, Any]] = []
        self._batches: list[Any] | None = None

    def plan(self, graph: coupling.ChannelGraph, goal: float,
             scores: importance_lib.Scores,
             constraints: planning.Constraints) -> planning.Plan:
        start = time.perf_counter()
        thin = super().plan(graph, goal, scores, constraints)
        outputs = budget.prunable_outputs(graph, scores)
        plans, seen = [thin], {thin.keep.tobytes()}
        rng = np.random.default_rng((self.seed, len(self.history)))
        for k in range(1, self.candidates):
            factors = self._factors(outputs, rng, by_stage=k % 2 == 1)
            plan = self._at_goal(graph, outputs, goal, scores, constraints,
                                 factors)
            if plan.keep.tobytes() not in seen:
                seen.add(plan.keep.tobytes())
                plans.append(plan)
        losses = [self._loss(graph.model, plan) for plan in plans]
        best = int(np.argmin(losses))  # the first of equals: thin first
        self.seconds += time.perf_counter() - start
        self.history.append({"losses": losses, "chosen": best,
                             "candidates": [p.changes() for p in plans]})
        if self.verbose:
            print(f"SearchedWidths: {len(plans)} candidates, losses "
                  + " ".join(f"{v:.4f}" for v in losses)
                  + f"; chose {best} ({'thin' if best == 0 else 'searched'})"
                  f" in {time.perf_counter() - start:.1f} s")
        return plans[best]

    def _factors(self, outputs: dict[str, np.ndarray],
                 rng: np.random.Generator, by_stage: bool
                 ) -> dict[str, float]:
        """A random width factor per stage (outputs of one start width) or
        per output."""
        paths = sorted(outputs)
        groups = sorted({self.widths.get(p, len(outputs[p])) for p in paths}) \
            if by_stage else paths
        drawn = dict(zip(groups, np.exp(rng.uniform(
            -self.spread, self.spread, len(groups)))))
        return {p: float(drawn[self.widths.get(p, len(outputs[p]))
                               if by_stage else p]) for p in paths}

    def _at_goal(self, graph: coupling.ChannelGraph,
                 outputs: dict[str, np.ndarray], goal: float,
                 scores: importance_lib.Scores,
                 constraints: planning.Constraints,
                 factors: dict[str, float]) -> planning.Plan:
        """The plan with `factors` whose estimated FLOPs come nearest the
        goal (one multiplier for all, bisected)."""
        def thinned(m: float) -> tuple[planning.Plan, float]:
            plan = self.thinned(graph, outputs, m, scores, constraints,
                                factors)
            return plan, budget.estimate_flops(graph, plan.keep)

        low, high = 0.0, 1.0 / min(factors.values(), default=1.0)
        for _ in range(_BISECTIONS):
            middle = (low + high) / 2
            if thinned(middle)[1] >= goal:
                high = middle
            else:
                low = middle
        return budget.nearer(thinned(low), thinned(high), goal)

    def _loss(self, model: keras.Model, plan: planning.Plan) -> float:
        """The mean compiled loss of the cut copy, its BatchNorm statistics
        re-estimated first (the model is not touched)."""
        batches = self._read()
        loss = _loss_function(model)
        copy = surgery.rebuild(plan)
        recalibration.recalibrate_batchnorm(
            copy, batches[:self.calibration_steps], self.calibration_steps,
            layers=recalibration.batchnorm_layers(copy))
        total, count = 0.0, 0
        for x, y in batches[self.calibration_steps:]:
            n = int(keras.ops.shape(y)[0])
            total += float(keras.ops.mean(loss(y, copy(x, training=False)))) * n
            count += n
        return total / count

    def _read(self) -> list[Any]:
        if self._batches is None:
            wanted = self.calibration_steps + self.eval_steps
            batches = [tuple(b)[:2] for b in itertools.islice(
                iter(self.data), wanted)]
            if len(batches) < wanted:
                raise ValueError(
                    f"SearchedWidths: data gave {len(batches)} batches; "
                    f"calibration_steps + eval_steps = {wanted} are needed. "
                    "Pass more data (e.g. dataset.repeat()) or fewer steps.")
            self._batches = batches
        return self._batches

    def get_state(self) -> dict:
        """The widths, seconds and every search so far (its count seeds the
        next one: a resumed run draws what the uninterrupted run drew)."""
        return {**super().get_state(), "history": self.history,
                "seconds": self.seconds}

    def set_state(self, state: dict) -> None:
        super().set_state(state)
        self.seconds = state.get("seconds", 0.0)
        self.history = list(state.get("history", []))

    def __repr__(self) -> str:
        return (f"SearchedWidths(candidates={self.candidates}, seed="
                f"{self.seed})")


def _loss_function(model: keras.Model) -> Any:
    """`model`'s compiled loss as a callable `(y, y_pred)` (a scalar, or
    one value per example: the caller averages)."""
    if not model.compiled or model.loss is None:
        raise ValueError(
            f"SearchedWidths: model '{model.name}' is not compiled with a "
            "loss; candidates are scored by the compiled loss. Compile it "
            "(model.compile(optimizer, loss=...)) before fit.")
    if isinstance(model.loss, str):
        return keras.losses.get(model.loss)
    if callable(model.loss):
        return model.loss
    raise ValueError(
        f"SearchedWidths: model '{model.name}' has a loss of several "
        f"outputs ({type(model.loss).__name__}); candidates are scored by "
        "one loss of one output.")
