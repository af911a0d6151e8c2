"""`EarlyBird`: one cut, when the channel mask stops moving (experimental)."""

from __future__ import annotations

from typing import Any

import numpy as np

from tf_prunetrain import _checks
from tf_prunetrain import budget
from tf_prunetrain import importance as importance_lib
from tf_prunetrain import schedules

# The default deadline, as a fraction of fit's epochs.
DEADLINE_FRACTION = 0.5


class EarlyBird(schedules.Schedule):
    """Cut once, to `target`, when the channel mask stops moving.

    After every epoch (`gentle`: as the next begins, so that its cut follows
    one epoch of fading), the ranking plans the cut to `target` (the
    "mask": which channels it would keep) and compares it with the last
    epoch's: the distance is the fraction of channel sets
    whose fate changed (a normalised Hamming distance, as the Early-Bird
    tickets of You et al., ICLR 2020). When the last `window` distances
    are all at most `distance`, the cut is made and pruning ends; if the
    mask has not settled by `deadline`, the cut is made there. Every
    replica applies the first replica's decision (`Reconfigure`), and
    checkpoints carry the last mask and distances, so a resumed run
    decides as the uninterrupted one would.

    Experimental (off unless chosen): BENCHMARKS.md, "Issue 31, cut time
    and re-warm", has its figures against `FlopsBudget`'s fixed epochs.

    Args:
      target: in (0, 1): the final FLOPs as a fraction of the initial.
      distance: in [0, 1]: the largest distance that counts as settled
        (the paper: 0.1).
      window: how many successive distances must be settled (the paper:
        5 of 160 epochs; the default suits runs of tens of epochs).
      deadline: the last epoch (1-based) to cut after; default half of
        `fit`'s epochs. It must not be past `fit`'s last epoch.
      threshold, ranking, importance, gentle: as `schedules.Schedule`'s.

    Example:
    >>> from tf_prunetrain.experimental import EarlyBird
    >>> s = EarlyBird(0.5, window=2)
    >>> s.settled([0.3, 0.08, 0.05]), s.settled([0.08, 0.3])
    (True, False)
    """

    def __init__(self, target: float, distance: float = 0.1,
                 window: int = 2, deadline: int | None = None,
                 threshold: float = 1e-4,
                 ranking: budget.Ranking | None = None,
                 importance: importance_lib.Importance | None = None,
                 gentle: bool = True):
        _checks.open_fraction(target, "target", "EarlyBird")
        _checks.positive_int(deadline, "deadline", "EarlyBird", optional=True)
        _checks.non_negative(distance, "distance", "EarlyBird")
        if distance > 1:
            raise ValueError("EarlyBird: distance must be in [0, 1] (a "
                             f"fraction of channel sets), got {distance!r}.")
        _checks.positive_int(window, "window", "EarlyBird")
        super().__init__(ranking, importance, gentle, threshold)
        self.target, self.distance = float(target), float(distance)
        self.window, self._deadline = window, deadline
        self.deadline: int | None = deadline  # fixed by start, checkpointed
        # Carried by checkpoints: the last mask and the distances so far.
        self.mask: np.ndarray | None = None
        self.distances: list[float] = []

    def settled(self, distances: list[float]) -> bool:
        """Whether the last `window` of `distances` are all settled."""
        return len(distances) >= self.window and \
            max(distances[-self.window:]) <= self.distance

    def cut_epochs(self, epochs: int) -> list[int]:
        last = self.deadline or max(1, round(DEADLINE_FRACTION * epochs))
        return list(range(1, last + 1))

    def goal(self, epoch: int) -> float:
        return self.target

    def check(self, epochs: int) -> None:
        if self.deadline is None and epochs < 2:
            raise ValueError(
                f"EarlyBird: fit runs {epochs} epoch(s); it needs at least 2 "
                "(one to cut after, one to train the smaller model). Train "
                "longer, or pass a deadline and fit up to it.")
        if self.cut_epochs(epochs)[-1] > epochs:
            raise ValueError(
                f"EarlyBird: deadline={self.deadline} is past fit's last "
                f"epoch ({epochs}): the cut might never be made. Pass a "
                "smaller deadline or more epochs.")

    def start(self, context: schedules.Context) -> None:
        if not context.resumed:
            self.check(context.epochs)
        self.deadline = self.cut_epochs(context.epochs)[-1]
        super().start(context)

    def decide(self, epoch: int, context: schedules.Context
               ) -> schedules.Decision | None:
        final = epoch >= self.deadline
        if self.gentle and epoch == 1 and not final:
            return None  # asked before any training: no mask yet
        plan = self.plan(self.target, context)
        mask = np.asarray(plan.keep, bool)[plan.graph.prunable()]
        if self.mask is not None and len(self.mask) == len(mask):
            self.distances.append(float(np.mean(self.mask != mask)))
        self.mask = mask
        if final or self.settled(self.distances):
            return schedules.Decision(plan, last=True)
        return None

    def get_config(self) -> dict[str, Any]:
        return {"target": self.target, "distance": self.distance,
                "window": self.window, "deadline": self._deadline,
                **super().get_config()}

    def get_state(self) -> dict[str, Any]:
        return {**super().get_state(), "deadline": self.deadline,
                "distances": self.distances, "mask": None
                if self.mask is None
                else "".join("1" if k else "0" for k in self.mask)}

    def set_state(self, state: dict[str, Any]) -> None:
        super().set_state(state)
        self.deadline = state.get("deadline", self.deadline)
        self.distances = list(state.get("distances", []))
        mask = state.get("mask")
        self.mask = None if mask is None else \
            np.array([c == "1" for c in mask], bool)
