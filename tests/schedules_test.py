"""Schedules as objects: a user-written schedule trains and resumes, the
calibrated λ travels with the model, and the default widths are the same
in two processes."""

import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

import pruning_testing as pt
import tf_prunetrain
from tf_prunetrain import budget, regularizers, schedules
from tf_prunetrain.models import resnet_cifar


class Halving(tf_prunetrain.Schedule):
    """Halves the FLOPs goal at each of its `cuts` epochs; its state is
    the goals it has cut to (what a checkpoint must carry)."""

    def __init__(self, cuts=(1, 3)):
        self.cuts = tuple(cuts)
        self.goals: list[float] = []

    def decide(self, epoch, context):
        if epoch not in self.cuts:
            return None
        goal = 0.5 ** (len(self.goals) + 1)
        self.goals.append(goal)
        plan = budget.plan_to_flops(context.graph,
                                    goal * context.initial_flops,
                                    round_to=context.round_to,
                                    min_channels=context.min_channels,
                                    ranking=budget.NormPerFlop())
        return schedules.Decision(plan, last=epoch == self.cuts[-1])

    def get_config(self):
        return {"cuts": list(self.cuts)}

    def get_state(self):
        return {"goals": self.goals}

    def set_state(self, state):
        self.goals = list(state["goals"])


