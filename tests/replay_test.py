"""Replayed training time: the timeline a run records (recipes/timeline.py),
the replay's clock and arithmetic (tools/replay.py), re-timing a sweep's
results (tools/retime.py) and the paired verdicts (tools/verdicts.py)."""

import itertools
import json

import keras
import numpy as np
import pytest
import tensorflow as tf

import tf_prunetrain
from recipes import common
from recipes import timeline as timeline_lib
from tf_prunetrain.experimental import distillation
from tf_prunetrain.models import resnet_cifar
from tools import replay
from tools import retime
from tools import summary
from tools import verdicts

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def _data(n=64, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.random((n, 8, 8, 1)).astype("float32"),
            (np.arange(n) % 10).astype("int64"))


def _model(lasso=True):
    model = resnet_cifar(8, input_shape=(8, 8, 1), widths=(8, 16, 16), seed=0)
    if lasso:
        model = tf_prunetrain.add_group_lasso(model, strength=0.02,
                                              proximal=True, scales=True)
    model.compile(keras.optimizers.SGD(0.05, momentum=0.9), LOSS)
    return model


def test_timeline_through_a_reconfiguration_adds_up_to_the_runs_steps():
    keras.utils.set_random_seed(0)
    model = _model()
    dense_key = timeline_lib.architecture_key(_model(lasso=False))
    recorder = timeline_lib.Timeline()
    x, y = _data()
    model.fit(x, y, epochs=4, batch_size=16, verbose=0, callbacks=[
        tf_prunetrain.Reconfigure(
            tf_prunetrain.FlopsBudget(0.5, target_epoch=2), round_to=1,
            verbose=0, penalty_ratio=None),
        recorder])
    segments = recorder.segments
    assert sum(s["steps"] for s in segments) == 4 * 4  # epochs x batches
    # Wide with the lasso first (the lasso does not change the key), then
    # narrower; the lasso is gone once the target is met.
    assert (segments[0]["architecture"], segments[0]["lasso"]) == (
        dense_key, "proximal+scales")
    assert segments[-1]["lasso"] == ""
    assert segments[-1]["architecture"] == \
        timeline_lib.architecture_key(model) != dense_key
    # One segment per change: neighbours differ.
    assert all((a["architecture"], a["lasso"]) != (b["architecture"],
                                                   b["lasso"])
               for a, b in zip(segments, segments[1:]))
    # The JSON kept for each key rebuilds that architecture.
    assert set(recorder.architectures) == {s["architecture"]
                                           for s in segments}
    for key, text in recorder.architectures.items():
        rebuilt = tf_prunetrain.strip_prunetrain(
            keras.models.model_from_json(text))
        assert timeline_lib.architecture_key(rebuilt) == key


def test_a_second_fit_with_the_same_model_continues_its_segment():
    model = _model(lasso=False)
    recorder = timeline_lib.Timeline()
    x, y = _data(32)
    for _ in range(2):
        model.fit(x, y, epochs=1, batch_size=16, verbose=0,
                  callbacks=[recorder])
    assert [s["steps"] for s in recorder.segments] == [4]


def test_step_clock_times_steady_steps_on_a_scripted_clock():
    ends = iter([0.0, 1.0, 3.0, 6.0, 10.0])
    clock = replay.StepClock(warmup=2, clock=lambda: next(ends))
    clock.on_train_begin()
    for batch in range(5):
        clock.on_train_batch_end(batch)
    # The first two steps are warm-up: the intervals after the second.
    assert clock.seconds == [2.0, 3.0, 4.0]
    with pytest.raises(ValueError, match="warmup must be >= 1"):
        replay.StepClock(warmup=0)


def test_time_models_on_a_fake_clock_prices_timelines_exactly():
    """A clock that advances 0.25 s per reading: every steady step of every
    model measures 0.25 s, so the replayed seconds are exact."""
    ticks = itertools.count(0.0, 0.25)
    models = {"a": _model(lasso=False), "b:proximal+scales": _model()}
    tf_prunetrain.regularizers.attach_proximal_step(models["b:proximal+scales"])
    x, y = _data(32)

    def dataset():
        return tf.data.Dataset.from_tensor_slices((x, y)).batch(8).repeat()

    lines = []
    seconds = replay.time_models(models, dataset, rounds=3, steps=2,
                                 warmup=1, clock=lambda: next(ticks),
                                 progress=lines.append)
    assert seconds == {"a": 0.25, "b:proximal+scales": 0.25}
    assert len(lines) == 3 and lines[0].startswith("replay round 1/3")
    segments = [{"architecture": "b", "lasso": "proximal+scales",
                 "steps": 30},
                {"architecture": "a", "lasso": "", "steps": 70}]
    assert replay.items(segments) == ["b:proximal+scales", "a"]
    assert replay.replayed_seconds(segments, seconds, 1.5) == 26.5


