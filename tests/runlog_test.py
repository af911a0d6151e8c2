"""RunLog cost accounting (beside Reconfigure), TensorBoard summaries, the
run log and tools/report.py, on short real runs."""

import collections
import glob
import json
import os
import subprocess
import sys
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

import model_zoo
import pruning_testing as pt
import tf_prunetrain
from tf_prunetrain import report
from tf_prunetrain import runlog

EPOCHS, BATCH = 4, 16
LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


class _Kill(keras.callbacks.Callback):
    """Zeroes more channel groups after the second epoch (what the group
    lasso does over an interval), so a later reconfiguration shrinks too."""

    def on_epoch_end(self, epoch, logs=None):
        if epoch == 1:
            pt.zero_random_groups(self.model, 0.3, seed=4)


def _fit(model, callbacks):
    x = model_zoo.random_input(model, batch_size=2 * BATCH, seed=0)
    xv = model_zoo.random_input(model, batch_size=BATCH, seed=1)
    y, yv = np.arange(2 * BATCH) % 10, np.arange(BATCH) % 10
    model.compile(keras.optimizers.SGD(0.01, momentum=0.9), LOSS,
                  metrics=["accuracy"])
    return model.fit(x, y, validation_data=(xv, yv), epochs=EPOCHS,
                     batch_size=BATCH, verbose=0, callbacks=callbacks).history


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    pruned_dir, dense_dir = str(root / "prunetrain"), str(root / "dense")
    model = tf_prunetrain.add_group_lasso(
        model_zoo.randomize_batchnorm(model_zoo.resnet_basic()), 1e-3)
    pt.zero_random_groups(model, 0.4, seed=3)
    cb = tf_prunetrain.Reconfigure(tf_prunetrain.DeadChannels(interval=1),
                                   penalty_ratio=None, round_to=1, verbose=0)
    pruned_log = tf_prunetrain.RunLog(log_dir=pruned_dir, batch_size=BATCH)
    keras_dir = str(root / "keras_tensorboard")  # not the RunLog's log_dir
    history = _fit(model, [_Kill(), cb, pruned_log,
                           keras.callbacks.TensorBoard(keras_dir)])
    dense = model_zoo.randomize_batchnorm(model_zoo.resnet_basic())
    log = tf_prunetrain.RunLog(log_dir=dense_dir, batch_size=BATCH)
    dense_history = _fit(dense, [log])
    return {"model": model, "cb": cb, "pruned_log": pruned_log,
            "history": history, "dir": pruned_dir,
            "dense": dense, "log": log, "dense_history": dense_history,
            "dense_dir": dense_dir, "keras_dir": keras_dir,
            "root": str(root)}


def _records(directory):
    with open(os.path.join(directory, "prunetrain.jsonl")) as f:
        return [json.loads(line) for line in f]


def test_training_flops_are_accounted_step_by_step(runs):
    log, records = runs["pruned_log"], _records(runs["dir"])
    steps = 2  # 32 examples, batch 16
    dense = tf_prunetrain.training_cost(model_zoo.resnet_basic(), BATCH)
    assert log.initial_cost.train_flops == dense.train_flops
    epochs = [r for r in records if r["event"] == "epoch"]
    assert len(epochs) == EPOCHS
    previous = {"train_flops_spent": 0, "train_flops_dense": 0,
                "cost": records[0]["cost"]}
    for record in epochs:
        # Each epoch ran the architecture of the previous record.
        assert record["train_flops_spent"] - previous["train_flops_spent"] \
            == steps * previous["cost"]["train_flops"]
        assert record["train_flops_dense"] - previous["train_flops_dense"] \
            == steps * dense.train_flops
        previous = record
    assert log.train_flops_spent == epochs[-1]["train_flops_spent"]
    saved = runs["history"]["prunetrain_train_flops_saved"]
    assert saved[-1] == pytest.approx(100 * log.train_flops_saved)
    # Epoch 1 ran the dense model; the first reconfiguration follows it.
    assert saved[0] == 0 < saved[1] < saved[-1] < 100
    assert log.cost.train_flops < log.initial_cost.train_flops
    assert log.cost.gradient_bytes < log.initial_cost.gradient_bytes
    assert runs["history"]["prunetrain_train_flops"][-1] == \
        tf_prunetrain.training_cost(runs["model"], BATCH).train_flops
    # The dense baseline's RunLog saves nothing.
    assert runs["dense_history"]["prunetrain_train_flops_saved"] == \
        [0.0] * EPOCHS
    assert runs["log"].train_flops_spent == runs["log"].train_flops_dense


