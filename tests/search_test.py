"""Widths chosen by measured loss (`experimental.SearchedWidths`)."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

import model_zoo
import tf_prunetrain
from tf_prunetrain import budget
from tf_prunetrain import fading
from tf_prunetrain import surgery
from tf_prunetrain.experimental import search

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
HERE = os.path.dirname(os.path.abspath(__file__))


def _model():
    model = model_zoo.randomize_batchnorm(model_zoo.resnet_basic())
    model.compile(keras.optimizers.SGD(0.01), LOSS)
    return model


def _data(model, batches=4, seed=0):
    rng = np.random.default_rng(seed)
    return [(model_zoo.random_input(model, batch_size=8, seed=seed + i),
             rng.integers(0, 10, 8)) for i in range(batches)]


def _plan(model, ranking, goal=0.4):
    graph = tf_prunetrain.channel_groups(model)
    return budget.plan_to_flops(
        graph, goal * tf_prunetrain.cost.forward_flops(model), round_to=2,
        ranking=ranking)


def _searched(model, seed=0, candidates=6):
    return search.SearchedWidths(_data(model), candidates=candidates,
                                 calibration_steps=2, eval_steps=2, seed=seed)


def test_the_thin_widths_are_always_scored_first():
    model = _model()
    thin = _plan(model, budget.ThinWidths()).changes()
    ranking = _searched(model)
    chosen = _plan(model, ranking).changes()
    (record,) = ranking.history
    assert record["candidates"][0] == thin
    assert len(record["candidates"]) == len(record["losses"]) > 1
    assert chosen == record["candidates"][record["chosen"]]
    assert record["losses"][record["chosen"]] == min(record["losses"])
    # One candidate: the thin widths themselves.
    assert _plan(model, _searched(model, candidates=1)).changes() == thin


def test_the_searched_cut_meets_the_goal_and_candidates_differ():
    model = _model()
    ranking = _searched(model, candidates=8)
    plan = _plan(model, ranking)
    goal = 0.4 * tf_prunetrain.cost.forward_flops(model)
    assert abs(budget.estimate_flops(plan.graph, plan.keep) / goal - 1) < 0.2
    candidates = ranking.history[0]["candidates"]
    assert len({json.dumps(c) for c in candidates}) == len(candidates) > 1


def test_scoring_leaves_the_model_untouched():
    model = _model()
    before = {v.path: v.numpy().copy() for v in model.weights}
    _plan(model, _searched(model))
    for v in model.weights:  # BatchNorm statistics included
        np.testing.assert_array_equal(v.numpy(), before[v.path], v.path)


def test_a_searched_cut_of_zeroed_channels_keeps_the_outputs():
    model = _model()
    plan = _plan(model, _searched(model))
    fading.Fade(plan, steps=1).step()  # its channels zeroed
    x = model_zoo.random_input(model, batch_size=4, seed=9)
    expected = model(x, training=False).numpy()
    pruned = surgery.rebuild(plan)
    assert pruned.count_params() < model.count_params()
    np.testing.assert_allclose(pruned(x, training=False).numpy(), expected,
                               rtol=1e-4, atol=1e-5)


SCRIPT = """
import json, sys
sys.path.insert(0, {here!r})
import keras, numpy as np, model_zoo, tf_prunetrain
from tf_prunetrain import budget
from tf_prunetrain import fading
from tf_prunetrain import surgery
from tf_prunetrain.experimental import search
model = model_zoo.randomize_batchnorm(model_zoo.resnet_basic())
model.compile(keras.optimizers.SGD(0.01),
              keras.losses.SparseCategoricalCrossentropy(from_logits=True))
rng = np.random.default_rng(0)
data = [(model_zoo.random_input(model, batch_size=8, seed=i),
         rng.integers(0, 10, 8)) for i in range(4)]
ranking = search.SearchedWidths(data, candidates=6, calibration_steps=2,
                                eval_steps=2, seed={seed})
