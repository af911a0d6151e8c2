"""Exact resume: `Reconfigure` + `RunLog` + `Checkpoint(trackers=[...])`
fed by `data.stream`, SIGKILLed at many points (after an epoch, in the
middle of one, inside a cut, while writing a checkpoint; twice in a row;
both schedules, MirroredStrategy, a learning-rate schedule, Dropout, the
experimental levers) or stopped, resumed, and ending bit for bit like an
uninterrupted run, without calibrating λ again; damaged checkpoints are
skipped; a failed checkpoint write stops cleanly."""

import errno
import json
import os
import re
import shutil
import signal
import subprocess
import sys

import keras
import numpy as np
import pytest

import model_zoo
import tf_prunetrain
from tf_prunetrain import checkpoint as checkpoint_lib
from tf_prunetrain import regularizers

JOB = os.path.join(os.path.dirname(__file__), "resume_job.py")


def _job(directory, kill_at, mode="dead"):
    return subprocess.run([sys.executable, JOB, str(directory), kill_at, mode],
                          capture_output=True, text=True, timeout=300)


def _result(directory):
    with open(os.path.join(directory, "result.json")) as f:
        result = json.load(f)
    return result, np.load(os.path.join(directory, "weights.npz"))


def _run_log(directory):
    """The events of the job's run log (`RunLog(log_dir=DIR/log)`)."""
    with open(os.path.join(directory, "log", "prunetrain.jsonl")) as f:
        return [json.loads(line)["event"] for line in f]


_UNINTERRUPTED = {}


@pytest.fixture
def uninterrupted(tmp_path_factory):
    """The result and weights of a run in a mode that nobody killed (one
    run per mode and test process)."""
    def get(mode):
        if mode not in _UNINTERRUPTED:
            directory = tmp_path_factory.mktemp(f"uninterrupted_{mode}")
            done = _job(directory, "none", mode)
            assert done.returncode == 0, done.stderr[-3000:]
            _UNINTERRUPTED[mode] = _result(directory)
        return _UNINTERRUPTED[mode]
    return get


# (mode, the kills in a row, the epoch the last resume starts from). The
# dead mode cuts after epochs 1, 2 and 3 (the last changes nothing) and
# then trains without the lasso; the target mode fades channels out during
# epochs 1 and 2 and cuts after each; levers: EarlyBird cuts after epoch 2
# and Rewarm lifts the rate through epoch 3.
KILLS = [
    ("dead", ("after:3",), 3),            # after pruning ended
    ("dead", ("mid:2",), 2),              # in epoch 3: back to the end of 2
    ("dead", ("reconfiguration",), 1),    # inside epoch 2's cut
    ("dead", ("checkpoint_write",), 2),   # writing ckpt-3: ckpt-2 is used
    ("dead", ("after:1", "mid:2"), 2),    # two kills in a row
    ("target", ("mid:1",), 1),            # during the fade before a cut
    ("target", ("after:1",), 1),          # between two cuts
    ("target", ("reconfiguration",), 1),  # inside the cut that meets it
    ("target", ("mid:2",), 2),            # after the target was met
    ("mirrored", ("reconfiguration",), 1),
    ("schedule", ("mid:2",), 2),          # Dropout, CosineDecay
    ("levers", ("mid:2",), 2),            # EarlyBird's cut, Rewarm's lift
]


@pytest.mark.parametrize("mode, kills, resumed_from", KILLS,
                         ids=[f"{m}-{'-'.join(k)}" for m, k, _ in KILLS])
def test_killed_run_resumes_and_ends_bit_for_bit_like_an_uninterrupted_one(
        tmp_path, uninterrupted, mode, kills, resumed_from):
    """SIGKILLed at each point (several times in a row), resumed each time:
    the same architecture, λ, cuts, cost totals, and the same weights and
    optimizer state bit for bit."""
    result = _check_resumed(tmp_path, uninterrupted(mode), kills,
                            resumed_from, mode)
    if mode == "target":
        assert result["finished"] == 2
        assert result["strength"] == 0.0  # the lasso stayed off
        assert result["reconfigured"] == [1, 2]
    if mode == "mirrored":
        assert result["replicas"] == 2
    assert result["reconfigured"]  # it did shrink


