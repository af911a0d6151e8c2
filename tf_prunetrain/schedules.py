"""Schedules: when `Reconfigure` cuts, and what.

A `Schedule` is asked after every epoch of `fit` (until it says it is done)
and answers with a `Decision`: a pruning `Plan` to apply now, or none, and
whether the pruning phase ends there (the group lasso is then switched off
and the smaller model trains on without it). It sees the run through a
`Context`: the model, its channel graph, the FLOPs at the start, fit's
epochs and the width rules (`round_to`, `min_channels`). `Reconfigure` does
the rest: it calibrates λ, makes every replica apply the first replica's
decision, shrinks the model in place, and saves the schedule's state with
its own in checkpoints.

Two are built in:

* `FlopsBudget(target)` (recommended): the inference FLOPs are cut to
  `target` of the initial by `target_epoch`, along a cubic curve, removing
  dead channel sets first and then the live ones with the least weight norm
  per FLOP (`budget.plan_to_flops`).
* `DeadChannels()` (the paper's): every `interval` epochs, remove the
  channels the group lasso has driven to zero (`planning.plan_pruning`).

An experimental one (issue 31; off unless chosen, BENCHMARKS.md has its
figures):

* `EarlyBird(target)`: one cut to `target`, made when the channels it
  would remove stop changing from epoch to epoch (You et al., ICLR 2020),
  or at a deadline.

Write your own by subclassing `Schedule` (README, "Your own schedule").
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any

import keras
import numpy as np

from tf_prunetrain import _checks
from tf_prunetrain import budget
from tf_prunetrain import cost as cost_lib
from tf_prunetrain import coupling
from tf_prunetrain import planning

# `DeadChannels`' default interval (the paper's, on CIFAR), and
# `FlopsBudget`'s default target epoch as a fraction of fit's epochs.
DEAD_CHANNELS_INTERVAL = 10
TARGET_FRACTION = 0.25
# `EarlyBird`'s default deadline, as a fraction of fit's epochs.
DEADLINE_FRACTION = 0.5


@dataclasses.dataclass
class Context:
    """What a schedule sees of the run.

    `epochs` is `fit`'s number of epochs; `initial_flops` the model's
    forward FLOPs per example at the start of the first `fit` (None for
    dynamic input sizes); `resumed` is True when the run was restored from
    a checkpoint. Plans must keep convolution/Dense widths multiples of
    `round_to` and at least `min_channels` channels per layer.
    """

    model: keras.Model
    epochs: int
    initial_flops: int | None
    round_to: int
    min_channels: int
    resumed: bool = False

    @functools.cached_property
    def graph(self) -> coupling.ChannelGraph:
        """The model's channel graph now (`channel_groups`)."""
        return coupling.channel_groups(self.model)

    @property
    def flops(self) -> int | None:
        """Forward FLOPs per example of the model now (None: dynamic)."""
        return None if self.initial_flops is None else \
            cost_lib.forward_flops(self.model)


@dataclasses.dataclass
class Decision:
    """A schedule's answer after an epoch: the plan to apply now (None: no
    cut) and whether the pruning phase ends with it (`last`)."""

    plan: planning.Plan | None
    last: bool = False