class _Fake:
    """A model whose `fit` records its name and ends every step at once."""

    def __init__(self, name, log):
        self.name, self.log = name, log

    def fit(self, data, epochs, steps_per_epoch, verbose, shuffle,
            callbacks=()):
        self.log.append(self.name)
        for callback in callbacks:
            callback.on_train_begin()
            for batch in range(steps_per_epoch):
                callback.on_train_batch_end(batch)


def test_time_models_runs_in_alternating_rounds_and_checks_them():
    """The replay's rounds are `latency.round_robin`'s: after one tracing
    pass, the order reverses every other round."""
    log, lines, ticks = [], [], itertools.count(0.0, 0.5)
    models = {name: _Fake(name, log) for name in "ab"}
    seconds = replay.time_models(models, lambda: None, rounds=3, steps=2,
                                 warmup=1, clock=lambda: next(ticks),
                                 progress=lines.append)
    assert log == ["a", "b"] + ["a", "b", "b", "a", "a", "b"]
    assert seconds == {"a": 0.5, "b": 0.5}
    assert [line.split(":")[0] for line in lines] == [
        "replay round 1/3", "replay round 2/3", "replay round 3/3"]
    with pytest.raises(ValueError, match="rounds must be an integer >= 1"):
        replay.time_models(models, lambda: None, rounds=0)


def test_retime_prices_against_dense_and_combines_replays():
    runs = [{"method": "prunetrain", "timeline": [
                {"architecture": "d", "lasso": "proximal", "steps": 40},
                {"architecture": "p", "lasso": "", "steps": 60}]},
            {"method": "dense", "timeline": [
                {"architecture": "d", "lasso": "", "steps": 100}]}]
    result = {"runs": runs}
    assert retime.reference(result) == "d"  # dense's, though not first
    first = {"machine": {}, "rounds": 1, "steps": 1, "warmup": 1,
             "date": "today", "seconds": 2.0,
             "step_seconds": {"d": 0.2, "d:proximal": 0.3, "p": 0.1}}
    second = dict(first, seconds=3.0,  # a machine twice as slow
                  step_seconds={"d": 0.4, "d:proximal": 0.6, "p": 0.2})
    retime.add_replay(result, first)
    retime.add_replay(result, second)
    combined = result["replay"]
    assert combined["replays"] == 2 and combined["seconds"] == 5.0
    # Ratios to dense agree (1.5, 0.5), priced at dense's median: 0.3 s.
    assert combined["step_seconds"] == pytest.approx(
        {"d": 0.3, "d:proximal": 0.45, "p": 0.15})


def _run(seed, method, setting, accuracy, segments, one_off=0.0,
         wall=10.0):
    return {"seed": seed, "method": method, "setting": setting,
            "accuracy": accuracy, "timeline": segments,
            "one_off_seconds": one_off, "train_seconds": wall,
            "train_flops_spent": 1.0, "inference_flops": 1.0, "params": 1,
            "memory_traffic_bytes": 1.0}


