"""The cuts' one-offs replayed and priced (tools/oneoffs.py): the cut a
run's timeline shows is found, made again on a fresh model of its first
architecture, reaches its second, and is timed; runs are priced on it."""

import keras
import numpy as np
import pytest

import tf_prunetrain
from recipes import timeline as timeline_lib
from tf_prunetrain.models import resnet_cifar
from tools import oneoffs
from tools import summary

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def _model(lasso=True, seed=0):
    model = resnet_cifar(8, input_shape=(8, 8, 1), widths=(8, 16, 16),
                         seed=seed)
    if lasso:
        model = tf_prunetrain.add_group_lasso(model, strength=0.02,
                                              proximal=True, scales=True)
    model.compile(keras.optimizers.SGD(0.05, momentum=0.9), LOSS)
    return model


def _data(n=64):
    rng = np.random.default_rng(0)
    return (rng.random((n, 8, 8, 1)).astype("float32"),
            (np.arange(n) % 10).astype("int64"))


def _dataset():
    import tensorflow as tf
    return tf.data.Dataset.from_tensor_slices(_data()).batch(16).repeat()


@pytest.fixture(scope="module")
def run():
    """A gentle cut after epoch 1 of 2 to half the FLOPs: its timeline."""
    keras.utils.set_random_seed(0)
    model = _model()
    recorder = timeline_lib.Timeline()
    x, y = _data()
    model.fit(x, y, epochs=2, batch_size=16, verbose=0, callbacks=[
        tf_prunetrain.Reconfigure(
            tf_prunetrain.FlopsBudget(0.5, target_epoch=1), round_to=1,
            verbose=0, penalty_ratio=None),
        recorder])
    return {"timeline": recorder.segments,
            "architectures": recorder.architectures, "one_off_seconds": 9.0}


def _build(architectures):
    def build(item):
        architecture, lasso = item.partition(":")[::2]
        model = tf_prunetrain.strip_prunetrain(
            keras.models.model_from_json(architectures[architecture]))
        if lasso:
            model = tf_prunetrain.add_group_lasso(
                model, strength=0.02, proximal=True, scales=True)
        model.compile(keras.optimizers.SGD(0.05, momentum=0.9), LOSS)
        return model
    return build


def test_the_timeline_marks_the_fade_and_the_cut_is_found(run):
    first, second = run["timeline"]
    assert first["fade"] is True and first["steps"] == 4  # epoch 1 fades
    assert "fade" not in second and second["lasso"] == ""
    key = oneoffs.transition_key(first, second)
    assert oneoffs.transitions([run]) == {key: True}
    # The dense run's timeline has no cut.
    assert oneoffs.transitions([{"timeline": [dict(second)]}]) == {}


def test_a_replayed_cut_reaches_the_runs_architecture_and_is_timed(run):
    (key, gentle), = oneoffs.transitions([run]).items()
    seconds = dict(zip(oneoffs.FIELDS, oneoffs.time_cut(
        _build(run["architectures"]), key, run["architectures"], gentle,
        _dataset, steps=4)))
    # Tracing the train step again, and the fade's first call, take far
    # longer than a steady step of this tiny model; the cut costs time.
    assert seconds["retrace"] > 0.05
    assert seconds["fade_trace"] > 0.0
    assert seconds["surgery"] > 0.0 and seconds["decide"] > 0.0
    assert all(value >= 0.0 for value in seconds.values())
    # The same cut, abrupt: no fade is timed.
    abrupt = oneoffs.time_cut(_build(run["architectures"]), key,
                              run["architectures"], False, _dataset, 4)
    assert abrupt[1:3] == [0.0, 0.0]


def test_plan_between_cuts_to_the_widths_and_removes_dead_branches():
    """A target with a residual branch removed (its first convolution's
    channels all zero) and other layers thinner: a fresh model cut by
    `plan_between` has its architecture."""
    target = _model(lasso=False)
    tf_prunetrain.coupling.zero_channels(target, {
        "stage1_block1_conv1": list(range(8)),
        "stage3_block1_conv1": list(range(6))})
    target = tf_prunetrain.prune_channels(target)
    fresh = _model(lasso=False, seed=1)
    plan = oneoffs.plan_between(fresh, target)
    assert plan.removed  # the dead branch goes whole
    tf_prunetrain.inplace.reconfigure_in_place(fresh, plan)
    assert timeline_lib.architecture_key(fresh) == \
        timeline_lib.architecture_key(target)
    with pytest.raises(ValueError, match="has 8 channels, the target 16"):
        oneoffs.plan_between(
            resnet_cifar(8, input_shape=(8, 8, 1), widths=(8, 8, 8)),
            resnet_cifar(8, input_shape=(8, 8, 1), widths=(16, 16, 16)))


def test_runs_are_priced_on_replayed_one_offs_where_the_replay_cut():
    cut = {"decide": 0.5, "fade_trace": 0.25, "fade_step": 0.01,
           "surgery": 1.0, "retrace": 2.0}
    pruned = [{"architecture": "A", "lasso": "proximal", "fade": True,
               "steps": 50},
              {"architecture": "B", "lasso": "", "steps": 50}]
    dense = [{"architecture": "A", "lasso": "", "steps": 100}]
    runs = [{"seed": 0, "method": m, "setting": s, "accuracy": 0.9,
             "timeline": t, "one_off_seconds": o, "train_seconds": 30.0,
             "train_flops_spent": 1.0, "inference_flops": 1.0, "params": 1,
             "memory_traffic_bytes": 1.0}
            for m, s, t, o in (("dense", None, dense, 0.0),
                               ("prunetrain", 0.5, pruned, 9.0))]
    steps = {"A": 0.2, "A:proximal": 0.25, "B": 0.1}
    result = {"runs": runs, "replay": {"step_seconds": steps,
                                       "cuts": {"A:proximal>B": cut}}}
    summary.annotate(result)
    # 50 x 0.25 + 50 x 0.1 steps, one-offs 0.5 + 0.25 + 50 x 0.01 + 1 + 2
    # = 4.25 (not the run's 9.0 in-run seconds).
    assert runs[1]["one_off_replayed"] == pytest.approx(4.25)
    assert runs[1]["replayed_seconds"] == pytest.approx(12.5 + 5 + 4.25)
    assert runs[1]["ratios"]["one_off_share"] == pytest.approx(4.25 / 21.75)
    assert runs[0]["one_off_replayed"] is None  # no cut: in-run (0)
    # A replay without cuts (older files): the in-run one-offs.
    result["replay"].pop("cuts")
    summary.annotate(result)
    assert runs[1]["replayed_seconds"] == pytest.approx(12.5 + 5 + 9.0)