class Schedule:
    """Decides after each epoch what `Reconfigure` cuts.

    Subclasses implement `decide`; override `start` to check arguments
    against the run before anything changes, `get_config` so the schedule
    can be described and rebuilt, and `get_state`/`set_state` for what a
    checkpoint must carry (values decided during the run).

    Example (cut the dead channels at given epochs, then stop):
    >>> import keras, numpy as np, tf_prunetrain
    >>> from tf_prunetrain import planning, schedules
    >>> from tf_prunetrain.models import resnet_cifar
    >>> class AtEpochs(schedules.Schedule):
    ...     def __init__(self, epochs):
    ...         self.epochs = sorted(epochs)
    ...     def decide(self, epoch, context):
    ...         if epoch not in self.epochs:
    ...             return None
    ...         plan = planning.plan_pruning(
    ...             context.graph, round_to=context.round_to,
    ...             min_channels=context.min_channels)
    ...         return schedules.Decision(plan, last=epoch == self.epochs[-1])
    ...     def get_config(self):
    ...         return {"epochs": self.epochs}
    >>> model = tf_prunetrain.add_group_lasso(
    ...     resnet_cifar(8, input_shape=(8, 8, 1), widths=(4, 8, 8), seed=0))
    >>> model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(
    ...     from_logits=True))
    >>> cb = tf_prunetrain.Reconfigure(AtEpochs([1, 2]), round_to=1, verbose=0)
    >>> x, y = np.random.rand(32, 8, 8, 1), np.arange(32) % 10
    >>> _ = model.fit(x, y, epochs=3, verbose=0, callbacks=[cb])
    >>> [r.epoch for r in cb.reconfigurations], cb.finished, cb.strength
    ([1, 2], 2, 0.0)
    """

    def start(self, context: Context) -> None:
        """Called when `fit` starts (before its first step and before
        anything is changed); raise ValueError for arguments the run cannot
        meet."""

    def decide(self, epoch: int, context: Context) -> Decision | None:
        """The decision after the 1-based `epoch`, or None (nothing now)."""
        raise NotImplementedError(
            f"{type(self).__name__}.decide: a Schedule subclass must "
            "implement decide(epoch, context).")

    def upcoming(self, epoch: int, context: Context) -> planning.Plan | None:
        """Asked when the 1-based `epoch` begins: the cut to be made after
        it, if its channels should fade to zero during it
        (`fading.Fade`); None (the default): no fading."""
        return None

    def get_config(self) -> dict[str, Any]:
        """The constructor arguments (JSON-ready)."""
        return {}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "Schedule":
        return cls(**config)

    def get_state(self) -> dict[str, Any]:
        """What a checkpoint carries besides the config (JSON-ready)."""
        return {}

    def set_state(self, state: dict[str, Any]) -> None:
        """Restores `get_state()`'s values."""

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


class DeadChannels(Schedule):
    """The paper's schedule: remove the channels the lasso zeroed.

    Every `interval` epochs, the channels whose coupled kernel slices all
    have `max|w| < threshold` are removed (with residual branches cut off
    by them). With `penalty_epochs`, the last cut is after that epoch and
    the group lasso stops there (a short, strong pruning phase, then plain
    training of what is left); without, it acts for the whole run.

    Args:
      interval: epochs between cuts (the paper: 10, on CIFAR).
      threshold: deadness threshold on absolute kernel values.
      penalty_epochs: None, or the epoch after which pruning ends.

    Example:
    >>> from tf_prunetrain.schedules import DeadChannels
    >>> s = DeadChannels(interval=2, penalty_epochs=5)
    >>> [e for e in range(1, 8) if s.due(e)]
    [2, 4, 5]
    """

    def __init__(self, interval: int = DEAD_CHANNELS_INTERVAL,
                 threshold: float = 1e-4,
                 penalty_epochs: int | None = None):
        _checks.positive_int(interval, "interval", "DeadChannels")
        _checks.non_negative(threshold, "threshold", "DeadChannels")
        _checks.positive_int(penalty_epochs, "penalty_epochs",
                             "DeadChannels", optional=True)
        self.interval, self.threshold = interval, threshold
        self.penalty_epochs = penalty_epochs

    def due(self, epoch: int) -> bool:
        """Whether a cut is made after the 1-based `epoch`."""
        last = self.penalty_epochs
        return (last is None or epoch <= last) and (
            epoch % self.interval == 0 or epoch == last)

    def decide(self, epoch: int, context: Context) -> Decision | None:
        if not self.due(epoch):
            return None
        plan = planning.plan_pruning(context.graph, self.threshold,
                                     round_to=context.round_to,
                                     min_channels=context.min_channels)
        return Decision(plan, last=epoch == self.penalty_epochs)

    def get_config(self) -> dict[str, Any]:
        return {"interval": self.interval, "threshold": self.threshold,
                "penalty_epochs": self.penalty_epochs}