def test_penalty_and_its_share_of_the_loss(runs):
    history, cb = runs["history"], runs["cb"]
    assert history["prunetrain_lambda"] == [pytest.approx(1e-3)] * EPOCHS
    penalty = history["prunetrain_penalty"]
    assert all(p > 0 for p in penalty)
    share = history["prunetrain_penalty_share"]
    assert share == pytest.approx(
        [p / l for p, l in zip(penalty, history["loss"])])
    # λ·GL of the final model, recomputed independently.
    final = sum(cb.strength * float(v.regularizer.penalty(v))
                for v in runs["model"].trainable_variables
                if isinstance(v.regularizer, tf_prunetrain.GroupLasso))
    assert penalty[-1] == pytest.approx(final, rel=1e-5)


def _scalars(directory):
    out = {}
    for path in glob.glob(os.path.join(directory, "events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                if value.metadata.plugin_data.plugin_name != "scalars":
                    continue
                out.setdefault(value.tag, {})[event.step] = float(
                    tf.make_ndarray(value.tensor))
    return out


def test_tensorboard_files_hold_the_scalars(runs):
    history = runs["history"]
    ours = _scalars(os.path.join(runs["dir"], "prunetrain"))
    for name in ("params", "flops", "train_flops", "train_flops_saved",
                 "gradient_bytes", "memory_traffic_bytes", "lambda", "penalty", "penalty_share"):
        assert ours[name] == pytest.approx(
            dict(enumerate(history[f"prunetrain_{name}"])), rel=1e-6), name
    channels = {tag: v for tag, v in ours.items() if tag.startswith("channels/")}
    final = runs["pruned_log"].cost.channels()
    assert {tag[len("channels/"):]: v[EPOCHS - 1]
            for tag, v in channels.items()} == final
    assert any(v[EPOCHS - 1] < v[0] for v in channels.values())
    # Keras' epoch logs, under their own names, and the learning rate.
    for name in ("loss", "accuracy", "val_loss", "val_accuracy"):
        assert ours[name] == pytest.approx(dict(enumerate(history[name])),
                                           rel=1e-6), name
    assert ours["learning_rate"] == pytest.approx(
        {epoch: 0.01 for epoch in range(EPOCHS)})
    assert not any(tag.startswith("prunetrain_") for tag in ours)
    # Keras' own TensorBoard callback picked the log entries up as well.
    keras_tb = _scalars(os.path.join(runs["keras_dir"], "train"))
    assert keras_tb["epoch_prunetrain_train_flops_saved"] == pytest.approx(
        dict(enumerate(history["prunetrain_train_flops_saved"])), rel=1e-6)


def test_a_run_log_is_its_log_dirs_one_tensorboard_writer(runs):
    """RunLog alone (the dense run): one events file in its log_dir, each
    scalar written once per epoch."""
    files = glob.glob(os.path.join(runs["dense_dir"], "**",
                                   "events.out.tfevents.*"), recursive=True)
    assert [os.path.basename(os.path.dirname(f)) for f in files] == [
        "prunetrain"]
    written = collections.Counter(
        (value.tag, event.step)
        for event in tf.compat.v1.train.summary_iterator(files[0])
        for value in event.summary.value)
    assert written[("loss", 0)] == written[("params", 0)] == 1
    assert set(written.values()) == {1}


def test_run_log_records_and_summary_table(runs):
    records, log = _records(runs["dir"]), runs["pruned_log"]
    assert records[0]["event"] == "start"
    assert records[0]["batch_size"] == BATCH
    # A cut after every epoch: a "reconfiguration" record when it changed
    # the model, a "no_change" record when nothing was dead.
    done = [r for r in records if r["event"] == "reconfiguration"]
    unchanged = [r for r in records if r["event"] == "no_change"]
    assert sorted(r["epoch"] for r in done + unchanged) == list(
        range(1, EPOCHS + 1))
    assert [r["epoch"] for r in done] == [
        r.epoch for r in runs["cb"].reconfigurations if r.changes]
    assert [r["epoch"] for r in done][:2] == [1, 2]  # 40%, then _Kill's 30%
    assert done[-1]["params_after"] == runs["model"].count_params()
    assert done[-1]["channels"] == log.cost.channels()
    shrunk = [r for r in done if r["changes"]]
    assert shrunk == done and all(r["params_after"] < r["params_before"]
                                  for r in shrunk)
    epochs = [r for r in records if r["event"] == "epoch"]
    assert [r["logs"]["loss"] for r in epochs] == pytest.approx(
        runs["history"]["loss"])
    table = log.summary()
    changed = next(path for path, old, new in shrunk[0]["changes"]
                   if path in log.cost.channels())
    line = next(l for l in table.splitlines() if l.startswith(changed + " "))
    assert f"{log.initial_cost.channels()[changed]} -> " in line
    assert f"Parameters: {runs['model'].count_params():,} (initial" in table


def test_report_draws_the_figures(runs, tmp_path):
    figures = report.render([("PruneTrain", report.load(runs["dir"])),
                             ("dense", report.load(runs["dense_dir"]))],
                            str(tmp_path))
    assert sorted(map(os.path.basename, figures)) == [
        "channels.png", "curves.png", "flops.png"]
    import matplotlib.image
    for path in figures:
        image = matplotlib.image.imread(path)
        assert image.shape[0] > 300 and image.shape[1] > 600, path
        assert image[..., :3].std() > 0.05, path  # not a blank canvas


def test_report_command_line(runs, tmp_path):
    tool = os.path.join(os.path.dirname(__file__), "..", "tools", "report.py")
    done = subprocess.run(
        [sys.executable, tool, f"--log={runs['dir']}", "--label=PruneTrain",
         f"--log={runs['dense_dir']}/prunetrain.jsonl", "--label=dense",
         f"--out_dir={tmp_path}"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert sorted(os.listdir(tmp_path)) == ["channels.png", "curves.png",
                                            "flops.png"]
    bad = subprocess.run([sys.executable, tool, "--log=a", "--log=b",
                          "--label=only-one"], capture_output=True, text=True,
                         timeout=120)
    assert bad.returncode != 0 and "one --label per --log" in bad.stderr


def test_report_reads_torn_and_rejects_bad_logs(runs, tmp_path):
    torn = tmp_path / "torn.jsonl"
    with open(os.path.join(runs["dir"], "prunetrain.jsonl")) as f:
        text = f.read()
    torn.write_text(text + '{"event": "epo')
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert report.load(str(torn)) == _records(runs["dir"])
    assert "torn last line" in str(caught[0].message)
    bad = tmp_path / "bad.jsonl"
    bad.write_text("not json\n" + text)
    with pytest.raises(ValueError, match="line 1 is not JSON"):
        report.load(str(bad))
    with pytest.raises(FileNotFoundError, match="no run log"):
        report.load(str(tmp_path / "missing"))


def test_run_log_validates_and_handles_dynamic_sizes(tmp_path):
    with pytest.raises(ValueError, match="RunLog: batch_size"):
        tf_prunetrain.RunLog(batch_size=0)
    with pytest.raises(ValueError, match="RunLog: batch_size"):
        tf_prunetrain.RunLog(batch_size=1.5)
    x = keras.Input((None, None, 1))
    y = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(2, 3)(x))
    model = keras.Model(x, y)
    model.compile("sgd", "mse")
    log = tf_prunetrain.RunLog(log_dir=str(tmp_path))
    with pytest.warns(UserWarning, match="no cost accounting"):
        history = model.fit(np.ones((4, 6, 6, 1)), np.ones((4, 2)), epochs=1,
                            verbose=0, callbacks=[log]).history
    assert history["prunetrain_params"] == [model.count_params()]
    assert "prunetrain_train_flops" not in history


def test_measured_step_times_are_logged(runs):
    """A real fit: every epoch logs a measured median step time, and each
    shrinking reconfiguration its step time before and after."""
    history, records = runs["history"], _records(runs["dir"])
    cb, log = runs["cb"], runs["pruned_log"]
    steps = history["prunetrain_step_seconds"]
    assert len(steps) == EPOCHS and all(0 < s < 60 for s in steps)
    assert steps[-1] == pytest.approx(log.step_seconds)
    assert np.isfinite(history["prunetrain_step_time_saved"]).all()
    shrunk = [r.epoch for r in cb.reconfigurations if r.changes]
    assert shrunk and [t.epoch for t in log.cut_timings] == shrunk
    assert all(t.step_seconds_before > 0 and t.step_seconds_after > 0
               for t in log.cut_timings)
    timed = [r for r in records if r["event"] == "step_time"]
    assert [r["epoch"] for r in timed] == shrunk
    assert [r["after"] for r in timed] == [
        t.step_seconds_after for t in log.cut_timings]
    assert "train step (measured median, re-traces excluded)" in log.summary()
    # The dense baseline's RunLog times its steps too.
    assert all(s > 0 for s in runs["dense_history"]["prunetrain_step_seconds"])


def test_step_time_phases_skip_retraces_and_price_the_saving():
    """On a fake clock (`RunLog(clock=...)`): the first step after each
    (re)trace is not timed, medians are per architecture, the saving prices
    every step at its model's median, and all of it (with the cut's
    `CutTiming`) survives the RunLog's get_state()/set_state()."""
    cb, log, step = pt.on_fake_clock(batch_size=BATCH, verbose=0)
    cb.on_train_begin()
    log.on_train_begin()
    for seconds in (5.0, 1.0, 1.2, 0.8):  # a trace, then three steps
        step(seconds)
    assert log.step_seconds == log.initial_step_seconds == 1.0
    assert log.step_time_saved == 0.0
    assert cb.reconfigure(1, pt.dead_channel_plan(cb)).changes
    [timing] = log.cut_timings
    assert timing == runlog.CutTiming(1, step_seconds_before=1.0)
    assert log.step_seconds == 1.0  # the new model has not run yet
    for seconds in (4.0, 0.5, 0.6, 0.4, 0.5):  # a re-trace, four steps
        step(seconds)
    assert timing.step_seconds_after is None  # AFTER_STEPS = 5 not yet timed
    step(0.5)
    assert timing.step_seconds_after == 0.5
    assert timing.retrace_seconds == pytest.approx(3.5)  # 4.0 - 0.5
    # 4 steps at 1.0 and 6 at 0.5, against 10 at 1.0.
    assert log.step_time_saved == pytest.approx(0.3)
    scalars = log.scalars({})
    assert scalars["step_seconds"] == 0.5
    assert scalars["step_time_saved"] == pytest.approx(30.0)
    assert "initial 1000.0 ms, now 500.0 ms (0.50x); training time saved " \
        "so far 30.0%" in log.summary()

    resumed_log = tf_prunetrain.RunLog(batch_size=BATCH)
    resumed_log.set_state(json.loads(json.dumps(log.get_state())))
    assert resumed_log.step_seconds == 0.5
    assert resumed_log.initial_step_seconds == 1.0
    assert resumed_log.step_time_saved == pytest.approx(0.3)
    assert resumed_log.cut_timings == log.cut_timings


def test_checkpoints_with_step_times_in_reconfigure_still_restore():
    """Before issue 41 the `Reconfiguration` records held the RunLog's step
    times; such a checkpoint's Reconfigure state restores without them."""
    cb, log, step = pt.on_fake_clock(batch_size=BATCH, verbose=0)
    cb.on_train_begin()
    log.on_train_begin()
    cb.reconfigure(1, pt.dead_channel_plan(cb))
    state = json.loads(json.dumps(cb.get_state()))
    state["reconfigurations"][0].update(step_seconds_before=1.0,
                                        step_seconds_after=0.5,
                                        retrace_seconds=3.5)
    resumed = tf_prunetrain.Reconfigure(
        tf_prunetrain.DeadChannels(interval=1), penalty_ratio=None,
        verbose=0)
    resumed.set_state(state)
    assert resumed.reconfigurations == cb.reconfigurations


def test_step_times_are_nan_until_a_step_is_timed():
    log = tf_prunetrain.RunLog()
    model = model_zoo.plain_cnn()
    model.compile("sgd", LOSS)
    log.set_model(model)
    log.on_train_begin()
    scalars = log.scalars({})
    assert np.isnan(scalars["step_seconds"])
    assert np.isnan(scalars["step_time_saved"])
    assert log.step_seconds is None and log.step_time_saved is None


def test_a_run_log_listed_before_reconfigure_is_refused():
    """The RunLog logs what Reconfigure does in its on_epoch_end, so it goes
    after it: listed before, fit refuses before its first step."""
    model = tf_prunetrain.add_group_lasso(model_zoo.resnet_basic(), 1e-3)
    model.compile(keras.optimizers.SGD(0.01), LOSS)
    cb = tf_prunetrain.Reconfigure(tf_prunetrain.DeadChannels(interval=1),
                                   penalty_ratio=None, verbose=0)
    log = tf_prunetrain.RunLog()
    x = model_zoo.random_input(model, batch_size=BATCH)
    with pytest.raises(ValueError, match="Reconfigure must come before "
                       "RunLog"):
        model.fit(x, np.arange(BATCH) % 10, epochs=1, verbose=0,
                  callbacks=[log, cb])
    assert int(model.optimizer.iterations) == 0
    assert log.steps == 0
