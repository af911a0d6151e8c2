"""Fault-tolerant resume: SIGKILL at several points (one device and
MirroredStrategy), resume, and end like an uninterrupted run; damaged
checkpoints are skipped; a failed checkpoint write stops cleanly."""

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

import tf_prunetrain
from tf_prunetrain import checkpoint as checkpoint_lib

JOB = os.path.join(os.path.dirname(__file__), "resume_job.py")


def _job(directory, kill_at, mode="dead"):
    return subprocess.run([sys.executable, JOB, str(directory), kill_at, mode],
                          capture_output=True, text=True, timeout=300)


def _result(directory):
    with open(os.path.join(directory, "result.json")) as f:
        result = json.load(f)
    return result, np.load(os.path.join(directory, "weights.npz"))


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    return _uninterrupted(tmp_path_factory, "dead")


@pytest.fixture(scope="module")
def uninterrupted_target(tmp_path_factory):
    return _uninterrupted(tmp_path_factory, "target")


def _uninterrupted(tmp_path_factory, mode):
    """The result and weights of a run in `mode` that nobody killed."""
    directory = tmp_path_factory.mktemp(f"uninterrupted_{mode}")
    done = _job(directory, "none", mode)
    assert done.returncode == 0, done.stderr[-3000:]
    return _result(directory)


@pytest.mark.parametrize("kill_at, resumed_from", [
    ("mid_epoch", 2),          # killed in epoch 3: back to the end of 2
    ("reconfiguration", 1),    # killed inside epoch 2's reconfiguration
    ("checkpoint_write", 2),   # killed writing ckpt-3: ckpt-2 is used
])
def test_killed_run_resumes_and_ends_like_an_uninterrupted_one(
        tmp_path, uninterrupted, kill_at, resumed_from):
    _check_resumed(tmp_path, uninterrupted, kill_at, resumed_from, "dead")


@pytest.mark.parametrize("kill_at, resumed_from", [
    ("reconfiguration", 1),  # killed inside the cut that meets the target
    ("mid_epoch", 2),        # killed after the target was met
])
def test_flops_target_run_resumes_with_its_controller_state(
        tmp_path, uninterrupted_target, kill_at, resumed_from):
    result = _check_resumed(tmp_path, uninterrupted_target, kill_at,
                            resumed_from, "target")
    assert result["target_reached"] == 2
    assert result["strength"] == 0.0  # the lasso stayed off after resuming


@pytest.fixture(scope="module")
def uninterrupted_mirrored(tmp_path_factory):
    return _uninterrupted(tmp_path_factory, "mirrored")


def test_mirrored_run_killed_in_a_reconfiguration_resumes(
        tmp_path, uninterrupted_mirrored):
    """MirroredStrategy on two logical CPUs, SIGKILLed between the layers'
    and the optimizer's rebuild of epoch 2's reconfiguration: the resumed
    run ends with the uninterrupted run's architecture and history."""
    result = _check_resumed(tmp_path, uninterrupted_mirrored,
                            "reconfiguration", 1, "mirrored")
    assert result["replicas"] == 2
    assert result["reconfigured"]  # it did shrink


def _check_resumed(tmp_path, uninterrupted, kill_at, resumed_from, mode):
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
                "target_reached"):
        assert result[key] == expected[key], key
    # Deterministic ops, same data order: the weights agree as well.
    assert weights.files == expected_weights.files
    for name in weights.files:
        np.testing.assert_allclose(weights[name], expected_weights[name],
                                   rtol=1e-5, atol=1e-6, err_msg=name)
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
