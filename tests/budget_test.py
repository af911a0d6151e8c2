"""The FLOPs-budget schedule: `budget.plan_to_flops`, `FlopsBudget`'s
decisions, and `Reconfigure(FlopsBudget(...))` in `fit`."""

import json
import math

import keras
import numpy as np
import pytest
import tensorflow as tf

import model_zoo
import pruning_testing as pt
import tf_prunetrain
from tf_prunetrain import budget
from tf_prunetrain.models import resnet_cifar

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
# 0.2's cut (the default before issue 31): at or below the goal, dead
# channels first, cut as they are. Tests of those semantics name it.
NORM_PER_FLOP = dict(ranking=budget.NormPerFlop(), gentle=False)


# -- plan_to_flops ---------------------------------------------------------------
@pytest.mark.parametrize("name", ["plain_cnn", "resnet_basic",
                                  "mobilenetv2_like", "separable_net",
                                  "densenet_like"])
@pytest.mark.parametrize("fraction", [0.3, 0.6])
def test_plan_meets_the_goal_within_one_channel_set(name, fraction):
    model = model_zoo.ALL_BUILDERS[name]()
    graph = tf_prunetrain.channel_groups(model)
    start = tf_prunetrain.cost.forward_flops(model)
    reachable = budget.reachable_flops(graph) / start
    goal = max(fraction, reachable + 0.05) * start
    plan = budget.plan_to_flops(graph, goal, ranking=budget.NormPerFlop())
    small = tf_prunetrain.surgery.rebuild(plan)
    exact = tf_prunetrain.cost.forward_flops(small)
    # The estimate is the handler table's count (bias adds aside).
    assert budget.estimate_flops(graph, plan.keep) == pytest.approx(
        exact, rel=2e-3)
    assert exact <= goal * 1.002
    # Undershoot: less than the costliest single channel set it removed.
    costliest = max(_set_flops(graph, root, start)
                    for root in np.flatnonzero(~plan.keep))
    assert goal - exact <= costliest * 1.01
    assert all(after > 0 for _, _, after in plan.changes())


def _set_flops(graph, root, start):
    keep = np.ones(len(graph.root), bool)
    keep[root] = False
    return start - budget.estimate_flops(graph, keep)


def test_plan_cuts_dead_channels_first_and_keeps_the_function():
    model = model_zoo.randomize_batchnorm(model_zoo.resnet_basic())
    pt.zero_random_groups(model, 0.5, seed=2)
    graph = tf_prunetrain.channel_groups(model)
    dead_only = tf_prunetrain.planning.plan_pruning(graph,
                                                    remove_blocks=False)
    dead_flops = budget.estimate_flops(graph, dead_only.keep)
    start = tf_prunetrain.cost.forward_flops(model)
    # A goal above what the dead channels free: only dead ones are cut.
    plan = budget.plan_to_flops(graph, (dead_flops + start) / 2,
                                floor=(dead_flops + start) / 2,
                                ranking=budget.NormPerFlop())
    removed = ~plan.keep
    assert removed.any() and not np.any(removed & dead_only.keep)
    x = model_zoo.random_input(model, batch_size=8)
    assert pt.relative_error(model.predict(x, verbose=0),
                             tf_prunetrain.surgery.rebuild(plan).predict(
                                 x, verbose=0)) < 1e-5
    # With the floor at the goal's level, the other dead sets stay.
    assert np.count_nonzero(removed) < np.count_nonzero(~dead_only.keep)


def test_plan_rounds_widths_and_still_meets_the_goal():
    model = model_zoo.resnet_basic()
    graph = tf_prunetrain.channel_groups(model)
    start = tf_prunetrain.cost.forward_flops(model)
    plan = budget.plan_to_flops(graph, 0.5 * start, round_to=4,
                                ranking=budget.NormPerFlop())
    small = tf_prunetrain.surgery.rebuild(plan)
    # Met, and not overshot by the rounding: channels were given back.
    assert 0.46 * start <= tf_prunetrain.cost.forward_flops(small) \
        <= 0.5 * start * 1.002
    for layer in small.layers:
        if isinstance(layer, keras.layers.Conv2D):
            original = model.get_layer(layer.name).filters
            assert layer.filters % 4 == 0 or layer.filters == original, \
                layer.name