def _model():
    keras.utils.set_random_seed(0)
    model = tf_prunetrain.add_group_lasso(
        resnet_cifar(8, input_shape=(8, 8, 1), widths=(8, 16, 16), seed=0))
    model.compile(keras.optimizers.SGD(0.05, momentum=0.9),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def _data():
    rng = np.random.default_rng(0)
    return rng.random((64, 8, 8, 1), np.float32), np.arange(64) % 10


def _widths(model):
    return {layer.name: layer.filters for layer in model.layers
            if isinstance(layer, keras.layers.Conv2D)}


def _fit(model, schedule, epochs, directory=None):
    x, y = _data()
    reconfigure = tf_prunetrain.Reconfigure(schedule, round_to=1, verbose=0)
    log = tf_prunetrain.RunLog()
    callbacks = [reconfigure, log]
    if directory is not None:
        callbacks.append(tf_prunetrain.Checkpoint(
            directory, trackers=[reconfigure, log]))
    model.fit(x, y, epochs=epochs, batch_size=16, shuffle=False, verbose=0, callbacks=callbacks)
    return reconfigure, log


def test_a_user_schedule_cuts_when_it_says_and_ends_the_lasso():
    model = _model()
    reconfigure, log = _fit(model, Halving(), epochs=4)
    assert [r.epoch for r in reconfigure.reconfigurations] == [1, 3]
    assert reconfigure.finished == 3 and reconfigure.strength == 0.0
    assert reconfigure.schedule.goals == [0.5, 0.25]
    ratio = log.cost.inference_flops / log.initial_cost.inference_flops
    assert 0.2 < ratio <= 0.25 + 1e-9
    assert not regularizers.lasso_variables(model)  # detached


def test_a_user_schedule_resumes_from_a_checkpoint(tmp_path):
    whole, _ = _fit(_model(), Halving(), epochs=4)
    whole_widths = _widths(whole.model)

    first, _ = _fit(_model(), Halving(), epochs=2,
                    directory=str(tmp_path / "ck"))
    assert first.schedule.goals == [0.5]
    trackers = (tf_prunetrain.Reconfigure(Halving(), round_to=1, verbose=0),
                tf_prunetrain.RunLog())
    model, epoch = tf_prunetrain.Checkpoint(
        str(tmp_path / "ck"), trackers=trackers).restore()
    assert epoch == 2 and trackers[0].schedule.goals == [0.5]
    assert all(reg.calibrated for _, reg in
               regularizers.lasso_variables(model))
    assert regularizers.lasso_variables(model)[0][1].strength > 0
    events = []

    class Events(keras.callbacks.Callback):
        def on_prunetrain_event(self, event, fields):
            events.append(event)

    x, y = _data()
    model.fit(x, y, epochs=4, initial_epoch=2, batch_size=16, shuffle=False,
              verbose=0, callbacks=[*trackers, Events()])
    resumed = trackers[0]
    assert resumed.schedule.goals == [0.5, 0.25]
    assert [r.epoch for r in resumed.reconfigurations] == [1, 3]
    assert _widths(model) == whole_widths
    assert "calibration" not in events and "pruning_end" in events


def test_the_base_schedule_names_what_to_implement():
    with pytest.raises(NotImplementedError, match="decide"):
        tf_prunetrain.Schedule().decide(1, pt.schedule_context(
            pt.two_convs()))
    assert repr(schedules.DeadChannels(interval=3)) == (
        "DeadChannels(interval=3, threshold=0.0001, penalty_epochs=None, "
        "importance='GroupNorm')")
    budget_schedule = schedules.FlopsBudget(0.4, target_epoch=3)
    again = schedules.FlopsBudget.from_config(budget_schedule.get_config())
    assert again.get_config() == budget_schedule.get_config()


def test_calibrated_travels_with_the_model(tmp_path):
    model = _model()
    lam = regularizers.calibrate(model, loss=2.3, penalty_ratio=0.2)
    regularizers.set_strength(model, lam, calibrated=True)
    path = str(tmp_path / "m.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    pairs = regularizers.lasso_variables(loaded)
    assert pairs and all(reg.calibrated for _, reg in pairs)
    assert pairs[0][1].strength == pytest.approx(lam, rel=1e-6)


def test_calibrate_refuses_a_loss_that_is_not_finite():
    with pytest.raises(ValueError, match="loss is nan"):
        regularizers.calibrate(_model(), float("nan"), 0.2)


_WIDTHS_JOB = textwrap.dedent("""
    import json, os, sys
    import keras, numpy as np, tensorflow as tf
    tf.config.threading.set_inter_op_parallelism_threads(1)
    tf.config.threading.set_intra_op_parallelism_threads(1)
    import tf_prunetrain
    from tf_prunetrain.models import resnet_cifar
    keras.utils.set_random_seed(0)
    model = tf_prunetrain.add_group_lasso(resnet_cifar(
        8, input_shape=(8, 8, 1), widths=(16, 32, 32), seed=0))
    model.compile(keras.optimizers.SGD(0.05, momentum=0.9),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    rng = np.random.default_rng(0)
    x, y = rng.random((64, 8, 8, 1), np.float32), np.arange(64) % 10
    model.fit(x, y, epochs=3, batch_size=16, shuffle=False, verbose=0,
              callbacks=[tf_prunetrain.Reconfigure(
                  tf_prunetrain.FlopsBudget(0.5), verbose=0)])
    print(json.dumps({l.name: l.filters for l in model.layers
                      if isinstance(l, keras.layers.Conv2D)}))
""")


def test_the_default_widths_are_the_same_in_two_processes():
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    runs = []
    for _ in range(2):
        done = subprocess.run([sys.executable, "-c", _WIDTHS_JOB], env=env,
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
    assert runs[0] == runs[1]
    full = {"stem_conv": 16}
    cut = {name: n for name, n in runs[0].items() if name not in full}
    assert any(n < 32 for n in cut.values())  # the budget cut something
    assert all(n % 8 == 0 for n in runs[0].values())  # round_to=8


# -- issue 41: how much and when; every plan held to the rules ---------------
class TwoCuts(tf_prunetrain.Schedule):
    """70 % of the FLOPs after epoch 1, half after epoch 2 (the README's)."""
    def cut_epochs(self, epochs):
        return [1, 2]

    def goal(self, epoch):
        return {1: 0.7, 2: 0.5}[epoch]


@pytest.mark.parametrize("gentle", [False, True])
def test_a_schedule_that_says_only_how_much_and_when_trains(gentle):
    schedule = TwoCuts()
    if gentle:  # the constructor's arguments, through the base class
        schedule = type("GentleTwoCuts", (TwoCuts,), {
            "__init__": lambda self: tf_prunetrain.Schedule.__init__(
                self, gentle=True)})()
    model = _model()
    x, _ = _data()
    before = model.predict(x, verbose=0)
    reconfigure, _ = _fit(model, schedule, epochs=3)
    cuts = reconfigure.reconfigurations
    assert [r.epoch for r in cuts] == [1, 2] and reconfigure.finished == 2
    for cut, goal in zip(cuts, (0.7, 0.5)):  # ThinWidths: nearest the goal
        assert cut.flops_after / reconfigure.initial_flops == pytest.approx(
            goal, abs=0.08)
    assert reconfigure.strength == 0.0
    # Gentle: the cut removed faded zeros (the plan made as the epoch began
    # is the one cut after it); abrupt: live channels.
    assert all((r.removed_norm == pytest.approx(0.0, abs=1e-6)) == gentle
               for r in cuts)
    assert not np.allclose(before, model.predict(x, verbose=0))


class _Counting(TwoCuts):
    def __init__(self):
        super().__init__(gentle=True)
        self.asked: list[int] = []

    def decide(self, epoch, context):
        self.asked.append(epoch)
        return super().decide(epoch, context)


def test_a_gentle_schedule_is_asked_once_per_epoch_as_it_begins():
    schedule = _Counting()
    reconfigure, _ = _fit(_model(), schedule, epochs=3)
    # Epochs 1 and 2 (pruning ends after 2): once each, not again at the end.
    assert schedule.asked == [1, 2]
    assert [r.epoch for r in reconfigure.reconfigurations] == [1, 2]


class _Unrounded(tf_prunetrain.Schedule):
    """Removes 3 of c1's 16 channels: breaks round_to=4 (13 left)."""
    def __init__(self, model=None):
        super().__init__()
        self.model = model

    def decide(self, epoch, context):
        graph = context.graph if self.model is None \
            else tf_prunetrain.channel_groups(self.model)
        return schedules.Decision(tf_prunetrain.planning.plan_pruning(
            graph, keep={"c1": np.arange(16) >= 3}), last=True)


def test_a_plan_that_breaks_round_to_is_corrected_with_a_warning():
    model = tf_prunetrain.add_group_lasso(pt.two_convs(16, 16))
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(
        from_logits=True))
    reconfigure = tf_prunetrain.Reconfigure(_Unrounded(), round_to=4,
                                            min_channels=1, verbose=0)
    x = np.random.default_rng(0).random((16, 8, 8, 3), np.float32)
    with pytest.warns(UserWarning, match="plan broke round_to=4"):
        model.fit(x, np.arange(16) % 10, epochs=1, verbose=0,
                  callbacks=[reconfigure])
    assert model.get_layer("c1").filters == 16  # 13, rounded up to 16
    assert reconfigure.reconfigurations[0].changes == []


def test_a_plan_that_breaks_min_channels_is_corrected():
    model = tf_prunetrain.add_group_lasso(pt.two_convs(16, 16))
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(
        from_logits=True))
    context = pt.schedule_context(model)
    plan = tf_prunetrain.planning.plan_pruning(
        context.graph, keep={"c1": np.arange(16) >= 15})  # 1 channel left
    with pytest.warns(UserWarning, match="min_channels=4"):
        tf_prunetrain.planning.Constraints(1, 4).hold(plan, model,
                                                      TwoCuts())
    kept = plan.mask(context.graph.layer_outputs()["c1"])
    assert np.count_nonzero(kept) == 4 and kept[15]


def test_a_plan_for_another_model_is_refused_and_nothing_changes():
    model = tf_prunetrain.add_group_lasso(pt.two_convs(16, 16))
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(
        from_logits=True))
    other = pt.two_convs(16, 16)
    reconfigure = tf_prunetrain.Reconfigure(_Unrounded(other), round_to=1,
                                            verbose=0)
    x = np.random.default_rng(0).random((16, 8, 8, 3), np.float32)
    with pytest.raises(ValueError, match="planned a cut of model"):
        model.fit(x, np.arange(16) % 10, epochs=1, verbose=0,
                  callbacks=[reconfigure])
    assert model.get_layer("c1").filters == 16


