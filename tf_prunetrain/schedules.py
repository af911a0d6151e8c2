"""Schedules: how much `Reconfigure` cuts, and when.

The simple way to write one says two things (README, "Your own schedule"):
`cut_epochs(epochs)`, after which of `fit`'s epochs to cut (the last ends
the pruning phase: the group lasso is then switched off and the smaller
model trains on without it), and `goal(epoch)`, the inference FLOPs per
example to cut to then, as a fraction of those when `fit` started.
`Reconfigure` does the rest: it plans every cut with the schedule's
`ranking` and `importance`, rounds it to `round_to` and `min_channels`
(`planning.Constraints`, for every plan, a user's too), fades the channels
a `gentle` schedule's cut removes over the epoch before it, makes every
replica apply the first replica's decision, shrinks the model in place,
and saves the schedule's config and state with its own in checkpoints.

Two are built in:

* `FlopsBudget(target)` (recommended): the FLOPs fall to `target` of the
  initial by `target_epoch` along a cubic curve, a cut every `interval`
  epochs, to the widths of a uniformly thinner network
  (`budget.ThinWidths`), each cut's channels faded to zero first.
* `DeadChannels()` (the paper's): every `interval` epochs, remove the
  channels the group lasso has driven to zero (`planning.plan_pruning`);
  it overrides `decide`, the advanced hook, since it cuts by value, not
  to a FLOPs goal.

What has not measured worth it lives in `tf_prunetrain.experimental`
(`EarlyBird`: one cut when the channel mask settles).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any

import keras

from tf_prunetrain import _checks
from tf_prunetrain import budget
from tf_prunetrain import cost as cost_lib
from tf_prunetrain import coupling
from tf_prunetrain import importance as importance_lib
from tf_prunetrain import planning

# `DeadChannels`' default interval (the paper's, on CIFAR), and
# `FlopsBudget`'s default target epoch as a fraction of fit's epochs.
DEAD_CHANNELS_INTERVAL = 10
TARGET_FRACTION = 0.25


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
    """How much to cut, and when: the base of every schedule.

    Say *when* with `cut_epochs(epochs)` and *how much* with `goal(epoch)`;
    `Reconfigure` plans each cut to the goal (the `ranking`, by the
    `importance` of the channels) and rounds it. The constructor's
    arguments are shared by every schedule; a subclass that takes its own
    passes them on with `super().__init__(...)` (without it, they are the
    defaults). `decide` is the advanced hook: override it to choose the
    plan yourself (`Reconfigure` still rounds it). Override `start` (and
    call `super().start(context)`) to check arguments against the run,
    `get_config` so it can be rebuilt and a checkpoint can tell it from
    another, and `get_state`/`set_state` for what it decides during a run.

    Args:
      ranking: which channels a cut to a goal removes (default
        `budget.ThinWidths()`).
      importance: how the channels are scored (default
        `importance.GroupNorm()`).
      gentle: fade each cut's channels to zero over the epoch before it
        (`fading.Fade`: `fit` must know its steps per epoch); the decision
        is then made when that epoch begins.
      threshold: deadness threshold on absolute kernel values (dead
        channels go first).

    Example (a user schedule: 70 % of the FLOPs after epoch 1, 50 % after
    epoch 2, then pruning ends):
    >>> import keras, numpy as np, tf_prunetrain
    >>> from tf_prunetrain.models import resnet_cifar
    >>> class TwoCuts(tf_prunetrain.Schedule):
    ...     def cut_epochs(self, epochs):
    ...         return [1, 2]
    ...     def goal(self, epoch):
    ...         return {1: 0.7, 2: 0.5}[epoch]
    >>> model = tf_prunetrain.add_group_lasso(
    ...     resnet_cifar(8, input_shape=(8, 8, 1), widths=(8, 16, 16), seed=0))
    >>> model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(
    ...     from_logits=True))
    >>> cb = tf_prunetrain.Reconfigure(TwoCuts(), round_to=1, verbose=0)
    >>> x, y = np.random.rand(32, 8, 8, 1), np.arange(32) % 10
    >>> _ = model.fit(x, y, epochs=3, verbose=0, callbacks=[cb])
    >>> [r.epoch for r in cb.reconfigurations], cb.finished
    ([1, 2], 2)
    >>> round(cb.reconfigurations[-1].flops_after / cb.initial_flops, 1)
    0.5
    """

    # The defaults of a subclass that does not call `__init__`.
    gentle: bool = False
    threshold: float = 1e-4
    _ranking: budget.Ranking | None = None
    _importance: importance_lib.Importance | None = None

    def __init__(self, ranking: budget.Ranking | None = None,
                 importance: importance_lib.Importance | None = None,
                 gentle: bool = False, threshold: float = 1e-4):
        name = type(self).__name__
        if ranking is not None and not isinstance(ranking, budget.Ranking):
            raise TypeError(
                f"{name}: ranking must be a budget.Ranking, e.g. "
                f"budget.ThinWidths() or budget.NormPerFlop(), got "
                f"{ranking!r:.80}.")
        if importance is not None and not isinstance(
                importance, importance_lib.Importance):
            raise TypeError(
                f"{name}: importance must be an importance.Importance, e.g. "
                f"importance.GroupNorm(), got {importance!r:.80}.")
        if not isinstance(gentle, bool):
            raise TypeError(f"{name}: gentle must be True or False, got "
                            f"{gentle!r}.")
        _checks.non_negative(threshold, "threshold", name)
        self.ranking = ranking or budget.ThinWidths()
        self.importance = importance or importance_lib.GroupNorm()
        self.gentle, self.threshold = gentle, threshold

    @property
    def ranking(self) -> budget.Ranking:
        """Which channels a cut to a goal removes (its own instance)."""
        if self._ranking is None:
            self._ranking = budget.ThinWidths()
        return self._ranking

    @ranking.setter
    def ranking(self, value: budget.Ranking) -> None:
        self._ranking = value

    @property
    def importance(self) -> importance_lib.Importance:
        """How the channels are scored."""
        if self._importance is None:
            self._importance = importance_lib.GroupNorm()
        return self._importance

    @importance.setter
    def importance(self, value: importance_lib.Importance) -> None:
        self._importance = value

    # -- how much, when ------------------------------------------------------
    def cut_epochs(self, epochs: int) -> list[int]:
        """The 1-based epochs after which a cut may be made, in a `fit` of
        `epochs` epochs, ascending; pruning ends after the last at the
        latest."""
        raise NotImplementedError(
            f"{type(self).__name__}: a Schedule says when (cut_epochs("
            "epochs) -> [epoch, ...]) and how much (goal(epoch) -> FLOPs "
            "fraction), or overrides decide(epoch, context).")

    def goal(self, epoch: int) -> float:
        """The FLOPs per example after the 1-based `epoch`'s cut, as a
        fraction of those when `fit` started, in (0, 1]."""
        raise NotImplementedError(
            f"{type(self).__name__}.goal: a Schedule that says when must say "
            "how much: goal(epoch) -> a FLOPs fraction in (0, 1].")

    def check(self, epochs: int) -> None:
        """Raises ValueError when the schedule cannot be met in a `fit` of
        `epochs` epochs (called by `start`; call it yourself to fail before
        loading data)."""
        cuts = self.cut_epochs(epochs)
        name = type(self).__name__
        if not cuts or list(cuts) != sorted(set(cuts)) or any(
                isinstance(e, bool) or not isinstance(e, int) or e < 1
                for e in cuts):
            raise ValueError(
                f"{name}.cut_epochs({epochs}) must give ascending 1-based "
                f"epochs, got {cuts!r}.")
        if cuts[-1] > epochs:
            raise ValueError(
                f"{name}: it cuts after epoch {cuts[-1]}, past fit's last "
                f"epoch ({epochs}): the cut would never be made. Pass "
                "earlier epochs or more epochs to fit.")

    # -- the run -------------------------------------------------------------
    def start(self, context: Context) -> None:
        """Called when `fit` starts, before its first step and before
        anything changes: checks the schedule against the run (ValueError)
        and starts the ranking (not on resume)."""
        if context.resumed:
            return
        try:
            cuts = self.cut_epochs(context.epochs)
        except NotImplementedError:  # it overrides decide: its own checks
            return
        self.check(context.epochs)
        if context.initial_flops is None:
            raise ValueError(
                f"{type(self).__name__}: the FLOPs of model "
                f"'{context.model.name}' are unknown: it has dynamic input "
                "sizes. Build it with a fixed input shape, e.g. "
                "keras.Input((32, 32, 3)).")
        self.ranking.start(context.graph)
        lowest = min(self.goal(e) for e in cuts)
        reach = budget.reachable_flops(context.graph, context.min_channels,
                                       context.round_to) / context.initial_flops
        if lowest < reach:
            raise ValueError(
                f"{type(self).__name__}: target={lowest:g} is below what "
                f"model '{context.model.name}' can reach with round_to="
                f"{context.round_to} and min_channels={context.min_channels}"
                f" ({reach:.3f} of its FLOPs: frozen channels and layers "
                "the library cannot follow stay). Pass target >= "
                f"{math.ceil(reach * 1000) / 1000:g}, or a smaller "
                "Reconfigure(round_to=...).")

    def decide(self, epoch: int, context: Context) -> Decision | None:
        """The decision for the 1-based `epoch` (asked after it, or when it
        begins if `gentle`; the cut is made after it), or None (no cut).
        By default: a cut to `goal(epoch)` at each of `cut_epochs`."""
        cuts = self.cut_epochs(context.epochs)
        if epoch not in cuts:
            return None
        return Decision(self.plan(self.goal(epoch), context),
                        last=epoch == cuts[-1])

    def plan(self, goal: float, context: Context) -> planning.Plan:
        """The ranking's plan to `goal` of the initial FLOPs, now (no extra
        dead channels go below the last cut's goal)."""
        start = context.initial_flops
        last = self.goal(self.cut_epochs(context.epochs)[-1])
        return budget.plan_to_flops(
            context.graph, goal * start, floor=last * start,
            threshold=self.threshold, round_to=context.round_to,
            min_channels=context.min_channels, ranking=self.ranking,
            importance=self.importance)

    # -- config and state ----------------------------------------------------
    def get_config(self) -> dict[str, Any]:
        """The constructor arguments (JSON-ready): a checkpoint refuses to
        resume with a schedule whose config differs."""
        return {"ranking": type(self.ranking).__name__,
                "importance": type(self.importance).__name__,
                "gentle": self.gentle, "threshold": self.threshold}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "Schedule":
        """The schedule `get_config()` describes (rankings and importances
        built in are rebuilt from their names)."""
        config = dict(config)
        for key, base in (("ranking", budget.Ranking),
                          ("importance", importance_lib.Importance)):
            if isinstance(config.get(key), str):
                config[key] = _by_name(base, config[key], cls.__name__)()
        return cls(**config)

    def get_state(self) -> dict[str, Any]:
        """What a checkpoint carries besides the config (JSON-ready)."""
        return {"ranking": self.ranking.get_state()}

    def set_state(self, state: dict[str, Any]) -> None:
        """Restores `get_state()`'s values."""
        self.ranking.set_state(state.get("ranking", {}))

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


