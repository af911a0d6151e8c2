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