def test_a_checkpoint_refuses_another_schedule_config(tmp_path):
    model = _model()
    _fit(model, tf_prunetrain.FlopsBudget(0.5, target_epoch=1), epochs=2,
         directory=str(tmp_path))
    other = tf_prunetrain.Reconfigure(
        tf_prunetrain.FlopsBudget(0.25, target_epoch=1), round_to=1)
    log = tf_prunetrain.RunLog()
    with pytest.raises(ValueError, match=r"checkpoint's schedule was "
                       r"FlopsBudget\(.*'target': 0\.5.*this run's is "
                       r"FlopsBudget\(target=0\.25"):
        tf_prunetrain.Checkpoint(str(tmp_path), trackers=[other, log]
                                 ).restore()
    assert other.finished is None and other.reconfigurations == []
    same = tf_prunetrain.Reconfigure(
        tf_prunetrain.FlopsBudget(0.5, target_epoch=1), round_to=1)
    restored = tf_prunetrain.Checkpoint(
        str(tmp_path), trackers=[same, tf_prunetrain.RunLog()]).restore()
    assert restored[1] == 2 and same.finished == 1


def test_an_importance_of_ones_own_chooses_the_channels():
    class Lowest(tf_prunetrain.importance.Importance):
        """Keeps the lowest-numbered groups."""
        def score(self, graph):
            return -np.arange(len(graph.root), dtype=np.float64)

    model = pt.two_convs(16, 16)
    context = pt.schedule_context(model)
    default = tf_prunetrain.FlopsBudget(0.5, target_epoch=1, gentle=False)
    mine = tf_prunetrain.FlopsBudget(0.5, target_epoch=1, gentle=False,
                                     importance=Lowest())
    for schedule in (default, mine):
        schedule.start(context)
    outputs = context.graph.layer_outputs()
    kept = mine.decide(1, context).plan.mask(outputs["c1"])
    assert kept.tolist() == sorted(kept.tolist(), reverse=True)  # a prefix
    assert default.decide(1, context).plan.mask(
        outputs["c1"]).tolist() != kept.tolist()
    assert tf_prunetrain.FlopsBudget.from_config(
        default.get_config()).get_config() == default.get_config()


def test_experimental_levers_are_imported_on_first_use():
    code = ("import sys, tf_prunetrain; "
            "print('tf_prunetrain.experimental.rewarm' in sys.modules); "
            "tf_prunetrain.experimental.Rewarm; "
            "print('tf_prunetrain.experimental.rewarm' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True,
                         text=True, check=True, env={
                             **os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert out.stdout.split() == ["False", "True"]
    assert not hasattr(tf_prunetrain, "rewarm")
    assert not hasattr(schedules, "EarlyBird")