def _by_name(base: type, name: str, caller: str) -> type:
    """The subclass of `base` called `name` (searched recursively)."""
    found, todo = {}, [base]
    while todo:
        for sub in todo.pop().__subclasses__():
            found[sub.__name__] = sub
            todo.append(sub)
    if name not in found:
        raise ValueError(
            f"{caller}.from_config: unknown {base.__name__.lower()} {name!r}; "
            "known: "
            f"{', '.join(sorted(found))}. (0.2 removed UniformWidths: it "
            "measured worse, see CHANGELOG.md.)")
    return found[name]


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
      importance: which extra channels stay when rounding keeps some back
        (default `importance.GroupNorm()`).

    Example:
    >>> from tf_prunetrain.schedules import DeadChannels
    >>> DeadChannels(interval=2, penalty_epochs=5).cut_epochs(8)
    [2, 4, 5]
    """

    def __init__(self, interval: int = DEAD_CHANNELS_INTERVAL,
                 threshold: float = 1e-4,
                 penalty_epochs: int | None = None,
                 importance: importance_lib.Importance | None = None):
        super().__init__(importance=importance, threshold=threshold)
        _checks.positive_int(interval, "interval", "DeadChannels")
        _checks.positive_int(penalty_epochs, "penalty_epochs",
                             "DeadChannels", optional=True)
        self.interval, self.penalty_epochs = interval, penalty_epochs

    def cut_epochs(self, epochs: int) -> list[int]:
        last = self.penalty_epochs
        return [e for e in range(1, epochs + 1)
                if (last is None or e <= last)
                and (e % self.interval == 0 or e == last)]

    def check(self, epochs: int) -> None:
        """No epoch to cut after is fine (the lasso then only shrinks)."""

    def start(self, context: Context) -> None:
        """Nothing to check: the cuts follow the weights."""

    def decide(self, epoch: int, context: Context) -> Decision | None:
        if epoch not in self.cut_epochs(max(epoch, context.epochs)):
            return None
        plan = planning.plan_pruning(context.graph, self.threshold,
                                     round_to=context.round_to,
                                     min_channels=context.min_channels,
                                     importance=self.importance)
        return Decision(plan, last=epoch == self.penalty_epochs)

    def get_config(self) -> dict[str, Any]:
        return {"interval": self.interval, "threshold": self.threshold,
                "penalty_epochs": self.penalty_epochs,
                "importance": type(self.importance).__name__}


class FlopsBudget(Schedule):
    """Cut the model to a FLOPs budget early in training.

    After epoch `e` the model's inference FLOPs per example are about
    `goal(e)` times those at the start of `fit`, `goal` falling from 1 to
    `target` as `target + (1 − target)·(1 − e/target_epoch)**power` (most
    of the cut early, as TFMOT's `PolynomialDecay` does for sparsity). A
    cut is made every `interval` epochs before `target_epoch` and at it
    (`cut_epochs`), to the widths of a uniformly thinner network whose
    FLOPs come nearest the goal (`budget.ThinWidths`: the importance
    chooses which channels of each layer go), so the target is met
    whatever the lasso did. The channels a cut removes fade to zero over
    the epoch before it (`gentle`), so the cut itself leaves the model's
    function as it is. Both measured better than 0.2's abrupt
    norm-per-FLOP cut (BENCHMARKS.md, "Issue 31, levers 2 and 3"). A cut
    before `target_epoch` that would remove less than `min_cut` of the
    initial FLOPs is skipped (it would not pay for its re-trace). Once the
    target is met — at `target_epoch`, or earlier if enough channels died
    — pruning ends: the group lasso is switched off and the smaller model
    trains to the end.

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
      ranking: which channels go: `budget.ThinWidths()` (the default) or
        `budget.NormPerFlop()` (0.2's: dead channels, then the least
        importance per FLOP, at or below the goal).
      importance: how channels are scored (default
        `importance.GroupNorm()`).
      gentle: fade the channels each cut removes to zero over the epoch
        before it (decided when that epoch begins; `fit` must know its
        steps per epoch). False: cut them as they are.

    Example:
    >>> from tf_prunetrain.schedules import FlopsBudget
    >>> s = FlopsBudget(0.5, target_epoch=4)
    >>> [round(s.goal(e), 3) for e in range(6)], s.cut_epochs(16)
    ([1.0, 0.711, 0.562, 0.508, 0.5, 0.5], [2, 4])
    """

    def __init__(self, target: float, target_epoch: int | None = None,
                 interval: int | None = None, power: float = 3.0,
                 min_cut: float = 0.05, threshold: float = 1e-4,
                 ranking: budget.Ranking | None = None,
                 importance: importance_lib.Importance | None = None,
                 gentle: bool = True):
        name = type(self).__name__
        _checks.open_fraction(target, "target", name)
        for arg, value in (("target_epoch", target_epoch),
                           ("interval", interval)):
            _checks.positive_int(value, arg, name, optional=True)
        _checks.non_negative(power, "power", name)
        _checks.non_negative(min_cut, "min_cut", name)
        super().__init__(ranking, importance, gentle, threshold)
        self.target = float(target)
        self._target_epoch, self._interval = target_epoch, interval
        self.power, self.min_cut = power, min_cut
        # Fixed when fit starts (`start`) and carried by checkpoints.
        self.target_epoch: int | None = target_epoch

    def resolved_target_epoch(self, epochs: int) -> int:
        """`target_epoch`, or its default for a `fit` of `epochs` epochs."""
        return self.target_epoch or max(1, round(TARGET_FRACTION * epochs))

    def interval(self, epochs: int) -> int:
        """Epochs between cuts in a `fit` of `epochs` epochs (the class
        docstring)."""
        last = self.resolved_target_epoch(epochs)
        return self._interval or max(1, math.ceil(last / 2))

    def cut_epochs(self, epochs: int) -> list[int]:
        last, interval = self.resolved_target_epoch(epochs), \
            self.interval(epochs)
        return list(range(interval, last, interval)) + [last]

    def goal(self, epoch: int) -> float:
        """The FLOPs allowed after the 1-based `epoch`, as a fraction of the
        initial (`target_epoch` must be fixed: `start` fixes it)."""
        progress = min(max(epoch / self.target_epoch, 0.0), 1.0)
        return self.target + (1.0 - self.target) * (1.0 - progress) \
            ** self.power

    def check(self, epochs: int) -> None:
        name = type(self).__name__
        if self.target_epoch is None and epochs < 2:
            raise ValueError(
                f"{name}: fit runs {epochs} epoch(s); a budget needs at "
                "least 2 (one to prune in, one to train the smaller model). "
                "To cut within one pass over the data (a short fine-tune), "
                "make epochs shorter than a pass: fit(data, epochs=4, "
                "steps_per_epoch=steps // 4) on an endless stream "
                "(tf_prunetrain.data.stream).")
        if self.resolved_target_epoch(epochs) > epochs:
            raise ValueError(
                f"{name}: target_epoch={self.target_epoch} is past fit's "
                f"last epoch ({epochs}): the target would never be met. "
                "Pass a smaller target_epoch or more epochs.")

    def start(self, context: Context) -> None:
        if not context.resumed:
            self.check(context.epochs)
        if self.target_epoch is None:
            self.target_epoch = self.resolved_target_epoch(context.epochs)
        super().start(context)

    def decide(self, epoch: int, context: Context) -> Decision | None:
        final = epoch >= self.target_epoch  # past it: a resumed run
        if not final and epoch not in self.cut_epochs(context.epochs):
            return None
        start = context.initial_flops
        plan = self.plan(self.goal(epoch), context)
        planned = budget.estimate_flops(context.graph, plan.keep)
        reached = final or planned <= self.target * start * (1 + 1e-9)
        if not reached and (context.flops - planned) / start < self.min_cut:
            return None
        return Decision(plan, last=reached)

    def get_config(self) -> dict[str, Any]:
        return {"target": self.target, "target_epoch": self._target_epoch,
                "interval": self._interval, "power": self.power,
                "min_cut": self.min_cut, **super().get_config()}

    def get_state(self) -> dict[str, Any]:
        return {"target_epoch": self.target_epoch, **super().get_state()}

    def set_state(self, state: dict[str, Any]) -> None:
        self.target_epoch = state.get("target_epoch", self.target_epoch)
        super().set_state(state)
