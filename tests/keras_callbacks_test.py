"""Keras' own callbacks in a `fit` that reconfigures the model (a FLOPs
budget met after epoch 1 of 4), listed before and after `Reconfigure`:
the same end model as without them, or EarlyStopping's best since the cut,
or a refusal before the first step (tf_prunetrain.keras_callbacks)."""

import csv

import keras
import numpy as np
import pytest
import tensorflow as tf

import tf_prunetrain
from tf_prunetrain import planning
from tf_prunetrain.models import resnet_cifar

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
EPOCHS = 4


def _data(n, seed):
    rng = np.random.default_rng(seed)
    return (rng.random((n, 8, 8, 1)).astype("float32"),
            (np.arange(n) % 10).astype("int64"))


def _fit(callbacks=(), order="after", strategy=None, epochs=EPOCHS):
    """A fresh seeded ResNet cut to half its FLOPs after epoch 1; `callbacks`
    listed before or after `Reconfigure`."""
    keras.utils.set_random_seed(0)
    with (strategy or tf.distribute.get_strategy()).scope():
        model = tf_prunetrain.add_group_lasso(resnet_cifar(
            8, input_shape=(8, 8, 1), widths=(8, 16, 16), seed=0),
            strength=0.02, proximal=True)
        model.compile(keras.optimizers.SGD(0.05, momentum=0.9), LOSS)
    cut = tf_prunetrain.Reconfigure(
        tf_prunetrain.FlopsBudget(0.5, target_epoch=1), round_to=1,
        verbose=0, penalty_ratio=None)
    listed = [*callbacks, cut] if order == "before" else [cut, *callbacks]
    x, y = _data(48, 0)
    history = model.fit(x, y, epochs=epochs, batch_size=16, shuffle=False,
                        verbose=0, validation_data=_data(16, 1),
                        callbacks=listed)
    assert len(cut.reconfigurations) == 1  # the cut happened, after epoch 1
    return model, history.history


@pytest.fixture(scope="module")
def plain():
    """The end weights without any other callback."""
    return _fit()[0].get_weights()


def _same(weights, other):
    assert len(weights) == len(other)
    for a, b in zip(weights, other):
        np.testing.assert_array_equal(a, b)


READERS = {
    "TerminateOnNaN": lambda tmp: keras.callbacks.TerminateOnNaN(),
    "CSVLogger": lambda tmp: keras.callbacks.CSVLogger(str(tmp / "log.csv")),
    "TensorBoard": lambda tmp: keras.callbacks.TensorBoard(
        str(tmp / "tb"), histogram_freq=1),
    "ModelCheckpoint best .keras": lambda tmp: keras.callbacks.ModelCheckpoint(
        str(tmp / "best.keras"), monitor="val_loss", save_best_only=True),
    "ModelCheckpoint weights": lambda tmp: keras.callbacks.ModelCheckpoint(
        str(tmp / "e{epoch}.weights.h5"), save_weights_only=True),
    "log reader (RemoteMonitor-style)": lambda tmp: keras.callbacks.
    LambdaCallback(on_epoch_end=lambda epoch, logs: (tmp / "seen.txt").open(
        "a").write(f"{epoch} {sorted(logs)}\n")),
}