class FlopsBudget(Schedule):
    """Cut the model to a FLOPs budget early in training.

    After epoch `e` the model's inference FLOPs per example are about
    `goal(e)` times those at the start of `fit`, `goal` falling from 1 to
    `target` as `target + (1 − target)·(1 − e/target_epoch)**power` (most
    of the cut early, as TFMOT's `PolynomialDecay` does for sparsity). A
    cut is made every `interval` epochs before `target_epoch` and at it,
    to the widths of a uniformly thinner network whose FLOPs come nearest
    the goal (`budget.ThinWidths`: the weight norms choose which channels
    of each layer go), so the target is met whatever the lasso did. The
    channels a cut removes fade to zero over the epoch before it
    (`gentle`), so the cut itself leaves the model's function as it is.
    Both measured better than 0.2's abrupt norm-per-FLOP cut (BENCHMARKS.md,
    "Issue 31, levers 2 and 3"). A cut before `target_epoch` that would remove less than
    `min_cut` of the initial FLOPs is skipped (it would not pay for its
    re-trace). Once the target is met — at `target_epoch`, or earlier if
    enough channels died — pruning ends: the group lasso is switched off
    and the smaller model trains to the end.

    Args:
      target: in (0, 1): the final FLOPs as a fraction of the initial.
      target_epoch: the epoch (1-based) by which it is met; default 25% of
        `fit`'s epochs (at least 1). It must not be past `fit`'s last epoch.
      interval: epochs between cuts; default half of `target_epoch`,
        rounded up (two cuts in all).
      power: the curve's exponent (3: cubic).
      min_cut: the smallest cut worth a re-trace, as a fraction of the
        initial FLOPs.
      threshold: deadness threshold on absolute kernel values.
      ranking: which channels go: `budget.ThinWidths()` (the default: the
        widths of a uniformly thinner network, nearest the goal; the norms
        choose which channels of each layer) or `budget.NormPerFlop()`
        (0.2's: dead channels, then the least weight norm per FLOP, at or
        below the goal).
      gentle: fade the channels each cut removes to zero over the epoch
        before it (`fading.Fade`; planned when that epoch begins; `fit`
        must know its steps per epoch). False: cut them as they are.

    Example:
    >>> from tf_prunetrain.schedules import FlopsBudget
    >>> s = FlopsBudget(0.5, target_epoch=4)
    >>> [round(s.goal(e), 3) for e in range(6)]
    [1.0, 0.711, 0.562, 0.508, 0.5, 0.5]
    """

    def __init__(self, target: float, target_epoch: int | None = None,
                 interval: int | None = None, power: float = 3.0,
                 min_cut: float = 0.05, threshold: float = 1e-4,
                 ranking: budget.Ranking | None = None,
                 gentle: bool = True):
        if isinstance(target, bool) or not isinstance(target, (int, float)) \
                or not 0 < float(target) < 1:
            raise ValueError(
                f"{type(self).__name__}: target must be a number in (0, 1) (the final "
                f"FLOPs as a fraction of the initial), got {target!r}.")
        for name, value in (("target_epoch", target_epoch),
                            ("interval", interval)):
            _checks.positive_int(value, name, "FlopsBudget", optional=True)
        _checks.non_negative(power, "power", "FlopsBudget")
        _checks.non_negative(min_cut, "min_cut", "FlopsBudget")
        _checks.non_negative(threshold, "threshold", type(self).__name__)
        self.target = float(target)
        self._target_epoch, self._interval = target_epoch, interval
        self.power, self.min_cut, self.threshold = power, min_cut, threshold
        if ranking is not None and not isinstance(ranking, budget.Ranking):
            raise TypeError(
                f"{type(self).__name__}: ranking must be a budget.Ranking, e.g. "
                f"budget.NormPerFlop() or budget.ThinWidths(), got "
                f"{ranking!r:.80}.")
        self.ranking = ranking or budget.ThinWidths()
        if not isinstance(gentle, bool):
            raise TypeError(f"{type(self).__name__}: gentle must be True or False, got "
                            f"{gentle!r}.")
        self.gentle = gentle
        # Fixed when fit starts (`start`) and carried by checkpoints.
        self.target_epoch: int | None = target_epoch

    @property
    def interval(self) -> int:
        """Epochs between cuts (see the class docstring)."""
        if self._interval is not None:
            return self._interval
        return max(1, math.ceil((self.target_epoch or 1) / 2))

    def goal(self, epoch: int) -> float:
        """The FLOPs allowed after the 1-based `epoch`, as a fraction of the
        initial (`target_epoch` must be fixed)."""
        progress = min(max(epoch / self.target_epoch, 0.0), 1.0)
        return self.target + (1.0 - self.target) * (1.0 - progress) \
            ** self.power

    def start(self, context: Context) -> None:
        if self.target_epoch is None:
            if context.epochs < 2:
                raise ValueError(
                    f"{type(self).__name__}: fit runs {context.epochs} "
                    "epoch(s); a "
                    "budget needs at least 2 (one to prune in, one to train "
                    "the smaller model). To cut within one pass over the "
                    "data (a short fine-tune), make epochs shorter than a "
                    "pass: fit(data, epochs=4, steps_per_epoch=steps // 4) "
                    "on an endless stream (tf_prunetrain.data.stream).")
            self.target_epoch = max(1, round(TARGET_FRACTION * context.epochs))
        elif self.target_epoch > context.epochs and not context.resumed:
            raise ValueError(
                f"FlopsBudget: target_epoch={self.target_epoch} is past fit's "
                f"last epoch ({context.epochs}): the target would never be "
                "met. Pass a smaller target_epoch or more epochs.")
        if context.resumed:
            return
        if context.initial_flops is None:
            raise ValueError(
                f"{type(self).__name__}: the FLOPs of model '{context.model.name}' are "
                "unknown: it has dynamic input sizes. Build it with a fixed "
                "input shape, e.g. keras.Input((32, 32, 3)).")
        self.ranking.start(context.graph)
        lowest = budget.reachable_flops(
            context.graph, context.min_channels,
            context.round_to) / context.initial_flops
        if self.target < lowest:
            raise ValueError(
                f"{type(self).__name__}: target={self.target:g} is below what model "
                f"'{context.model.name}' can reach with round_to="
                f"{context.round_to} and min_channels={context.min_channels}"
                f" ({lowest:.3f} of its FLOPs: frozen channels and layers "
                "the library cannot follow stay). Pass target >= "
                f"{math.ceil(lowest * 1000) / 1000:g}, or a smaller "
                "Reconfigure(round_to=...).")

    def plan(self, goal: float, context: Context) -> planning.Plan:
        """The ranking's plan to `goal` of the initial FLOPs, now."""
        start = context.initial_flops
        return budget.plan_to_flops(
            context.graph, goal * start, floor=self.target * start,
            threshold=self.threshold, round_to=context.round_to,
            min_channels=context.min_channels, ranking=self.ranking)

    def decide(self, epoch: int, context: Context) -> Decision | None:
        final = epoch >= self.target_epoch
        if not final and epoch % self.interval:
            return None
        start = context.initial_flops
        plan = self.plan(self.goal(epoch), context)
        planned = budget.estimate_flops(context.graph, plan.keep)
        reached = final or planned <= self.target * start * (1 + 1e-9)
        if not reached and (context.flops - planned) / start < self.min_cut:
            return None
        return Decision(plan, last=reached)

    def upcoming(self, epoch: int, context: Context) -> planning.Plan | None:
        if not self.gentle or epoch > self.target_epoch:
            return None
        decision = self.decide(epoch, context)
        return None if decision is None else decision.plan

    def get_config(self) -> dict[str, Any]:
        return {"target": self.target, "target_epoch": self._target_epoch,
                "interval": self._interval, "power": self.power,
                "min_cut": self.min_cut, "threshold": self.threshold,
                "ranking": type(self.ranking).__name__,
                "gentle": self.gentle}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "FlopsBudget":
        ranking = config.get("ranking")
        if isinstance(ranking, str):
            known = {c.__name__: c for c in budget.Ranking.__subclasses__()}
            if ranking not in known:
                raise ValueError(
                    f"FlopsBudget.from_config: unknown ranking {ranking!r}; "
                    f"known: {', '.join(sorted(known))}. (0.2 removed "
                    "UniformWidths: it measured worse, see CHANGELOG.md.)")
            config = {**config, "ranking": known[ranking]()}
        return cls(**config)

    def get_state(self) -> dict[str, Any]:
        return {"target_epoch": self.target_epoch,
                "ranking": self.ranking.get_state()}

    def set_state(self, state: dict[str, Any]) -> None:
        self.target_epoch = state.get("target_epoch", self.target_epoch)
        self.ranking.set_state(state.get("ranking", {}))