def test_plan_never_empties_a_layer():
    model = model_zoo.plain_cnn()
    graph = tf_prunetrain.channel_groups(model)
    plan = budget.plan_to_flops(graph, 0.0, min_channels=2,
                                ranking=budget.NormPerFlop())
    small = tf_prunetrain.surgery.rebuild(plan)
    for layer in small.layers:
        if isinstance(layer, keras.layers.Conv2D):
            assert layer.filters >= 2, layer.name
    assert budget.reachable_flops(graph, min_channels=2) == pytest.approx(
        tf_prunetrain.cost.forward_flops(small), rel=2e-3)


def test_schedule_falls_from_one_to_the_target():
    schedule = tf_prunetrain.FlopsBudget(0.3, target_epoch=6)
    goals = [schedule.goal(e) for e in range(9)]
    assert goals[0] == 1.0 and goals[6] == goals[8] == pytest.approx(0.3)
    assert all(a > b for a, b in zip(goals[:6], goals[1:7]))
    # Cubic: most of the cut comes early.
    assert goals[2] < 0.3 + 0.5 * 0.7


# -- FlopsBudget's decisions, without fit -------------------------------------
def _planned(context, decision):
    """The plan's FLOPs as a fraction of the context's initial FLOPs."""
    return budget.estimate_flops(context.graph, decision.plan.keep) \
        / context.initial_flops


def test_budget_is_due_every_interval_and_at_target_epoch():
    context = pt.schedule_context(pt.two_convs(), epochs=10)
    schedule = tf_prunetrain.FlopsBudget(0.5, target_epoch=5, interval=2)
    schedule.start(context)
    decisions = {e: schedule.decide(e, context) for e in range(1, 6)}
    # Between intervals: nothing (None), at 2 and 4 a cut, at 5 the last.
    assert [e for e, d in decisions.items() if d is None] == [1, 3]
    assert [(e, decisions[e].last) for e in (2, 4, 5)] == [
        (2, False), (4, False), (5, True)]


def test_budget_defaults_follow_fits_epochs():
    schedule = tf_prunetrain.FlopsBudget(0.5)
    assert schedule.target_epoch is None
    schedule.start(pt.schedule_context(pt.two_convs(), epochs=12))
    assert schedule.target_epoch == 3  # 25% of 12 epochs
    assert schedule.interval(12) == 2  # half of it, rounded up: two cuts
    assert schedule.cut_epochs(12) == [2, 3]
    # What a checkpoint carries: the epoch fixed at the start.
    again = tf_prunetrain.FlopsBudget(0.5)
    again.set_state(schedule.get_state())
    assert again.target_epoch == 3
    assert schedule.get_config()["target_epoch"] is None  # as constructed


def test_budget_decisions_follow_the_goal_curve():
    context = pt.schedule_context(pt.two_convs(), epochs=10)
    schedule = tf_prunetrain.FlopsBudget(0.4, target_epoch=4, interval=1,
                                         **NORM_PER_FLOP,
                                         min_cut=0.0)
    schedule.start(context)
    goals = [schedule.goal(e) for e in range(6)]
    assert goals == pytest.approx(
        [0.4 + 0.6 * (1 - min(e / 4, 1)) ** 3 for e in range(6)])
    linear = tf_prunetrain.FlopsBudget(0.4, target_epoch=4, power=1.0)
    assert [linear.goal(e) for e in range(5)] == pytest.approx(
        [1.0, 0.85, 0.7, 0.55, 0.4])
    # Each plan (from the initial model) meets that epoch's goal, within
    # one channel set (one of c1 costs 6.2% of the FLOPs, one of c2 5.3%).
    for epoch in (1, 2, 3, 4):
        decision = schedule.decide(epoch, context)
        planned = _planned(context, decision)
        assert schedule.goal(epoch) - 0.065 < planned <= schedule.goal(epoch)
        # Last once the target is met: at target_epoch, or at epoch 3 if
        # its goal (0.409) was undershot below 0.4.
        assert decision.last == (epoch == 4 or planned <= 0.4)
    assert [schedule.decide(e, context).last for e in (1, 2)] == [False,
                                                                  False]