@pytest.mark.parametrize("order", ["before", "after"])
@pytest.mark.parametrize("name", sorted(READERS))
def test_callbacks_that_read_or_write_leave_the_run_unchanged(
        plain, tmp_path, name, order):
    model, _ = _fit([READERS[name](tmp_path)], order)
    _same(model.get_weights(), plain)
    if name == "CSVLogger":
        with open(tmp_path / "log.csv", encoding="utf-8") as f:
            assert len(list(csv.DictReader(f))) == EPOCHS
    elif name == "ModelCheckpoint best .keras":
        best = keras.models.load_model(tmp_path / "best.keras")
        assert best.predict(_data(4, 2)[0], verbose=0).shape == (4, 10)
    elif name == "ModelCheckpoint weights":
        # Each file holds the model as it was when ModelCheckpoint ran: in
        # the cut's epoch, before the cut when listed before Reconfigure.
        model.load_weights(tmp_path / f"e{EPOCHS}.weights.h5")
        _same(model.get_weights(), plain)
        first, last = ((tmp_path / f"e{e}.weights.h5").stat().st_size
                       for e in (1, EPOCHS))
        assert first > last if order == "before" else first == last
    elif name == "log reader (RemoteMonitor-style)":
        assert len((tmp_path / "seen.txt").read_text().splitlines()) == EPOCHS
    elif name == "TensorBoard":
        assert any((tmp_path / "tb" / "train").iterdir())


@pytest.mark.parametrize("order", ["before", "after"])
def test_learning_rate_callbacks_follow_the_run_across_the_cut(order):
    seen = []
    schedule = keras.callbacks.LearningRateScheduler(
        lambda epoch: 0.05 / (epoch + 1))
    probe = keras.callbacks.LambdaCallback(on_epoch_end=lambda e, logs: seen.append(
        float(keras.ops.convert_to_numpy(probe.model.optimizer.learning_rate))))
    model, _ = _fit([schedule, probe], order)
    assert seen == pytest.approx([0.05 / (e + 1) for e in range(EPOCHS)])
    # No improvement is ever big enough: halved after every epoch but the
    # first, before and after the cut (the optimizer the cut builds keeps it).
    plateau = keras.callbacks.ReduceLROnPlateau(monitor="loss", factor=0.5,
                                                patience=0, min_delta=1e9)
    model, _ = _fit([plateau], order)
    assert float(keras.ops.convert_to_numpy(
        model.optimizer.learning_rate)) == pytest.approx(0.05 / 2 ** 3)


def _watched():
    """EarlyStopping restoring the best weights, and a callback that keeps
    the weights of every epoch's end (`snapshots[epoch]`)."""
    snapshots = {}
    snap = keras.callbacks.LambdaCallback(
        on_epoch_end=lambda e, logs: snapshots.__setitem__(
            e, snap.model.get_weights()))
    stop = keras.callbacks.EarlyStopping(monitor="val_loss", patience=10,
                                         restore_best_weights=True)
    return stop, snap, snapshots


@pytest.mark.parametrize("order", ["before", "after"])
def test_early_stopping_restores_the_best_weights_since_the_cut(order):
    stop, snap, snapshots = _watched()
    model, history = _fit([stop, snap], order)
    # Epoch 1 (index 0) ends with the cut: its metric is the model's before
    # it and does not count. The best of epochs 2-4 is restored.
    after_cut = history["val_loss"][1:]
    best = 1 + int(np.argmin(after_cut))
    assert stop.best == pytest.approx(min(after_cut))
    assert stop.best_epoch == best and stop.start_from_epoch == 0
    _same(model.get_weights(), snapshots[best])


@pytest.mark.parametrize("order", ["before", "after"])
def test_backup_and_restore_is_refused_before_the_first_step(tmp_path, order):
    keras.utils.set_random_seed(0)
    model = tf_prunetrain.add_group_lasso(resnet_cifar(
        8, input_shape=(8, 8, 1), widths=(8, 16, 16), seed=0))
    model.compile(keras.optimizers.SGD(0.05), LOSS)
    weights = model.get_weights()
    backup = keras.callbacks.BackupAndRestore(str(tmp_path / "backup"))
    cut = tf_prunetrain.Reconfigure(tf_prunetrain.FlopsBudget(0.5), verbose=0)
    listed = [backup, cut] if order == "before" else [cut, backup]
    with pytest.raises(ValueError, match=r"Reconfigure cannot share fit with "
                       r"keras\.callbacks\.BackupAndRestore: .*"
                       r"tf_prunetrain\.Checkpoint"):
        model.fit(*_data(16, 0), epochs=2, verbose=0, callbacks=listed)
    assert int(model.optimizer.iterations) == 0  # not one step
    _same(model.get_weights(), weights)
    assert not (tmp_path / "backup").exists()