def test_replayed_ratios_and_paired_verdicts_of_a_made_up_sweep():
    dense = [{"architecture": "A", "lasso": "", "steps": 100}]
    thin = [{"architecture": "T", "lasso": "", "steps": 100}]
    pruned = [{"architecture": "A", "lasso": "proximal", "steps": 30},
              {"architecture": "B", "lasso": "", "steps": 70}]
    runs = []
    for seed, (d, t, p) in enumerate([(0.90, 0.88, 0.895),
                                      (0.91, 0.885, 0.90),
                                      (0.92, 0.90, 0.915)]):
        runs += [_run(seed, "dense", None, d, dense, wall=20.0 + seed),
                 _run(seed, "thin", 0.5, t, thin, wall=9.0),
                 _run(seed, "prunetrain", 0.5, p, pruned, one_off=1.5,
                      wall=18.0)]
    result = {"runs": runs, "replay": {"step_seconds": {
        "A": 0.2, "A:proximal": 0.25, "B": 0.1, "T": 0.08}}}
    summary.annotate(result)
    # Dense 100 x 0.2 = 20 s; PruneTrain 30 x 0.25 + 70 x 0.1 + 1.5 = 16 s.
    assert runs[2]["replayed_seconds"] == pytest.approx(16.0)
    assert runs[2]["ratios"]["replayed_time"] == pytest.approx(0.8)
    assert runs[2]["ratios"]["one_off_share"] == pytest.approx(1.5 / 16)
    assert runs[2]["ratios"]["agreement"] == pytest.approx((18 / 20) / 0.8)
    rows = {r["label"]: r for r in summary.summarize(result)}
    pair = rows["prunetrain 0.5"]["paired"]["thin 0.5"]
    assert pair["differences"] == pytest.approx([1.5, 1.5, 1.5])
    assert pair["verdict"] == "better"
    assert rows["prunetrain 0.5"]["paired"]["dense"]["verdict"] == "worse"
    # Thin is faster on the replayed clock (0.4x) and less accurate: both
    # are on the front, dense too (the most accurate).
    assert [r["pareto"] for r in rows.values()] == [True, True, True]
    assert summary.time_key(result) == "replayed_time"
    assert summary.time_key({"runs": runs}) == "wall_time"


def test_bootstrap_interval_and_verdicts():
    low, high = verdicts.bootstrap_interval([0.5, 0.7, 0.6, 0.4, 0.8])
    assert 0.4 <= low < 0.6 < high <= 0.8
    # Reproducible: the generator is fixed.
    assert (low, high) == verdicts.bootstrap_interval([0.5, 0.7, 0.6, 0.4,
                                                       0.8])
    mixed = verdicts.paired({0: 1.0, 1: 0.0, 2: 1.0}, {0: 0.0, 1: 1.0, 2: 0.5})
    assert mixed["verdict"] == "not established" and mixed["low"] < 0
    assert verdicts.paired({0: 1.0}, {1: 1.0}) is None
    with pytest.raises(ValueError, match="no values"):
        verdicts.bootstrap_interval([])


def test_machine_names_the_cpu_and_the_tensorflow_build():
    info = replay.machine()
    assert info["tensorflow"] == tf.__version__ and info["cores"] >= 1
    assert set(info["vector_flags"]) <= set(replay.VECTOR_FLAGS)
    text = replay.describe(info)
    assert info["cpu"] in text and tf.__version__ in text
    json.dumps(info)  # goes into results files


def test_a_taught_segment_replays_with_its_teachers_forward_pass(tmp_path):
    """A segment a teacher taught is its own replay item
    (`architecture@teacher`): the replay's model carries the teacher's
    term (a loss above the plain one) and prices those steps apart."""
    student, teacher = (resnet_cifar(8, input_shape=(8, 8, 3), widths=w,
                                     seed=0) for w in ((8, 16, 16),
                                                       (16, 16, 32)))
    keys = [timeline_lib.architecture_key(m) for m in (student, teacher)]
    segments = [{"architecture": keys[0], "lasso": "", "teacher": keys[1],
                 "steps": 3}, {"architecture": keys[0], "lasso": "",
                               "steps": 5}]
    taught = f"{keys[0]}@{keys[1]}"
    assert replay.items(segments) == [taught, keys[0]]
    assert replay.replayed_seconds(segments, {taught: 2.0, keys[0]: 1.0}) \
        == 11.0
    config = common.Config(data="synthetic", image_size=8, num_classes=10,
                           synthetic_size=64, batch_size=16, epochs=1,
                           validate=False, prunetrain=False, verbose=0)
    data = common.load_data(config)
    architectures = {keys[0]: student.to_json(), keys[1]: teacher.to_json()}
    models = {item: retime.replay_model(config, data, item, architectures,
                                        str(tmp_path)) for item in
              (taught, keys[0])}
    assert distillation.teacher_of(models[keys[0]]) is None
    built = distillation.teacher_of(models[taught])
    assert timeline_lib.architecture_key(built) == keys[1]
    x, y = next(iter(data.train(16, False, 0, None)[0]))
    plain = models[keys[0]]
    plain.set_weights(models[taught].get_weights())
    assert models[taught].test_on_batch(x, y) == pytest.approx(
        plain.test_on_batch(x, y))  # the same model ...
    assert models[taught].train_on_batch(x, y) > plain.train_on_batch(x, y)