def test_budget_is_last_at_target_epoch_with_the_target_met():
    model = pt.two_convs()
    context = pt.schedule_context(model, round_to=4)
    schedule = tf_prunetrain.FlopsBudget(0.3, target_epoch=2)
    schedule.start(context)
    decision = schedule.decide(2, context)
    assert decision.last
    assert _planned(context, decision) <= 0.3
    small = tf_prunetrain.surgery.rebuild(decision.plan)
    assert tf_prunetrain.cost.forward_flops(small) <= \
        0.3 * context.initial_flops * 1.002
    for name in ("c1", "c2"):  # the context's round_to
        assert small.get_layer(name).filters % 4 == 0, name
    # Past target_epoch (a resumed run), still the final cut.
    assert schedule.decide(3, context).last


def test_budget_skips_a_cut_smaller_than_min_cut():
    context = pt.schedule_context(pt.two_convs(), epochs=20)
    # goal(1) = 0.9 + 0.1·0.9³ ≈ 0.973: one channel set (5.3% or 6.2% of
    # the FLOPs) meets it, under min_cut=10%: skipped.
    schedule = tf_prunetrain.FlopsBudget(0.9, target_epoch=10, interval=1,
                                         **NORM_PER_FLOP,
                                         min_cut=0.1)
    schedule.start(context)
    assert schedule.goal(1) == pytest.approx(0.9729)
    assert schedule.decide(1, context) is None
    # The same cut is made under the default min_cut (5%).
    eager = tf_prunetrain.FlopsBudget(0.9, target_epoch=10, interval=1,
                                      **NORM_PER_FLOP)
    eager.start(context)
    decision = eager.decide(1, context)
    assert decision is not None and not decision.last
    assert 0.05 <= 1 - _planned(context, decision) < 0.1
    # At target_epoch a small cut is made all the same (the target).
    assert schedule.decide(10, context).last


def test_budget_start_refuses_an_unreachable_target_naming_round_to():
    model = pt.two_convs()
    # Multiples of 8 leave c1 and c2 at least 8 of 16 channels each.
    lowest = budget.reachable_flops(tf_prunetrain.channel_groups(model),
                                    1, 8) / tf_prunetrain.cost.forward_flops(
                                        model)
    assert 0.2 < lowest < 0.35
    with pytest.raises(ValueError, match=r"FlopsBudget: target=0\.15 is "
                       r"below what model '.*' can reach with round_to=8 "
                       r"and min_channels=1.*smaller Reconfigure\(round_to"):
        tf_prunetrain.FlopsBudget(0.15).start(pt.schedule_context(model, round_to=8))
    with pytest.raises(ValueError, match="round_to=1 and min_channels=8"):
        tf_prunetrain.FlopsBudget(0.15).start(
            pt.schedule_context(model, round_to=1, min_channels=8))
    tf_prunetrain.FlopsBudget(0.15).start(pt.schedule_context(model, round_to=1))


def test_budget_start_refuses_what_fit_cannot_meet():
    model = pt.two_convs()
    with pytest.raises(ValueError, match="target_epoch=9 is past fit's last "
                       r"epoch \(8\)"):
        tf_prunetrain.FlopsBudget(0.5, target_epoch=9).start(
            pt.schedule_context(model, epochs=8))
    with pytest.raises(ValueError, match=r"fit runs 1 epoch\(s\)"):
        tf_prunetrain.FlopsBudget(0.5).start(pt.schedule_context(model, epochs=1))
    dynamic = tf_prunetrain.schedules.Context(model, 8, None, 1, 1)
    with pytest.raises(ValueError, match="dynamic input sizes"):
        tf_prunetrain.FlopsBudget(0.5).start(dynamic)


# -- Reconfigure(FlopsBudget(...)) in fit ------------------------------------
def _fit(target, epochs=6, proximal_step=True, scales=True, strength=0.05,
         build=None, compile_kwargs=None, round_to=1, **schedule):
    """Fits with `Reconfigure(FlopsBudget(target, **schedule))` and a
    `RunLog` after it; returns the model, both callbacks, the history and
    the inputs."""
    keras.utils.set_random_seed(0)
    build = build or (lambda: resnet_cifar(
        8, input_shape=(12, 12, 1), widths=(8, 16, 32), seed=0))
    model = tf_prunetrain.add_group_lasso(build(), strength=strength,
                                          proximal=proximal_step,
                                          scales=scales)
    model.compile(keras.optimizers.SGD(0.05, momentum=0.9), LOSS,
                  **(compile_kwargs or {}))
    rng = np.random.default_rng(0)
    x = rng.random((128, *model.input_shape[1:]), np.float32)
    y = np.arange(128) % 10
    callback = tf_prunetrain.Reconfigure(
        tf_prunetrain.FlopsBudget(target, **{**NORM_PER_FLOP, **schedule}),
        penalty_ratio=None, round_to=round_to, verbose=0)
    log = tf_prunetrain.RunLog(batch_size=32)
    history = model.fit(x, y, epochs=epochs, batch_size=32, verbose=0,
                        shuffle=False, callbacks=[callback, log])
    return model, callback, log, history, x