class _Calibrations(keras.callbacks.Callback):
    """Listed after `Reconfigure`: the "calibration" events it hears."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def on_prunetrain_event(self, event, fields):
        if event == "calibration":
            self.seen.append(fields["strength"])


class _StopAfterFirstEpoch(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        self.model.stop_training = True


def _budget_fit(directory, stop=False):
    """A `fit` of 4 epochs (or, `stop`ped, of one) with
    `Reconfigure(FlopsBudget(0.5, target_epoch=3, interval=1))`, a `RunLog`
    and `Checkpoint(directory, trackers=[reconfigure, runlog])`, resumed
    from `directory`'s latest checkpoint if there is one. Returns the
    model, the callbacks, the History, the epoch it started from and the
    calibrations heard."""
    cut = tf_prunetrain.Reconfigure(
        tf_prunetrain.FlopsBudget(0.5, target_epoch=3, interval=1),
        round_to=1, verbose=0)
    log = tf_prunetrain.RunLog(batch_size=16)
    backup = tf_prunetrain.Checkpoint(str(directory), trackers=[cut, log])
    restored = backup.restore()
    keras.utils.set_random_seed(0)
    if restored:
        model, initial_epoch = restored
    else:
        model = tf_prunetrain.add_group_lasso(
            model_zoo.randomize_batchnorm(model_zoo.resnet_basic()))
        model.compile(keras.optimizers.SGD(0.01, momentum=0.9),
                      keras.losses.SparseCategoricalCrossentropy(
                          from_logits=True))
        initial_epoch = 0
    heard = _Calibrations()
    callbacks = [cut, log, heard, backup]
    if stop:
        callbacks.append(_StopAfterFirstEpoch())
    x = model_zoo.random_input(model, batch_size=48, seed=0)
    history = model.fit(x, np.arange(48) % 10, batch_size=16, epochs=4,
                        initial_epoch=initial_epoch, shuffle=False,
                        verbose=0, callbacks=callbacks)
    return model, cut, log, history.history, initial_epoch, heard.seen


def test_stopped_budget_run_resumes_to_the_same_widths_without_recalibrating(
        tmp_path):
    """Stopped after epoch 1 (of a FLOPs budget met at epoch 3), restored in
    the same process and fitted on: the widths, cuts and cost totals of the
    run that was never stopped, and λ as calibrated at the first step."""
    model, cut, log, history, _, heard = _budget_fit(tmp_path / "whole")
    assert len(heard) == 1 and heard[0] > 0
    assert cut.finished == 3 and cut.strength == 0.0
    # ThinWidths' nearest thin widths: within a rounding step of 0.5.
    assert abs(log.cost.inference_flops / log.initial_cost.inference_flops
               - 0.5) <= 0.05
    assert all(r.removed_norm == 0.0 for r in cut.reconfigurations
               if r.changes)  # gentle: only zeros were cut
    _, _, _, first, _, first_heard = _budget_fit(tmp_path / "parts", True)
    assert len(first["loss"]) == 1 and first_heard == heard
    assert sorted(os.listdir(tmp_path / "parts")) == ["ckpt-1"]
    # λ is saved calibrated in the regularizers (what a resumed fit reads).
    saved = keras.models.load_model(tmp_path / "parts" / "ckpt-1" /
                                    checkpoint_lib.MODEL_FILE)
    lasso = regularizers.lasso_variables(saved)
    assert lasso and all(reg.calibrated and reg.strength == pytest.approx(
        heard[0]) for _, reg in lasso)

    resumed, resumed_cut, resumed_log, rest, initial_epoch, again = \
        _budget_fit(tmp_path / "parts")
    assert initial_epoch == 1
    assert again == []  # not calibrated again
    # Epoch 2 still trains with the lasso, at the first run's λ.
    assert rest["prunetrain_lambda"][0] == pytest.approx(
        history["prunetrain_lambda"][1], rel=1e-6)
    assert rest["prunetrain_lambda"][0] == pytest.approx(heard[0])
    assert resumed_cut.finished == 3 and resumed_cut.strength == 0.0
    assert resumed_log.cost.channels() == log.cost.channels()
    assert resumed.count_params() == model.count_params()
    assert [(r.epoch, r.changes) for r in resumed_cut.reconfigurations] == \
        [(r.epoch, r.changes) for r in cut.reconfigurations]
    assert resumed_cut.schedule.target_epoch == 3
    for key in ("train_flops_spent", "train_flops_dense", "steps"):
        assert getattr(resumed_log, key) == getattr(log, key), key
    assert resumed_log.initial_cost.channels() == log.initial_cost.channels()


def _check_resumed(tmp_path, uninterrupted, kills, resumed_from, mode):
    for kill_at in kills:
        killed = _job(tmp_path, kill_at, mode)
        assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
        assert not os.path.exists(tmp_path / "result.json")
    done = _job(tmp_path, "none", mode)
    assert done.returncode == 0, done.stderr[-3000:]
    result, weights = _result(tmp_path)
    expected, expected_weights = uninterrupted
    assert result["resumed_from"] == resumed_from
    # Architecture, λ, the reconfiguration history and the cost totals.
    for key in ("channels", "params", "strength", "reconfigured",
                "train_flops_spent", "train_flops_dense", "steps",
                "finished"):
        assert result[key] == expected[key], key
    # λ was calibrated once, by the first process; it came back calibrated
    # (the GroupLasso `calibrated` flag) and was not calibrated again: the
    # resumed epochs log the uninterrupted run's λ.
    assert expected["calibrations"] == 1 and result["calibrations"] == 0
    assert result["restored_calibrated"] and all(
        result["restored_calibrated"])
    assert sorted(result["lambdas"], key=int) == [
        e for e in sorted(expected["lambdas"], key=int)
        if int(e) > resumed_from]
    for epoch, strength in result["lambdas"].items():
        assert strength == pytest.approx(expected["lambdas"][epoch],
                                         rel=1e-6), epoch
    # One run log across both processes, appended to on resume.
    events = _run_log(tmp_path)
    assert events.count("start") == 1
    assert events.count("resume") == len(kills)
    assert events.count("calibration") == 1
    # Deterministic ops, each epoch's data order fixed by its number, the
    # random layers' state carried: weights and optimizer state agree bit
    # for bit.
    assert weights.files == expected_weights.files
    for name in weights.files:
        np.testing.assert_array_equal(weights[name], expected_weights[name],
                                      err_msg=name)
    return result


def _build():
    x = keras.Input((4,))
    model = keras.Model(x, keras.layers.Dense(2)(x))
    model.compile("sgd", "mse")
    return model


def test_damaged_and_partial_checkpoints_are_skipped(tmp_path):
    backup = tf_prunetrain.Checkpoint(str(tmp_path), keep=3)
    model = _build()
    model.fit(np.ones((8, 4)), np.ones((8, 2)), epochs=3, verbose=0,
              callbacks=[backup])
    assert sorted(os.listdir(tmp_path)) == ["ckpt-1", "ckpt-2", "ckpt-3"]
    shutil.copytree(tmp_path / "ckpt-3", tmp_path / "ckpt-4.tmp")  # torn
    with open(tmp_path / "ckpt-3" / "model.keras", "r+b") as f:
        f.seek(100)
        f.write(b"garbage")
    with pytest.warns(UserWarning, match="skipping damaged.*ckpt-3.*checksum"):
        restored, epoch = backup.restore()
    assert epoch == 2
    np.testing.assert_allclose(restored.predict(np.ones((1, 4)), verbose=0),
                               _predict_saved(tmp_path / "ckpt-2"))
    os.remove(tmp_path / "ckpt-2" / "manifest.json")
    with pytest.warns(UserWarning, match="ckpt-2"):
        assert backup.restore()[1] == 1


def _predict_saved(folder):
    model = keras.models.load_model(folder / "model.keras")
    return model.predict(np.ones((1, 4)), verbose=0)


def test_checkpoint_arguments():
    for kwargs in ({"every": 0}, {"keep": 0}):
        with pytest.raises(ValueError, match=next(iter(kwargs))):
            tf_prunetrain.Checkpoint("unused", **kwargs)
    assert tf_prunetrain.Checkpoint("/nonexistent/dir").restore() is None


def _disk_full(model_save):
    """Model.save that writes part of the file, then runs out of space."""
    def save(self, path, *args, **kwargs):
        with open(path, "wb") as f:
            f.write(b"PK\x03\x04 half a zip")
        raise OSError(errno.ENOSPC, "No space left on device", path)
    return save


def _read_only(original_makedirs):
    def makedirs(path, *args, **kwargs):
        raise PermissionError(errno.EROFS, "Read-only file system", path)
    return makedirs


@pytest.mark.parametrize("patch, target, reason", [
    (_disk_full, (keras.Model, "save"), "No space left on device"),
    (_read_only, (checkpoint_lib.os, "makedirs"), "Read-only file system"),
])
def test_failed_checkpoint_write_stops_training_and_keeps_the_last_good_one(
        tmp_path, monkeypatch, patch, target, reason):
    """A write that fails (simulated: running as root ignores permissions)
    raises an OSError naming the folder out of fit; the checkpoint before it
    stays restorable and nothing half-written is ever restored."""
    backup = tf_prunetrain.Checkpoint(str(tmp_path), keep=3)
    model = _build()
    x, y = np.random.default_rng(0).normal(size=(8, 4)), np.ones((8, 2))
    model.fit(x, y, epochs=2, verbose=0, callbacks=[backup])
    expected = model.predict(np.ones((1, 4)), verbose=0)
    monkeypatch.setattr(*target, patch(getattr(*target)))
    with pytest.raises(OSError, match=rf"Checkpoint: could not write the "
                       rf"epoch-3 checkpoint in '{re.escape(str(tmp_path))}' \({reason}\); "
                       r"ckpt-2 is intact") as error:
        model.fit(x, y, epochs=3, initial_epoch=2, verbose=0,
                  callbacks=[backup])
    assert error.value.errno in (errno.ENOSPC, errno.EROFS)
    assert model.optimizer.iterations.numpy() == 3  # epoch 3 trained, then it stopped
    monkeypatch.undo()
    assert sorted(os.listdir(tmp_path)) == ["ckpt-1", "ckpt-2"]  # no torn ckpt-3
    restored, epoch = backup.restore()
    assert epoch == 2
    np.testing.assert_allclose(restored.predict(np.ones((1, 4)), verbose=0),
                               expected, rtol=1e-6)
