"""Undoing a cut: `reconfigure_in_place` returns an `Undo` that puts the model
back as it was at the cut, and `Reconfigure(undo_slower=True)` uses it when
the measured step got slower (on a fake clock here, so the decision is the
test's, not the machine's)."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

import model_zoo
import pruning_testing as pt
import tf_prunetrain
from tf_prunetrain import runlog

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
TOL = 1e-6


def _trained(strategy=None):
    """A model_zoo ResNet with lasso, momentum slots set, its dead-channel
    plan (40% of the groups zeroed, one residual branch among them)."""
    with (strategy or tf.distribute.get_strategy()).scope():
        model = model_zoo.randomize_batchnorm(model_zoo.resnet_basic())
        if strategy is not None:
            model = tf_prunetrain.synchronize_batchnorm(model)
        model = tf_prunetrain.add_group_lasso(model, 1e-3)
        model.compile(keras.optimizers.SGD(0.01, momentum=0.9), LOSS)
    x = model_zoo.random_input(model, batch_size=8, seed=0)
    y = np.arange(8) % 10
    model.fit(x, y, epochs=2, batch_size=4, verbose=0)
    pt.zero_random_groups(model, 0.4, seed=3)
    graph = tf_prunetrain.channel_groups(model)
    branch = next(r for r in graph.records
                  if r.view.path == "stage2_block2_conv1")
    graph.zero(sorted(set(graph.roots(branch.outs[0]).tolist()) - {0}))
    plan = tf_prunetrain.plan_pruning(tf_prunetrain.channel_groups(model))
    assert plan.merges, "the plan should remove a residual branch"
    return model, plan, x, y


def _state(model):
    return ([id(v) for v in model.weights],
            [np.array(v.numpy()) for v in model.weights],
            [np.array(v.numpy()) for v in model.optimizer.variables
             if v is not model.optimizer.iterations])


@pytest.mark.parametrize("distributed", [False, True])
def test_undo_puts_back_the_model_and_optimizer_as_at_the_cut(distributed):
    # One strategy per process (`make_strategy` caches it): a second
    # MirroredStrategy would reuse its collective keys.
    strategy = tf_prunetrain.make_strategy("mirrored") if distributed else None
    model, plan, x, y = _trained(strategy)
    outputs = model.predict(x, verbose=0)
    ids, values, slots = _state(model)
    params, layers = model.count_params(), len(model.layers)
    iterations = int(model.optimizer.iterations.numpy())
    optimizer = model.optimizer

    undo = tf_prunetrain.reconfigure_in_place(model, plan)
    assert model.count_params() < params and len(model.layers) < layers
    model.fit(x, y, epochs=1, batch_size=4, verbose=0)  # 2 steps, then undone
    pruned, pruned_outputs = _state(model), model.predict(x, verbose=0)
    pruned_step = model.train_function
    redo = undo()

    assert model.count_params() == params and len(model.layers) == layers
    assert model.optimizer is optimizer
    _assert_back(model, (ids, values, slots), outputs, iterations + 2, x, y)

    redo()  # the smaller model as it was at the undo, its step not re-traced
    assert model.train_function is pruned_step
    _assert_back(model, pruned, pruned_outputs, iterations + 4, x, y)


def _assert_back(model, state, outputs, iterations, x, y):
    """`model` holds `state` (the same variables, values and slots) and
    gives `outputs`, its optimizer counts `iterations`, and it trains on."""
    ids, values, slots = _state(model)
    assert ids == state[0]  # the same variable objects
    for before, after in zip(state[1] + state[2], values + slots, strict=True):
        np.testing.assert_array_equal(before, after)
    assert int(model.optimizer.iterations.numpy()) == iterations
    assert pt.relative_error(outputs, model.predict(x, verbose=0)) < TOL
    history = model.fit(x, y, epochs=1, batch_size=4, verbose=0)
    assert np.isfinite(history.history["loss"][-1])


def test_undo_after_a_later_change_is_refused_and_changes_nothing():
    model, plan, x, _ = _trained()
    first = tf_prunetrain.reconfigure_in_place(model, plan)
    pt.zero_random_groups(model, 0.3, seed=5)
    second = tf_prunetrain.reconfigure_in_place(
        model, tf_prunetrain.plan_pruning(tf_prunetrain.channel_groups(model)))
    assert second is not None
    outputs, params = model.predict(x, verbose=0), model.count_params()
    with pytest.raises(RuntimeError, match=f"'{model.name}'.*changed after"):
        first()
    assert model.count_params() == params
    assert pt.relative_error(outputs, model.predict(x, verbose=0)) < TOL
    second()
    first()  # in order, both undo
    with pytest.raises(RuntimeError, match="changed after"):
        first()  # once only


def test_undo_of_a_cut_before_any_step_keeps_the_iteration_count():
    model = tf_prunetrain.add_group_lasso(model_zoo.resnet_basic(), 1e-3)
    model.compile(keras.optimizers.SGD(0.01, momentum=0.9), LOSS)
    pt.zero_random_groups(model, 0.4, seed=3)
    x = model_zoo.random_input(model, batch_size=8, seed=0)
    outputs, params = model.predict(x, verbose=0), model.count_params()
    undo = tf_prunetrain.reconfigure_in_place(
        model, tf_prunetrain.plan_pruning(tf_prunetrain.channel_groups(model)))
    model.fit(x, np.arange(8) % 10, epochs=1, batch_size=4, verbose=0)
    undo()
    assert model.count_params() == params
    assert int(model.optimizer.iterations.numpy()) == 2
    assert pt.relative_error(outputs, model.predict(x, verbose=0)) < TOL
    model.fit(x, np.arange(8) % 10, epochs=1, batch_size=4, verbose=0)
    assert int(model.optimizer.iterations.numpy()) == 4


def test_a_plan_that_changes_nothing_has_no_undo():
    model, _, _, _ = _trained()
    plan = tf_prunetrain.plan_pruning(tf_prunetrain.channel_groups(model),
                                      threshold=0.0)
    assert not plan.changes()
    assert tf_prunetrain.reconfigure_in_place(model, plan) is None


def _cut_then_time(monkeypatch, after_seconds, then_seconds=1.0, **kwargs):
    """On the fake clock: 10 steps of 1 s, a dead-channel cut, its untimed
    re-trace step and 5 steps of `after_seconds`, then 6 of `then_seconds`
    (an undo's untimed re-trace step and 5 of the model before the cut)."""
    callback, step = pt.on_fake_clock(monkeypatch, verbose=0, **kwargs)
    callback.on_train_begin()
    for _ in range(10):
        step(1.0)
    params = callback.model.count_params()
    cut = callback.reconfigure(1)
    assert cut.changes and callback.model.count_params() < params
    for seconds in [5.0] + [after_seconds] * 5 + [5.0] + [then_seconds] * 5:
        step(seconds)
    return callback, params


def test_a_slower_cut_is_undone_and_later_cuts_round_coarser(
        monkeypatch, tmp_path):
    callback, params = _cut_then_time(monkeypatch, 1.2, undo_slower=True,
                                      round_to=2, log_dir=str(tmp_path))
    cut, back = callback.reconfigurations
    assert cut.undone and cut.step_seconds_after == pytest.approx(1.2)
    assert back.kind == "undo" and back.params_after == params
    assert callback.model.count_params() == params
    assert back.changes == [(p, new, old) for p, old, new in cut.changes]
    assert callback.round_to == 4
    assert callback.cost.inference_flops == \
        callback.initial_cost.inference_flops
    with open(tmp_path / "prunetrain.jsonl") as f:
        events = [json.loads(line)["event"] for line in f]
    assert "undo" in events and "undo_kept" in events
    assert "slower_step" not in events and "redo" not in events
    again = callback.reconfigure(2)  # the same dead channels, rounded to 4
    widths = [new for _, _, new in again.changes]
    full = {path: old for path, old, _ in again.changes}
    assert all(w % 4 == 0 or w == full[p]
               for (p, _, _), w in zip(again.changes, widths))
    state = callback.state()
    resumed = tf_prunetrain.Reconfigure(round_to=2, undo_slower=True)
    resumed.restore(state)
    assert resumed.round_to == 4


def test_a_cut_whose_model_before_is_no_faster_is_made_again(monkeypatch):
    """The slowdown was the machine's: the model before the cut is timed
    no faster, so the cut is redone (the same variables, no re-trace) and
    the multiple stays."""
    callback, params = _cut_then_time(monkeypatch, 1.2, then_seconds=1.2,
                                      undo_slower=True, round_to=2)
    cut, back, again = callback.reconfigurations
    assert [r.kind for r in (cut, back, again)] == ["cut", "undo", "redo"]
    assert not cut.undone and back.undone and not again.undone
    assert again.changes == cut.changes
    assert callback.model.count_params() == cut.params_after < params
    assert callback.round_to == 2 and again.retrace_seconds == 0.0
    assert callback.cost.inference_flops == cut.flops_after


@pytest.mark.parametrize("undo_slower,after", [(True, 0.9), (False, 1.2)])
def test_a_faster_cut_or_undo_off_keeps_the_cut(monkeypatch, undo_slower,
                                                after):
    callback, params = _cut_then_time(monkeypatch, after, round_to=2,
                                      undo_slower=undo_slower)
    assert [r.kind for r in callback.reconfigurations] == ["cut"]
    assert not callback.reconfigurations[0].undone
    assert callback.model.count_params() < params and callback.round_to == 2


def _budget_fit(monkeypatch, slow, epochs=4, batch_size=8, strategy=None):
    """A budget-mode fit (target at epoch 1, 64 examples) on a fake clock:
    a step takes 0.5 s when `slow(callback)`, else 0.25 s."""
    with (strategy or tf.distribute.get_strategy()).scope():
        model = tf_prunetrain.add_group_lasso(model_zoo.resnet_basic(), 1e-3)
        model.compile(keras.optimizers.SGD(0.01, momentum=0.9), LOSS)
    x = model_zoo.random_input(model, batch_size=64, seed=0)
    callback = tf_prunetrain.Reconfigure(
        flops_target=0.5, target_epoch=1, round_to=1, undo_slower=True,
        penalty_ratio=None, verbose=0)
    now = [0.0]

    def clock():
        now[0] += 0.5 if slow(callback) else 0.25
        return now[0]

    monkeypatch.setattr(runlog.time, "perf_counter", clock)
    model.fit(x, np.arange(64) % 10, epochs=epochs, batch_size=batch_size,
              verbose=0, callbacks=[callback])
    return model, callback


def test_budget_cut_undone_in_fit_is_made_again_coarser_and_meets_the_target(
        monkeypatch):
    """Steps are slow exactly on the architecture of the first cut: it is
    undone, the model before it is faster, so the target is met an epoch
    later with a coarser multiple, and the lasso ends detached from the
    restored variables."""
    first = []

    def slow(callback):
        if not first and callback.reconfigurations:
            first.append(callback.reconfigurations[0].params_after)
        return bool(first) and callback.model.count_params() == first[0]

    model, callback = _budget_fit(monkeypatch, slow)
    kinds = [(r.kind, r.epoch, r.undone) for r in callback.reconfigurations]
    # Epoch 2: 5 timed steps, the undo, 1 timed step of the model before the
    # cut (not enough: epoch 2's reconfiguration waits); epoch 3: its check,
    # then the cut again after epoch 3.
    assert kinds == [("cut", 1, True), ("undo", 1, False), ("cut", 3, False)]
    assert callback.target_reached == 3 and callback.round_to == 2
    final = callback.reconfigurations[-1]
    assert all(new % 2 == 0 or new == old for _, old, new in final.changes)
    assert callback.cost.inference_flops <= \
        0.5 * callback.initial_cost.inference_flops
    assert not any(getattr(v, "regularizer", None)
                   for v in model.trainable_variables)
    assert model.count_params() == final.params_after


@pytest.mark.parametrize("distributed", [False, True])
def test_budget_cut_slowed_by_noise_is_redone_in_fit(monkeypatch,
                                                     distributed):
    """Every step is slow from the cut until the undo is timed (the machine,
    not the cut): the cut is redone, the target stays met at epoch 1; under
    MirroredStrategy every decision is the first replica's."""
    strategy = tf_prunetrain.make_strategy("mirrored") if distributed else None
    model, callback = _budget_fit(
        monkeypatch, lambda cb: len(cb.reconfigurations) in (1, 2),
        strategy=strategy)
    cut, back, again = callback.reconfigurations
    assert [(r.kind, r.undone) for r in callback.reconfigurations] == [
        ("cut", False), ("undo", True), ("redo", False)]
    assert callback.target_reached == 1 and callback.round_to == 1
    assert model.count_params() == cut.params_after == again.params_after
    assert not any(getattr(v, "regularizer", None)
                   for v in model.trainable_variables)


def test_short_epochs_defer_reconfiguration_until_the_timing_is_done(
        monkeypatch):
    """4 steps per epoch: the 5 steps a decision needs span epochs, and no
    cut is made while one is pending (the target's cut is retried only once
    the undo is checked, with the coarser multiple)."""
    first = []

    def slow(callback):
        if not first and callback.reconfigurations:
            first.append(callback.reconfigurations[0].params_after)
        return bool(first) and callback.model.count_params() == first[0]

    model, callback = _budget_fit(monkeypatch, slow, epochs=6, batch_size=16)
    kinds = [(r.kind, r.epoch, r.undone) for r in callback.reconfigurations]
    # Cut after epoch 1; 5 timed steps by epoch 3's second: undone; the
    # model before it timed 5 steps by epoch 4's last; the cut again after 4.
    assert kinds == [("cut", 1, True), ("undo", 1, False), ("cut", 4, False)]
    assert callback.target_reached == 4 and callback.round_to == 2
    assert model.count_params() == callback.reconfigurations[-1].params_after


def test_an_undo_not_checked_when_fit_ends_is_redone(monkeypatch):
    """fit ends one timed step after an undo: the cut stands (it is redone,
    as if the slowdown were noise), so the model never ends undecided."""
    callback, step = pt.on_fake_clock(monkeypatch, verbose=0, round_to=2,
                                      undo_slower=True)
    callback.on_train_begin()
    for _ in range(10):
        step(1.0)
    cut = callback.reconfigure(1)
    for seconds in [5.0] + [1.2] * 5 + [5.0, 1.0]:
        step(seconds)  # the cut, its undo, 1 timed step of the model before
    assert cut.undone and callback.reconfigurations[-1].kind == "undo"
    callback.on_train_end()
    assert [r.kind for r in callback.reconfigurations] == ["cut", "undo",
                                                          "redo"]
    assert callback.model.count_params() == cut.params_after
    assert callback.round_to == 2


def test_undo_slower_must_be_a_bool():
    with pytest.raises(ValueError, match="undo_slower must be True or False"):
        tf_prunetrain.Reconfigure(undo_slower="yes")