def _achieved(log):
    return log.cost.inference_flops / log.initial_cost.inference_flops


@pytest.mark.parametrize("target", [0.3, 0.6])
def test_target_is_met_by_target_epoch_then_training_goes_on(target):
    model, callback, log, history, x = _fit(target, epochs=8)
    assert callback.schedule.target_epoch == 2  # 25% of 8 epochs
    assert callback.finished is not None
    assert callback.finished <= callback.schedule.target_epoch
    assert abs(_achieved(log) - target) <= 0.02
    flops = history.history["prunetrain_flops"]
    reached = callback.finished
    assert flops[reached - 1] == log.cost.inference_flops
    assert len(set(flops[reached - 1:])) == 1  # no change after the target
    assert all(r.epoch <= reached for r in callback.reconfigurations)
    # The lasso is off and gone from the train step.
    assert callback.strength == 0.0
    for variable in model.trainable_variables:
        assert variable.regularizer is None, variable.path
        assert not isinstance(variable.constraint,
                              tf_prunetrain.regularizers.ProximalStep)
    assert np.all(np.isfinite(history.history["loss"]))


@pytest.mark.parametrize("kwargs", [
    dict(proximal_step=False, scales=False, strength=1e-3),  # loss term
    dict(round_to=2),
    dict(target_epoch=3, interval=1),
])
def test_target_is_met_in_every_lasso_mode(kwargs):
    model, callback, log, _, _ = _fit(0.4, **kwargs)
    assert abs(_achieved(log) - 0.4) <= 0.02
    assert callback.finished <= callback.schedule.target_epoch
    assert callback.schedule.target_epoch == kwargs.get("target_epoch", 2)
    if "round_to" in kwargs:
        for layer in model.layers:
            if isinstance(layer, keras.layers.Conv2D):
                assert layer.filters % 2 == 0, layer.name


def test_mixed_precision_and_jit_compile():
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model, callback, log, history, _ = _fit(
            0.5, epochs=4, compile_kwargs={"jit_compile": True})
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert abs(_achieved(log) - 0.5) <= 0.02
    assert np.all(np.isfinite(history.history["loss"]))


class _Probe(keras.callbacks.Callback):
    """Predicts a fixed batch at every epoch end (inference mode)."""

    def __init__(self, x):
        super().__init__()
        self.x, self.outputs = x, []

    def on_epoch_end(self, epoch, logs=None):
        self.outputs.append(self.model.predict(self.x, verbose=0))


class _ZeroHalf(keras.callbacks.Callback):
    """Kills half the channel groups at the end of the first epoch."""

    def on_epoch_end(self, epoch, logs=None):
        if epoch == 0:
            pt.zero_random_groups(self.model, 0.6, seed=3)


def test_a_cut_of_dead_channels_only_keeps_the_outputs():
    """Enough channels are dead at the cut: the target is met by removing
    dead channels only, and the outputs do not change."""
    x = np.random.default_rng(1).random((16, 12, 12, 1), np.float32)
    before, after = _Probe(x), _Probe(x)

    def build():
        return model_zoo.randomize_batchnorm(resnet_cifar(
            8, input_shape=(12, 12, 1), widths=(8, 16, 32), seed=0))

    keras.utils.set_random_seed(0)
    model = tf_prunetrain.add_group_lasso(build(), strength=0.0)
    model.compile(keras.optimizers.SGD(0.05, momentum=0.9), LOSS)
    callback = tf_prunetrain.Reconfigure(
        tf_prunetrain.FlopsBudget(0.9, target_epoch=1, **NORM_PER_FLOP),
        penalty_ratio=None,
        round_to=1, verbose=0)
    log = tf_prunetrain.RunLog()
    rng = np.random.default_rng(0)
    model.fit(rng.random((64, 12, 12, 1), np.float32), np.arange(64) % 10,
              epochs=2, batch_size=32, verbose=0,
              callbacks=[_ZeroHalf(), before, callback, log, after])
    assert callback.reconfigurations[0].changes
    # Within one channel set (a trunk channel here costs about 3%).
    assert 0.85 <= _achieved(log) <= 0.9
    assert pt.relative_error(before.outputs[0], after.outputs[0]) < 1e-5