class EarlyBird(FlopsBudget):
    """Cut once, to `target`, when the channel mask stops moving.

    After every epoch the ranking plans the cut to `target` (the "mask":
    which channels it would keep) and compares it with the last epoch's:
    the distance is the fraction of channel sets whose fate changed (a
    normalised Hamming distance, as the Early-Bird tickets of You et al.,
    ICLR 2020). When the last `window` distances are all at most
    `distance`, the ticket is drawn: the cut is made then (or, `gentle`,
    after the next epoch, whose steps fade its channels to zero), and
    pruning ends. If the mask has not settled by `deadline`, the cut is
    made there. Every replica applies the first replica's decision
    (`Reconfigure`), and checkpoints carry the last mask and distances, so
    a resumed run decides as the uninterrupted one would (each worker
    keeps its own; they agree because the weights do, and the first
    replica's decision is the one applied).

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
      threshold, ranking, gentle: as `FlopsBudget`'s.

    Example:
    >>> from tf_prunetrain.schedules import EarlyBird
    >>> s = EarlyBird(0.5, window=2)
    >>> s.settled([0.3, 0.08, 0.05]), s.settled([0.08, 0.3])
    (True, False)
    """

    def __init__(self, target: float, distance: float = 0.1,
                 window: int = 2, deadline: int | None = None,
                 threshold: float = 1e-4,
                 ranking: budget.Ranking | None = None,
                 gentle: bool = True):
        _checks.positive_int(deadline, "deadline", "EarlyBird", optional=True)
        super().__init__(target, target_epoch=deadline, threshold=threshold,
                         ranking=ranking, gentle=gentle)
        _checks.non_negative(distance, "distance", "EarlyBird")
        if distance > 1:
            raise ValueError("EarlyBird: distance must be in [0, 1] (a "
                             f"fraction of channel sets), got {distance!r}.")
        _checks.positive_int(window, "window", "EarlyBird")
        self.distance, self.window = float(distance), window
        # Carried by checkpoints: the last epoch's mask, the distances so
        # far, and the epoch the ticket was drawn after (gentle: the cut
        # follows one epoch later).
        self.mask: np.ndarray | None = None
        self.distances: list[float] = []
        self.drawn: int | None = None

    def settled(self, distances: list[float]) -> bool:
        """Whether the last `window` of `distances` are all settled."""
        return len(distances) >= self.window and \
            max(distances[-self.window:]) <= self.distance

    def start(self, context: Context) -> None:
        if self.target_epoch is None and context.epochs < 2:
            raise ValueError(
                f"EarlyBird: fit runs {context.epochs} epoch(s); it needs at "
                "least 2 (one to cut after, one to train the smaller model). "
                "Train longer, or pass a deadline and fit up to it.")
        if self.target_epoch is None:
            self.target_epoch = max(1, round(DEADLINE_FRACTION
                                             * context.epochs))
        elif self.target_epoch is not None and not context.resumed \
                and self.target_epoch > context.epochs:
            raise ValueError(
                f"EarlyBird: deadline={self.target_epoch} is past fit's last "
                f"epoch ({context.epochs}): the cut might never be made. "
                "Pass a smaller deadline or more epochs.")
        super().start(context)

    def decide(self, epoch: int, context: Context) -> Decision | None:
        if self.drawn is not None:  # gentle: the faded channels go now
            return Decision(self.plan(self.target, context), last=True)
        plan = self.plan(self.target, context)
        mask = np.asarray(plan.keep, bool)[plan.graph.prunable()]
        if self.mask is not None and len(self.mask) == len(mask):
            self.distances.append(float(np.mean(self.mask != mask)))
        self.mask = mask
        final = epoch >= self.target_epoch
        if not (final or self.settled(self.distances)):
            return None
        if self.gentle and not final:
            self.drawn = epoch
            return None
        return Decision(plan, last=True)

    def upcoming(self, epoch: int, context: Context) -> planning.Plan | None:
        if not self.gentle or epoch > self.target_epoch:
            return None
        due = epoch == self.target_epoch if self.drawn is None \
            else epoch == self.drawn + 1
        return self.plan(self.target, context) if due else None

    def get_config(self) -> dict[str, Any]:
        return {"target": self.target, "distance": self.distance,
                "window": self.window, "deadline": self._target_epoch,
                "threshold": self.threshold,
                "ranking": type(self.ranking).__name__,
                "gentle": self.gentle}

    def get_state(self) -> dict[str, Any]:
        return {**super().get_state(), "distances": self.distances,
                "drawn": self.drawn, "mask": None if self.mask is None
                else "".join("1" if k else "0" for k in self.mask)}

    def set_state(self, state: dict[str, Any]) -> None:
        super().set_state(state)
        self.distances = list(state.get("distances", []))
        self.drawn = state.get("drawn")
        mask = state.get("mask")
        self.mask = None if mask is None else \
            np.array([c == "1" for c in mask], bool)