plan = budget.plan_to_flops(
    tf_prunetrain.channel_groups(model),
    0.4 * tf_prunetrain.cost.forward_flops(model), round_to=2,
    ranking=ranking)
print("RESULT" + json.dumps([plan.changes(), ranking.history[0]["candidates"]]))
"""


def _in_a_process(seed):
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT.format(here=HERE, seed=seed)],
        capture_output=True, text=True, check=True, timeout=300,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}).stdout
    return json.loads(out.split("RESULT", 1)[1])


def test_the_same_seed_gives_the_same_widths_in_two_processes():
    first, second = _in_a_process(3), _in_a_process(3)
    assert first == second
    other = _in_a_process(4)
    assert other[1][0] == first[1][0]  # the thin widths, whatever the seed
    assert other[1][1:] != first[1][1:]  # the random candidates differ


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="candidates"):
        search.SearchedWidths([], candidates=0)
    with pytest.raises(ValueError, match="spread"):
        search.SearchedWidths([], spread=0)
    model = _model()
    with pytest.raises(ValueError, match="batches"):
        _plan(model, search.SearchedWidths(_data(model, 2), candidates=2,
                                           calibration_steps=2, eval_steps=2))
    plain = model_zoo.resnet_basic()
    with pytest.raises(ValueError, match="not compiled"):
        _plan(plain, search.SearchedWidths(_data(plain), candidates=2,
                                           calibration_steps=2, eval_steps=2))


class _Killed(Exception):
    pass


class _Kill(keras.callbacks.Callback):
    """The process dies after epoch `after` (its checkpoint written)."""

    def __init__(self, after):
        super().__init__()
        self.after = after

    def on_epoch_end(self, epoch, logs=None):
        if epoch + 1 == self.after:
            raise _Killed()


def _searched_run(folder, kill=None, initial_epoch=0):
    """4 epochs of a ResNet with a searched cut after epoch 2 (faded over
    epoch 2), checkpointed every epoch into `folder`; killed after epoch
    `kill`; resumed from its checkpoint with `initial_epoch`."""
    model = None
    if model is None:
        model = tf_prunetrain.add_group_lasso(_model(), strength=1e-3)
        model.compile(keras.optimizers.SGD(0.01, momentum=0.9), LOSS)
    ranking = _searched(model)
    cut = tf_prunetrain.Reconfigure(
        tf_prunetrain.FlopsBudget(0.4, target_epoch=2, interval=2,
                                  ranking=ranking),
        penalty_ratio=None, round_to=2, verbose=0)
    backup = tf_prunetrain.Checkpoint(folder, trackers=[cut])
    restored = backup.restore() if initial_epoch else None
    if restored:
        model, initial_epoch = restored
    x = model_zoo.random_input(model, batch_size=32, seed=0)
    y = np.arange(32) % 10
    model.fit(x, y, epochs=4, batch_size=16, shuffle=False, verbose=0,
              initial_epoch=initial_epoch, callbacks=[cut, backup] + (
                  [_Kill(kill)] if kill else []))
    return model, ranking


@pytest.mark.parametrize("stop", [1, 3])
def test_a_killed_and_resumed_search_ends_where_the_run_would(tmp_path, stop):
    """Stopped before the search's epoch (it searches again, drawing the
    same candidates) or after the cut (it does not search again)."""
    whole, ranking = _searched_run(str(tmp_path / "a"))
    with pytest.raises(_Killed):
        _searched_run(str(tmp_path / "b"), kill=stop)
    resumed, again = _searched_run(str(tmp_path / "b"), initial_epoch=stop)
    assert len(again.history) == len(ranking.history) == 1
    assert json.dumps(again.history) == json.dumps(ranking.history)
    assert resumed.count_params() == whole.count_params()
    for a, b in zip(whole.weights, resumed.weights):  # bit for bit
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)