def test_mirrored_run_has_the_single_device_architecture():
    def train(strategy):
        with strategy.scope():
            model = tf_prunetrain.add_group_lasso(
                tf_prunetrain.distribute.synchronize_batchnorm(
                    model_zoo.resnet_basic()), strength=0.05, proximal=True)
            model.compile(keras.optimizers.SGD(0.05, momentum=0.9), LOSS)
        x = model_zoo.random_input(model, batch_size=32, seed=1)
        callback = tf_prunetrain.Reconfigure(
            tf_prunetrain.FlopsBudget(0.5, target_epoch=2),
            penalty_ratio=None, round_to=1, verbose=0)
        log = tf_prunetrain.RunLog()
        model.fit(x, np.arange(32) % 10, epochs=3, batch_size=16,
                  shuffle=False, verbose=0, callbacks=[callback, log])
        return model, callback, log

    mirrored, mirrored_cb, mirrored_log = train(
        tf_prunetrain.distribute.make_strategy("mirrored"))
    single, single_cb, _ = train(tf.distribute.get_strategy())
    assert mirrored_cb.finished == single_cb.finished == 2
    assert [r.changes for r in mirrored_cb.reconfigurations] == \
        [r.changes for r in single_cb.reconfigurations]
    assert [tuple(w.shape) for w in mirrored.weights] == \
        [tuple(w.shape) for w in single.weights]
    assert abs(_achieved(mirrored_log) - 0.5) <= 0.02


# -- bad input -----------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, match", [
    (dict(target=0.0), "target must be a number in"),
    (dict(target=1.0), "target must be a number in"),
    (dict(target=-0.5), "target must be a number in"),
    (dict(target=math.nan), "target must be a number in"),
    (dict(target="0.5"), "target must be a number in"),
    (dict(target=True), "target must be a number in"),
    (dict(target=0.5, target_epoch=0), "target_epoch must be an integer"),
    (dict(target=0.5, target_epoch=1.5), "target_epoch must be an integer"),
    (dict(target=0.5, interval=0), "interval must be an integer"),
    (dict(target=0.5, power=-1.0), "power must be >= 0"),
    (dict(target=0.5, min_cut=-0.1), "min_cut must be >= 0"),
    (dict(target=0.5, threshold=-1.0), "threshold must be >= 0"),
])
def test_bad_arguments_are_named(kwargs, match):
    with pytest.raises(ValueError, match="FlopsBudget: " + match):
        tf_prunetrain.FlopsBudget(**kwargs)


def _untouched_after(callback, epochs=3, build=None):
    """Fits with `callback`, which must raise at train begin; checks that
    the model was left exactly as it was; returns the error."""
    build = build or (lambda: resnet_cifar(
        8, input_shape=(12, 12, 1), widths=(8, 16, 32), seed=0))
    model = tf_prunetrain.add_group_lasso(build(), strength=0.05,
                                          proximal=True)
    model.compile(keras.optimizers.SGD(0.05), LOSS)
    weights = [w.numpy().copy() for w in model.weights]
    x = np.zeros((8, *model.input_shape[1:]), np.float32)
    with pytest.raises(ValueError) as error:
        model.fit(x, np.arange(8) % 10, epochs=epochs, verbose=0,
                  callbacks=[callback])
    assert len(weights) == len(model.weights)
    for before, now in zip(weights, model.weights):
        np.testing.assert_array_equal(before, now.numpy())
    assert all(v.constraint is None for v in model.trainable_variables)
    return str(error.value)


def test_target_epoch_past_the_last_epoch():
    message = _untouched_after(tf_prunetrain.Reconfigure(
        tf_prunetrain.FlopsBudget(0.5, target_epoch=5), round_to=1,
        verbose=0), epochs=3)
    assert "FlopsBudget: target_epoch=5 is past fit's last epoch (3)" \
        in message