class WeightAverage(keras.callbacks.Callback):
    """An exponential average of the trainable weights (a user callback
    that caches per-variable state): it starts again from the model's
    weights after each reconfiguration."""

    def __init__(self, decay=0.9):
        super().__init__()
        self.decay, self.events = decay, []

    def _start(self):
        self.average = [np.array(v) for v in self.model.trainable_weights]

    def on_train_begin(self, logs=None):
        self._start()

    def on_train_batch_end(self, batch, logs=None):
        for mean, v in zip(self.average, self.model.trainable_weights):
            mean *= self.decay
            mean += (1 - self.decay) * np.array(v)

    def on_reconfigure(self, reconfiguration, plan):
        self.events.append((reconfiguration.epoch, type(plan)))
        self._start()


@pytest.mark.parametrize("order", ["before", "after"])
def test_a_user_callback_is_told_of_the_reconfiguration(order):
    average = WeightAverage()
    model, _ = _fit([average], order)
    assert average.events == [(1, planning.Plan)]
    assert [a.shape for a in average.average] == [
        tuple(v.shape) for v in model.trainable_weights]


def test_early_stopping_and_checkpoint_under_mirrored_strategy(tmp_path):
    # One strategy per process (`make_strategy` caches it): a second
    # MirroredStrategy would reuse its collective keys.
    strategy = tf_prunetrain.distribute.make_strategy("mirrored")
    assert strategy.num_replicas_in_sync == 2  # the two logical CPUs
    stop = keras.callbacks.EarlyStopping(monitor="val_loss", patience=10,
                                         restore_best_weights=True)
    best = keras.callbacks.ModelCheckpoint(str(tmp_path / "best.keras"),
                                           monitor="val_loss",
                                           save_best_only=True)
    model, history = _fit([stop, best], "before", strategy)
    assert stop.best == pytest.approx(min(history["val_loss"][1:]))
    loaded = keras.models.load_model(tmp_path / "best.keras")
    assert loaded.predict(_data(4, 2)[0], verbose=0).shape == (4, 10)


def test_early_stopping_in_a_run_resumed_from_a_checkpoint(tmp_path):
    """Cut after epoch 1, checkpointed after epoch 2, resumed with
    EarlyStopping listed first: it restores the best of the resumed epochs
    into the narrowed model."""
    def callbacks():
        cut = tf_prunetrain.Reconfigure(
            tf_prunetrain.FlopsBudget(0.5, target_epoch=1), round_to=1,
            verbose=0, penalty_ratio=None)
        return cut, tf_prunetrain.Checkpoint(str(tmp_path), trackers=[cut])

    keras.utils.set_random_seed(0)
    model = tf_prunetrain.add_group_lasso(resnet_cifar(
        8, input_shape=(8, 8, 1), widths=(8, 16, 16), seed=0),
        strength=0.02, proximal=True)
    model.compile(keras.optimizers.SGD(0.05, momentum=0.9), LOSS)
    x, y = _data(48, 0)
    model.fit(x, y, epochs=2, batch_size=16, shuffle=False, verbose=0,
              callbacks=list(callbacks()))
    cut, backup = callbacks()
    model, epoch = backup.restore()
    assert epoch == 2 and cut.finished == 1
    stop, snap, snapshots = _watched()
    history = model.fit(x, y, epochs=EPOCHS, initial_epoch=epoch,
                        batch_size=16, shuffle=False, verbose=0,
                        validation_data=_data(16, 1),
                        callbacks=[stop, cut, backup, snap]).history
    best = epoch + int(np.argmin(history["val_loss"]))
    assert stop.best_epoch == best
    _same(model.get_weights(), snapshots[best])