def test_too_few_epochs_for_the_schedule():
    message = _untouched_after(tf_prunetrain.Reconfigure(
        tf_prunetrain.FlopsBudget(0.5), round_to=1, verbose=0), epochs=1)
    assert "FlopsBudget: fit runs 1 epoch(s); a budget needs at least 2" \
        in message


def test_target_below_what_the_model_can_reach():
    def mostly_frozen():
        x = keras.Input((8, 8, 3))
        h = keras.layers.Conv2D(8, 3, padding="same", name="free")(x)
        h = keras.layers.LayerNormalization(name="frozen_norm")(h)  # freezes
        h = keras.layers.Conv2D(8, 3, padding="same", name="big")(h)
        y = keras.layers.Dense(10)(keras.layers.GlobalAveragePooling2D()(h))
        return keras.Model(x, y)

    message = _untouched_after(tf_prunetrain.Reconfigure(
        tf_prunetrain.FlopsBudget(0.1), round_to=1, verbose=0),
        build=mostly_frozen)
    assert "FlopsBudget: target=0.1 is below what model" in message
    assert "with round_to=1 and min_channels=1 (" in message
    reachable = float(message.split("min_channels=1 (")[1].split(" ")[0])
    assert 0.1 < reachable < 1


# -- rankings (issue 31) ------------------------------------------------------
def _three_convs(widths=(16, 32, 64)):
    """c1 -> c2 -> c3 -> dense fc (10): the widths of a ResNet's stages."""
    keras.utils.set_random_seed(0)
    x = h = keras.Input((8, 8, 3))
    for i, width in enumerate(widths, 1):
        h = keras.layers.Conv2D(width, 3, padding="same", name=f"c{i}")(h)
    y = keras.layers.Dense(10, name="fc")(
        keras.layers.GlobalAveragePooling2D(name="gap")(h))
    return keras.Model(x, y)


def _widths(plan, model, names=("c1", "c2", "c3")):
    kept = {path: after for path, _, after in plan.changes()}
    return tuple(kept.get(n, model.get_layer(n).filters) for n in names)


@pytest.mark.parametrize("target", [0.25, 0.4, 0.5])
def test_thin_widths_are_one_multiplier_with_flops_nearest_the_goal(target):
    model = _three_convs()
    graph = tf_prunetrain.channel_groups(model)
    start = tf_prunetrain.cost.forward_flops(model)
    plan = budget.plan_to_flops(graph, target * start, round_to=8,
                                ranking=budget.ThinWidths())
    chosen = _widths(plan, model)
    # Every width triple a multiplier gives (each width rounded to the
    # nearest multiple of 8, at least 8), priced on real models.
    thin = {tuple(max(8, 8 * math.floor(m * w / 8 + 0.5))
                  for w in (16, 32, 64)) for m in np.linspace(0.01, 1, 500)}
    flops = {w: tf_prunetrain.cost.forward_flops(_three_convs(w))
             for w in thin}
    assert chosen in thin
    assert abs(flops[chosen] - target * start) == min(
        abs(f - target * start) for f in flops.values())
    assert budget.estimate_flops(graph, plan.keep) == pytest.approx(
        flops[chosen], rel=2e-3)
    if target == 0.25:  # half of every width: 0.25 of the FLOPs and a bit
        assert chosen == (8, 16, 32)
    # Norm per FLOP picks widths no multiplier gives.
    other = budget.plan_to_flops(graph, target * start, round_to=8,
                                 ranking=budget.NormPerFlop())
    assert _widths(other, model) not in thin


@pytest.mark.parametrize("dead", [12, 24])
def test_thin_widths_let_the_norms_choose_only_which_channels_go(dead):
    model = _three_convs()
    start = tf_prunetrain.cost.forward_flops(model)
    tf_prunetrain.coupling.zero_channels(model, {"c2": list(range(dead))})
    weak = [dead + 1, dead + 3]  # alive, but the weakest of the live ones
    tf_prunetrain.coupling.zero_channels(model, {"c2": weak})
    model.get_layer("c2").bias.assign(np.zeros(32, "float32"))
    kernel = model.get_layer("c2").kernel.numpy()
    kernel[0, 0, 0, weak] = 1e-3
    model.get_layer("c2").kernel.assign(kernel)
    graph = tf_prunetrain.channel_groups(model)
    plan = budget.plan_to_flops(graph, 0.25 * start, round_to=8,
                                ranking=budget.ThinWidths())
    # c2 keeps half, however many of its channels the lasso killed.
    assert _widths(plan, model) == (8, 16, 32)
    kept = set(np.flatnonzero(plan.mask(graph.layer_outputs()["c2"])))
    live = set(range(dead, 32))
    if dead == 12:  # 20 live: the 16 kept are among the strong ones
        assert kept <= live - set(weak) and len(kept) == 16
    else:  # 8 live: all kept, topped up with dead ones
        assert kept >= live and len(kept) == 16
    # NormPerFlop removes the dead channels first, wherever they are.
    assert _widths(budget.plan_to_flops(graph, 0.25 * start, round_to=8,
                                        ranking=budget.NormPerFlop()),
                   model)[1] <= 32 - dead


def test_thin_widths_scale_the_widths_at_the_start_of_fit():
    model = _three_convs()
    start = tf_prunetrain.cost.forward_flops(model)
    ranking = budget.ThinWidths()
    ranking.start(tf_prunetrain.channel_groups(model))
    first = budget.plan_to_flops(tf_prunetrain.channel_groups(model),
                                 0.7 * start, round_to=8, ranking=ranking)
    smaller = tf_prunetrain.surgery.rebuild(first)
    assert _widths(first, model) == (16, 24, 56)
    # A later cut on the smaller model aims at one multiplier of the
    # *initial* widths, as a cut straight from the start would.
    again = budget.ThinWidths()
    again.set_state(json.loads(json.dumps(ranking.get_state())))
    later = budget.plan_to_flops(tf_prunetrain.channel_groups(smaller),
                                 0.4 * start, round_to=8, ranking=again)
    direct = budget.plan_to_flops(tf_prunetrain.channel_groups(model),
                                  0.4 * start, round_to=8,
                                  ranking=budget.ThinWidths())
    assert _widths(later, smaller) == _widths(direct, model) == (8, 24, 40)
    # Started on the smaller model instead, it scales *its* widths.
    fresh = budget.plan_to_flops(tf_prunetrain.channel_groups(smaller),
                                 0.4 * start, round_to=8,
                                 ranking=budget.ThinWidths())
    assert _widths(fresh, smaller) == (16, 16, 48)


def test_budget_with_thin_widths_in_fit_ends_uniform_and_checkpoints_widths():
    model, callback, log, _, _ = _fit(0.3, epochs=4, round_to=4,
                                      ranking=budget.ThinWidths())
    assert callback.finished == callback.schedule.target_epoch == 1
    widths = callback.schedule.ranking.widths
    state = json.loads(json.dumps(callback.get_state()))
    assert state["schedule"]["ranking"]["widths"] == widths
    # Every convolution kept its start width times one multiplier m.
    kept = {layer.name: layer.filters for layer in model.layers
            if isinstance(layer, keras.layers.Conv2D) and layer.name in widths}
    assert len(kept) >= 7 and any(
        all(k == max(4, 4 * math.floor(m * widths[n] / 4 + 0.5))
            for n, k in kept.items()) for m in np.linspace(0.01, 0.99, 99))
    assert sum(kept.values()) < sum(widths[n] for n in kept)
    assert abs(_achieved(log) - 0.3) <= 0.1


def test_flops_budget_takes_a_ranking_and_names_a_bad_one():
    schedule = tf_prunetrain.FlopsBudget(0.5, ranking=budget.ThinWidths())
    again = tf_prunetrain.FlopsBudget.from_config(schedule.get_config())
    assert isinstance(again.ranking, budget.ThinWidths)
    assert schedule.get_config()["ranking"] == "ThinWidths"
    default = tf_prunetrain.FlopsBudget(0.5)
    assert isinstance(default.ranking, budget.ThinWidths) and default.gentle
    with pytest.raises(TypeError, match="FlopsBudget: ranking must be a "
                       "budget.Ranking.*'uniform'"):
        tf_prunetrain.FlopsBudget(0.5, ranking="uniform")
    # Known: the subclasses imported so far (experimental ones too, once
    # imported by another test).
    with pytest.raises(ValueError, match="unknown ranking 'UniformWidths'; "
                       "known: NormPerFlop, (SearchedWidths, )?ThinWidths"):
        tf_prunetrain.FlopsBudget.from_config(
            {**schedule.get_config(), "ranking": "UniformWidths"})
