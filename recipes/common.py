"""What every recipe shares: flags, model and data builders, and `run`.

A recipe (`cifar.py`, `imagenet.py`) only chooses defaults. `run(config)`
trains in one `model.fit` call; with `--dynamic_batch` it makes one call up
to each cut of the paper's mode (every `--interval` epochs, up to
`--penalty_epochs`) or, with `--flops_target`, one up to the epoch its
target is met and one after (`segment_ends`, from the schedule's
`cut_epochs`), so that between calls it can grow the per-replica batch
into the activation memory the reconfiguration freed
(`tf_prunetrain.dynamic_batch.dynamic_batch_size`) and scale the learning
rate with it. PruneTrain is `tf_prunetrain.Reconfigure` with a
`FlopsBudget(--flops_target)` schedule, or with `DeadChannels` (the paper's
mode) without one, followed by a `tf_prunetrain.RunLog` that accounts the
cost and writes the run log and the TensorBoard summaries (loss and metrics
too: the run's one writer). With `--log_dir`, a `tf_prunetrain.Checkpoint`
saves every epoch and `--resume` continues from the latest intact one. With
`--noprunetrain` everything is identical except that the model carries no
group lasso and is never reconfigured (the `RunLog` alone): the dense
baseline.
"""

from __future__ import annotations

import dataclasses
import os
import time
import warnings
from typing import Any, Callable

import keras
import numpy as np
import tensorflow as tf
from absl import app
from absl import flags
from absl import logging

import tf_prunetrain
from tf_prunetrain import data as data_lib
from tf_prunetrain import models

from recipes import timeline as timeline_lib

# --ranking=searched: the experimental ranking's name, its candidates per
# cut, and the epoch whose batch order it scores on (no run reaches it).
SEARCHED, SEARCH_CANDIDATES, SEARCH_EPOCH = "searched", 8, 1_000_000
MODELS = ("resnet20", "resnet32", "resnet56", "resnet50_cifar", "vgg11",
          "vgg13", "vgg16", "resnet50", "mobilenetv2")
# keras.applications' MobileNetV2 keeps BatchNorm statistics with momentum
# 0.999 (for long ImageNet runs): after a few hundred steps they would
# still be half their initial values. The recipes use Keras' default.
MOBILENET_BN_MOMENTUM = 0.99
DATA = ("mnist5k", "digits", "fashion_mnist", "cifar10", "cifar100", "imagenet", "synthetic")
AUGMENT = ("default", "none", "crop_flip")
CHECKPOINT_DIR = "checkpoints"
# In --log_dir at the end: the trainable model (loads where tf_prunetrain is
# imported) and strip_prunetrain's copy (loads with plain Keras).
MODEL_FILE, PLAIN_MODEL_FILE = "model.keras", "model_plain.keras"


@dataclasses.dataclass
class Config:
    """One training run; every field is also a flag of the same name."""

    model: str = "resnet32"
    data: str = "mnist5k"
    data_dir: str | None = None
    train_size: int | None = None
    subset_seed: int | None = None  # --train_size's pick (default: --seed)
    classes: str | None = None  # e.g. "5-9": only these, relabelled 0..k-1
    augment: str = "default"
    validate: bool = True
    architecture: str | None = None
    pretrained: str | None = None  # a .keras model to start from
    new_head: bool = False  # replace its classifier for this data
    freeze_epochs: int = 0  # train only the head first, this many epochs
    freeze_batchnorm: bool = False  # BatchNorm stays frozen in the fine-tune
    recalibrate_steps: int = 0  # frozen BatchNorm re-estimated after cuts
    precise_bn: int = 0  # every BatchNorm re-estimated after training
    prunetrain: bool = True
    penalty_ratio: float = 0.2
    proximal: bool = False
    scales: bool = False
    strength: float | None = None
    penalty_epochs: int | None = None
    flops_target: float | None = None
    target_epoch: int | None = None
    interval: int | None = None
    threshold: float = 1e-4
    round_to: int = 8  # channel counts stay multiples of this
    ranking: str = "thin_widths"  # which channels a budget cut removes
    gentle: bool = True  # fade what a budget cut removes over the epoch before
    early_bird: bool = False  # one budget cut, when the channel mask settles
    prune_first: bool = False  # cut once before training, then fine-tune
    rewarm_epochs: float = 0.0  # learning rate lifted after each cut (0: off)
    distill_epochs: int = 0  # the model before each cut teaches (0: off)
    distill_temperature: float = 4.0
    distill_weight: float = 1.0
    epochs: int = 182
    batch_size: int = 128  # per replica
    learning_rate: float = 0.1  # for batch_size on one replica
    lr_decay_epochs: tuple[int, ...] = (91, 136)
    lr_decay: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    width_multiplier: float = 1.0
    image_size: int | None = None
    num_classes: int | None = None  # synthetic data only
    synthetic_size: int = 1024
    steps_per_epoch: int | None = None
    eval_steps: int | None = None
    strategy: str = "default"
    mixed_precision: bool = False
    dynamic_batch: bool = False
    max_batch_size: int | None = None
    log_dir: str | None = None
    export_dir: str | None = None
    resume: bool = False
    seed: int = 0
    verbose: int = 1


_HELP = {
    "model": f"Network: one of {', '.join(MODELS)}.",
    "data": f"Data source: one of {', '.join(DATA)} (mnist5k and digits "
            "install with the package; fashion_mnist reads the IDX files of "
            "'apt-get install dataset-fashion-mnist', Keras' cache or "
            "--data_dir; cifar*/imagenet need --data_dir).",
    "data_dir": "Directory of the Fashion-MNIST IDX files, the CIFAR python "
                "batches or ImageNet TFRecords / TFDS files / class folders.",
    "train_size": "Train on a random subset of this many training examples "
                  "(picked by --subset_seed; in-memory data sets only).",
    "subset_seed": "Seed of the --train_size pick (unset: --seed). Fix it to "
                   "fine-tune on the examples a --pretrained model saw "
                   "(data sets with a fixed test split: fashion_mnist, "
                   "cifar*; mnist5k and digits split by --seed).",
    "classes": "Keep only these classes, relabelled 0..k-1 in the order "
               "given: a list ('5,6,7') or a range ('5-9'), in-memory data "
               "sets only. The images are normalized with the statistics "
               "of the whole training set, so a model trained on other "
               "classes sees them as it saw its own.",
    "augment": "Training augmentation: 'default' (cifar* and imagenet: "
               "their usual one; the others: none), 'none', or 'crop_flip' "
               "(zero-pad 4 pixels, random crop back, random horizontal "
               "flip).",
    "validate": "Evaluate on the test data after every epoch; --novalidate: "
                "only once at the end, so fit's time is training alone.",
    "architecture": "Train this architecture instead of --model: a Keras "
                    "model JSON file (model.to_json()), e.g. a pruned "
                    "model's, from fresh weights.",
    "pretrained": "Start from this trained model (a .keras file, e.g. a "
                  "recipe's --log_dir/model.keras) instead of --model: "
                  "compress it, or fine-tune it on another task with "
                  "--new_head. Its input shape must be the data's.",
    "new_head": "With --pretrained: replace its last Dense layer (the "
                "classifier) by a fresh one for this data's classes.",
    "freeze_epochs": "With --pretrained --new_head: first train only the new "
                     "classifier, everything else frozen, for this many epochs "
                     "(not counted in --epochs, no pruning, not "
                     "checkpointed); then unfreeze and fine-tune --epochs "
                     "(the Keras transfer-learning guide's two phases).",
    "freeze_batchnorm": "With --pretrained: keep every BatchNorm layer "
                        "frozen (trainable=False: inference mode, its "
                        "statistics fixed) in the fine-tune; cuts slice "
                        "them with their channels.",
    "recalibrate_steps": "After each cut (and --prune_first's), re-estimate "
                         "the frozen BatchNorm layers' statistics on this "
                         "many training batches (experimental.RecalibrateBatchNorm;"
                         " 0: off, they keep the uncut model's).",
    "precise_bn": "After training, before the evaluation: re-estimate every "
                  "BatchNorm layer's statistics on this many training "
                  "batches (PreciseBN; experimental.recalibrate_batchnorm; "
                  "0: off). A short fine-tune after a cut leaves them behind "
                  "the weights (MobileNetV2's momentum 0.99).",
    "distill_epochs": "With PruneTrain: the model before each cut teaches "
                      "the model after it, over the fade and this many "
                      "epochs after the cut (experimental.Distill; 0: off).",
    "distill_temperature": "--distill_epochs' temperature T.",
    "distill_weight": "--distill_epochs' weight of the T²·KL term beside the "
                      "cross-entropy.",
    "prunetrain": "PruneTrain on; --noprunetrain trains the dense baseline.",
    "penalty_ratio": "Group-lasso share of the initial loss (λ calibration).",
    "proximal": "Apply the group lasso as a proximal step after each update "
                "(channels die at a high learning rate) instead of a loss "
                "term.",
    "scales": "Also regularize BatchNorm gamma of prunable channels "
              "(element-wise lasso).",
    "strength": "Fixed group-lasso coefficient λ (replaces the "
                "--penalty_ratio calibration); unset or negative: calibrate.",
    "penalty_epochs": "Group lasso on for this many epochs only, then "
                      "off and no more reconfiguration (unset or 0: always "
                      "on).",
    "flops_target": "Budget mode: the final model's inference FLOPs as a "
                    "fraction of the initial, met by --target_epoch (unset "
                    "or 0: the paper's mode, dead channels only).",
    "target_epoch": "Epoch by which --flops_target is met (unset or 0: 25% "
                    "of --epochs).",
    "interval": "Epochs between reconfigurations (unset or 0: 10; with "
                "--flops_target, half of --target_epoch).",
    "threshold": "A channel is dead when all its kernel slices are below.",
    "round_to": "Keep channel counts multiples of this (8: tensor cores, "
                "and what runs fast on CPU; 1: any count).",
    "ranking": "With --flops_target: which channels a cut removes: "
               f"{', '.join(sorted(tf_prunetrain.budget.RANKINGS))} "
               "(tf_prunetrain.budget.RANKINGS) or searched (experimental."
               "SearchedWidths: candidate widths scored on a fixed slice of "
               "training batches, the thin widths among them).",
    "gentle": "With --flops_target: fade the channels each cut removes to "
              "zero over the epoch before it (FlopsBudget(gentle=True)).",
    "early_bird": "With --flops_target: one cut, made when the channels it "
                  "would remove stop changing between epochs "
                  "(experimental.EarlyBird); --target_epoch is "
                  "then its deadline (unset: 50% of --epochs).",
    "prune_first": "With --flops_target: cut the model once to the target "
                   "before training (--ranking's channels, abruptly), then "
                   "train it without the group lasso: the prune-then-"
                   "fine-tune pipeline, PruneTrain's control.",
    "rewarm_epochs": "After each cut, lift the learning rate back to the "
                     "highest it has been and let it fall over this many "
                     "epochs (experimental.Rewarm; 0: off).",
    "epochs": "Training epochs.",
    "batch_size": "Mini-batch per replica (global = this × replicas).",
    "learning_rate": "SGD learning rate per replica at --batch_size (scaled "
                     "linearly by replicas and dynamic batch growth).",
    "lr_decay_epochs": "Epochs at which the learning rate is multiplied by "
                       "--lr_decay.",
    "lr_decay": "Learning-rate decay factor.",
    "momentum": "SGD momentum.",
    "weight_decay": "Decoupled SGD weight decay.",
    "width_multiplier": "Scales every convolution width (small test models).",
    "image_size": "Resize/crop images to this (ImageNet: 224).",
    "num_classes": "Classes of synthetic data (default 10; 1000 at 224 px) "
                   "or of --data=imagenet (default 1000).",
    "synthetic_size": "Examples of synthetic data.",
    "steps_per_epoch": "Steps per epoch (unset: one pass over the training "
                       "data). Fewer make an epoch part of a pass: the "
                       "schedules count these epochs, so a short fine-tune "
                       "can cut within its first pass.",
    "eval_steps": "Limit validation and the final evaluation to this many "
                  "batches (smoke tests; unset: the whole test data).",
    "strategy": f"tf.distribute strategy: one of {tf_prunetrain.distribute.STRATEGIES}.",
    "mixed_precision": "Train with the mixed_float16 policy.",
    "dynamic_batch": "Grow the batch into freed activation memory after each "
                     "reconfiguration (multiples of 8, learning rate scaled).",
    "max_batch_size": "Cap of --dynamic_batch (per replica).",
    "log_dir": "TensorBoard summaries (in prunetrain/: the RunLog's "
               "figures, loss, metrics, learning rate), run log, "
               "checkpoints and, at the "
               "end, model.keras (trainable) and model_plain.keras "
               "(strip_prunetrain: loads with plain Keras).",
    "export_dir": "Write the final model here as a SavedModel.",
    "resume": "Continue from the checkpoint in --log_dir.",
    "seed": "Seed of weights, data order and augmentation.",
    "verbose": "Keras fit verbosity (0, 1 progress bar, 2 one line/epoch).",
}


def define_flags(defaults: Config) -> None:
    """Defines one absl flag per `Config` field, with `defaults`."""
    for field in dataclasses.fields(Config):
        value = getattr(defaults, field.name)
        help_text = _HELP[field.name]
        if field.name in flags.FLAGS:  # absl.logging's --log_dir: share it
            flags.FLAGS.set_default(field.name, value)
            continue
        if field.type in ("bool",):
            flags.DEFINE_boolean(field.name, value, help_text)
        elif field.name == "lr_decay_epochs":
            flags.DEFINE_list(field.name, [str(v) for v in value], help_text)
        elif field.type in ("int", "int | None"):
            flags.DEFINE_integer(field.name, value, help_text)
        elif field.type in ("float", "float | None"):
            flags.DEFINE_float(field.name, value, help_text)
        else:
            flags.DEFINE_string(field.name, value, help_text)


def config_from_flags() -> Config:
    values = {f.name: flags.FLAGS[f.name].value
              for f in dataclasses.fields(Config)}
    values["lr_decay_epochs"] = tuple(int(v) for v in values["lr_decay_epochs"])
    if values["strength"] is not None and values["strength"] < 0:
        values["strength"] = None  # --strength=-1: calibrate from the ratio
    for name in ("penalty_epochs", "flops_target", "target_epoch",
                 "interval", "pretrained", "classes"):
        if values[name] in (0, ""):  # e.g. --penalty_epochs=0: always on
            values[name] = None
    return Config(**values)


def main(argv: list[str]) -> None:
    """The recipes' absl main: runs the flags' configuration."""
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logging.set_verbosity(logging.WARNING)  # TensorFlow's export chatter
    run(config_from_flags())


def validate(config: Config) -> None:
    """Raises ValueError naming the flag for settings that cannot work; the
    schedule is checked by the library's rule (`schedule`)."""
    _validate_inputs(config)
    _validate_numbers(config)
    _validate_pruning(config)
    _validate_training(config)
    # --prune_first cuts once, before training: its target is checked, and
    # no epochs.
    schedule(config, check=not config.prune_first)


def _validate_inputs(config: Config) -> None:
    """The model, the data and what they are read from."""
    if config.model not in MODELS:
        raise ValueError(f"--model must be one of {MODELS}, got {config.model!r}.")
    if config.data not in DATA:
        raise ValueError(f"--data must be one of {DATA}, got {config.data!r}.")
    if config.augment not in AUGMENT:
        raise ValueError(f"--augment must be one of {AUGMENT}, got "
                         f"{config.augment!r}.")
    if config.data == "imagenet" and (config.train_size is not None
                                      or config.augment == "crop_flip"):
        raise ValueError("--train_size and --augment=crop_flip work on "
                         "in-memory data sets, not --data=imagenet.")
    if config.architecture is not None:
        if not os.path.isfile(config.architecture):
            raise ValueError(f"--architecture={config.architecture!r} is not "
                             "a file; give a JSON file written from "
                             "model.to_json().")
        if config.width_multiplier != 1:
            raise ValueError("--architecture and --width_multiplier conflict: "
                             "the file fixes every width.")
    _validate_pretrained(config)
    if config.data in ("cifar10", "cifar100", "imagenet") and not config.data_dir:
        raise ValueError(f"--data={config.data} needs --data_dir (the data "
                         "cannot be downloaded here); or use --data=mnist5k.")


def _validate_numbers(config: Config) -> None:
    """Counts that must be integers >= 1."""
    if isinstance(config.round_to, bool) or not isinstance(config.round_to,
                                                           int):
        raise ValueError(f"--round_to must be an integer >= 1 (a channel "
                         f"multiple; 'auto' is gone: pass 8, or what "
                         f"tf_prunetrain.latency.channel_multiple() "
                         f"measures), got {config.round_to!r}.")
    for name in ("interval", "epochs", "batch_size", "round_to",
                 "target_epoch", "train_size", "steps_per_epoch",
                 "eval_steps"):
        value = getattr(config, name)
        if value is not None and value < 1:
            raise ValueError(f"--{name} must be >= 1.")


def _validate_pruning(config: Config) -> None:
    """The budget's flags (--flops_target and what goes with it)."""
    rankings = [*tf_prunetrain.budget.RANKINGS, SEARCHED]
    if config.ranking not in rankings:
        raise ValueError(f"--ranking must be one of {sorted(rankings)}, got "
                         f"{config.ranking!r}.")
    if config.distill_epochs < 0:
        raise ValueError("--distill_epochs must be >= 0 (0: off).")
    if config.distill_epochs and (not config.prunetrain
                                  or config.prune_first):
        raise ValueError("--distill_epochs teaches across the cuts PruneTrain "
                         "makes while it trains: drop --noprunetrain and "
                         "--prune_first, or leave it 0.")
    for name in ("distill_temperature", "distill_weight"):
        if not getattr(config, name) > 0:
            raise ValueError(f"--{name} must be > 0.")
    if config.flops_target is not None:
        if config.penalty_epochs is not None:
            raise ValueError("--flops_target and --penalty_epochs conflict: "
                             "the target ends the group lasso itself.")
        if config.early_bird and config.interval is not None:
            raise ValueError("--early_bird and --interval conflict: it cuts "
                             "once, when the mask settles.")
    elif config.target_epoch is not None or config.early_bird:
        raise ValueError(f"--{'early_bird' if config.early_bird else 'target_epoch'}"
                         " needs --flops_target.")
    if config.prune_first:
        if config.flops_target is None or not config.prunetrain:
            raise ValueError("--prune_first needs --flops_target (the cut it "
                             "makes) and PruneTrain (drop --noprunetrain).")
        clashing = [name for name in ("target_epoch", "interval",
                                      "strength")
                    if getattr(config, name) is not None] + [
            name for name in ("early_bird", "rewarm_epochs", "dynamic_batch",
                              "proximal", "scales")
            if getattr(config, name)]
        if clashing:
            raise ValueError(f"--prune_first and --{clashing[0]} conflict: it "
                             "cuts once, before the first step, and trains "
                             "without the group lasso.")


def _validate_training(config: Config) -> None:
    """The group lasso's, the learning rate's and the run's other flags."""
    if not 0 <= config.rewarm_epochs < float("inf"):
        raise ValueError("--rewarm_epochs must be >= 0 and finite (0: off).")
    if config.rewarm_epochs and config.dynamic_batch:
        raise ValueError("--rewarm_epochs and --dynamic_batch conflict: the "
                         "batch grows at the cut and scales the rate the "
                         "lift would return to.")
    if config.rewarm_epochs and not config.prunetrain:
        raise ValueError("--rewarm_epochs needs PruneTrain: it acts after "
                         "cuts (drop --noprunetrain).")
    if not 0 < config.penalty_ratio < 1:
        raise ValueError("--penalty_ratio must be in (0, 1).")
    if config.penalty_epochs is not None and config.penalty_epochs < 1:
        raise ValueError("--penalty_epochs must be >= 1 (or unset: always on).")
    if config.strength is not None and not config.strength >= 0:
        raise ValueError("--strength must be >= 0 (or unset for the "
                         "--penalty_ratio calibration).")
    if config.resume and not config.log_dir:
        raise ValueError("--resume needs the --log_dir of the interrupted run.")
    if config.max_batch_size is not None and config.max_batch_size < config.batch_size:
        raise ValueError("--max_batch_size must be >= --batch_size.")


def class_list(spec: str) -> list[int]:
    """The classes of a --classes value: '5-9' or '5,6,7' (order kept).

    >>> class_list("5-9"), class_list("3,1")
    ([5, 6, 7, 8, 9], [3, 1])
    """
    try:
        if "-" in spec:
            first, last = (int(v) for v in spec.split("-"))
            classes = list(range(first, last + 1))
        else:
            classes = [int(v) for v in spec.split(",")]
    except ValueError:
        classes = []
    if len(classes) < 2 or len(set(classes)) < len(classes) \
            or min(classes) < 0:
        raise ValueError(f"--classes must name two or more distinct classes,"
                         f" as '5-9' or '5,6,7'; got {spec!r}.")
    return classes


def _validate_pretrained(config: Config) -> None:
    if config.classes is not None:
        class_list(config.classes)
        if config.data in ("imagenet", "synthetic"):
            raise ValueError("--classes works on in-memory data sets, not "
                             f"--data={config.data}.")
    if config.subset_seed is not None and config.train_size is None:
        raise ValueError("--subset_seed picks the --train_size examples: "
                         "give --train_size too.")
    if config.freeze_epochs < 0:
        raise ValueError("--freeze_epochs must be >= 0 (0: no head phase).")
    if config.recalibrate_steps < 0:
        raise ValueError("--recalibrate_steps must be >= 0 (0: off).")
    if config.precise_bn < 0:
        raise ValueError("--precise_bn must be >= 0 (0: off).")
    if config.recalibrate_steps and (config.flops_target is None
                                     or not config.prunetrain):
        raise ValueError("--recalibrate_steps acts after a --flops_target cut:"
                         " give --flops_target (and drop --noprunetrain), or "
                         "leave it 0.")
    if config.recalibrate_steps and config.pretrained is None:
        raise ValueError("--recalibrate_steps re-estimates frozen BatchNorm "
                         "layers, and a fresh --model has none: use it with "
                         "--pretrained (and --freeze_batchnorm), or leave it 0.")
    if config.pretrained is None:
        needing = [name for name in ("new_head", "freeze_epochs",
                                     "freeze_batchnorm")
                   if getattr(config, name)]
        if needing:
            raise ValueError(f"--{needing[0]} needs --pretrained (the trained "
                             "model to fine-tune).")
        return
    if not config.pretrained.endswith(".keras") \
            or not os.path.isfile(config.pretrained):
        raise ValueError(f"--pretrained={config.pretrained!r} is not a .keras "
                         "file; give a model saved with model.save("
                         "'name.keras'), e.g. a recipe's --log_dir/"
                         f"{MODEL_FILE}.")
    if config.architecture is not None or config.width_multiplier != 1:
        raise ValueError("--pretrained and --"
                         f"{'architecture' if config.architecture else 'width_multiplier'}"
                         " conflict: the file fixes the architecture.")
    if config.freeze_epochs and not config.new_head:
        raise ValueError("--freeze_epochs trains a new classifier first: it "
                         "needs --new_head.")


def schedule(config: Config, check: bool = True, data: Any = None
             ) -> tf_prunetrain.Schedule:
    """The schedule `config` prunes with: `FlopsBudget` (--flops_target),
    `experimental.EarlyBird` (--early_bird) or `DeadChannels` (the paper's
    mode). Raises ValueError naming the flags for a bad target, or (with
    `check`) when it cannot be met in --epochs (`Schedule.check`, the
    library's one rule). A budget's
    default --target_epoch (the library's) is written into its arguments,
    which a checkpoint compares."""
    try:
        flagged = _schedule(config, config.target_epoch, data)
        if check:
            flagged.check(config.epochs)
    except ValueError as err:
        given = "".join(f"--{name}={getattr(config, name)}, " for name in
                        ("flops_target", "target_epoch")
                        if getattr(config, name) is not None)
        raise ValueError(f"{given}--epochs={config.epochs}: {err}") from err
    if config.flops_target is None or config.target_epoch is not None \
            or not check:
        return flagged
    return _schedule(config, flagged.cut_epochs(config.epochs)[-1], data)


def _schedule(config: Config, last: int | None, data: Any = None
              ) -> tf_prunetrain.Schedule:
    """`schedule`'s, the budget met by epoch `last` (None: the default);
    `data`: --ranking=searched's batches (`search_data`)."""
    if config.flops_target is None:
        return tf_prunetrain.DeadChannels(
            config.interval or tf_prunetrain.schedules.DEAD_CHANNELS_INTERVAL,
            config.threshold, config.penalty_epochs)
    ranking = ranking_of(config, data)
    if config.early_bird:
        return tf_prunetrain.experimental.EarlyBird(
            config.flops_target, deadline=last, threshold=config.threshold,
            ranking=ranking, gentle=config.gentle)
    return tf_prunetrain.FlopsBudget(
        config.flops_target, target_epoch=last, interval=config.interval,
        threshold=config.threshold, ranking=ranking, gentle=config.gentle)


def ranking_of(config: Config, data: Any = None
               ) -> tf_prunetrain.budget.Ranking:
    """--ranking's `Ranking` (`data`: the searched one's batches)."""
    if config.ranking == SEARCHED:
        return tf_prunetrain.experimental.SearchedWidths(
            data, SEARCH_CANDIDATES, seed=config.seed,
            verbose=int(config.verbose))
    return tf_prunetrain.budget.RANKINGS[config.ranking]()


def segment_ends(config: Config, cuts: list[int]) -> list[int]:
    """The last epoch of each of `run`'s `fit` calls, ascending: --epochs,
    and with --dynamic_batch, where the batch grows, epochs of `cuts` (the
    schedule's `cut_epochs`; none without pruning): every one in the
    paper's mode, a budget's last (its target met)."""
    ends = {config.epochs}
    if config.dynamic_batch and cuts:
        ends.update(cuts if config.flops_target is None else cuts[-1:])
    return sorted(ends)


# -- data ------------------------------------------------------------------------
@dataclasses.dataclass
class Data:
    """Training/evaluation datasets (built per batch size) and the shape.

    `train(batch, even, initial_epoch, steps)` gives `fit`'s training input
    from `initial_epoch` and its steps per epoch (`data.stream`: each
    epoch's order fixed by its number, so a resumed run trains on the
    uninterrupted run's batches; `steps` None: the whole data). Files of
    unknown length (`--data=imagenet`) without `steps` come as one pass per
    epoch, with None. `test(batch, even)` is the evaluation data. Both take
    the global batch size and whether to drop a last partial batch: with
    several replicas they do, since a batch that does not split evenly
    breaks synchronized BatchNorm's collectives."""

    shape: tuple[int, int, int]
    num_classes: int
    train: Callable[[int, bool, int, int | None],
                    tuple[tf.data.Dataset, int | None]]
    test: Callable[[int, bool], tf.data.Dataset]


def _arrays_data(train: data_lib.Arrays, test: data_lib.Arrays,
                 classes: int, augment: str | None, config: Config,
                 mean: Any = None, std: Any = None) -> Data:
    """`augment` is the data set's usual augmentation (--augment=default)."""
    size = config.image_size
    if config.classes is not None:
        if mean is None:  # the whole set's, whichever classes are kept
            mean, std = _statistics(train[0])
        chosen = class_list(config.classes)
        if max(chosen) >= classes:
            raise ValueError(f"--classes={config.classes!r}: --data="
                             f"{config.data} has classes 0-{classes - 1}.")
        train, test = (_keep_classes(a, chosen) for a in (train, test))
        classes = len(chosen)
    if config.train_size is not None:
        train = data_lib.subset(
            train, config.train_size,
            config.seed if config.subset_seed is None else config.subset_seed,
            "--train_size")
    if config.augment != "default":
        augment = "cifar" if config.augment == "crop_flip" else None
    if mean is None:  # per-channel statistics of the training images
        mean, std = _statistics(train[0])
    shape = (size or train[0].shape[1], size or train[0].shape[2],
             train[0].shape[3])

    def train_stream(batch: int, even: bool, epoch: int, steps: int | None):
        batches, steps = data_lib.stream(
            train, batch, initial_epoch=epoch, steps_per_epoch=steps,
            augment=augment, image_size=size, mean=mean, std=std,
            seed=config.seed, drop_remainder=even)
        return _shardable(batches), steps

    def test_pass(batch: int, even: bool):
        return _shardable(data_lib.pipeline(
            test, batch, training=False, augment=augment, image_size=size,
            mean=mean, std=std, drop_remainder=even))

    return Data(shape, classes, train_stream, test_pass)


def _statistics(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and standard deviation of images scaled to [0, 1]."""
    scale = 255.0 if images.dtype == np.uint8 else 1.0
    pixels = images.reshape(-1, images.shape[-1]) / scale
    return pixels.mean(axis=0), pixels.std(axis=0) + 1e-6


def _keep_classes(arrays: data_lib.Arrays, chosen: list[int]
                  ) -> data_lib.Arrays:
    """The examples of `chosen` classes, labelled by their place in it."""
    images, labels = arrays
    relabel = np.full(max(int(labels.max()), max(chosen)) + 1, -1, np.int32)
    relabel[chosen] = np.arange(len(chosen))
    keep = relabel[labels] >= 0
    return images[keep], relabel[labels[keep]]


def _shardable(dataset: tf.data.Dataset) -> tf.data.Dataset:
    """Lets multi-worker training shard in-memory data by example."""
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = (
        tf.data.experimental.AutoShardPolicy.DATA)
    return dataset.with_options(options)


def load_data(config: Config) -> Data:
    if config.data == "mnist5k":
        return _arrays_data(*data_lib.mnist5k(seed=config.seed), 10, None,
                            config)
    if config.data == "fashion_mnist":
        return _arrays_data(*data_lib.fashion_mnist(config.data_dir), 10, None,
                            config)
    if config.data == "digits":
        return _arrays_data(*data_lib.digits(seed=config.seed), 10, None,
                            config)
    if config.data in ("cifar10", "cifar100"):
        classes = 10 if config.data == "cifar10" else 100
        train, test = data_lib.cifar(config.data_dir, classes)
        return _arrays_data(train, test, classes, "cifar", config,
                            data_lib.CIFAR10_MEAN, data_lib.CIFAR10_STD)
    if config.data == "synthetic":
        size = config.image_size or 32
        classes = config.num_classes or (1000 if size >= 224 else 10)
        shape = (size, size, 3)
        train = data_lib.synthetic(shape, classes, config.synthetic_size,
                                   config.seed)
        test = data_lib.synthetic(shape, classes,
                                  max(config.synthetic_size // 4, 1),
                                  config.seed + 1)
        return _arrays_data(train, test, classes, None, config, (0.0,) * 3,
                            (1.0,) * 3)
    size = config.image_size or 224

    def settings(even: bool) -> dict[str, Any]:
        return dict(augment="imagenet", image_size=size,
                    mean=data_lib.IMAGENET_MEAN, std=data_lib.IMAGENET_STD,
                    seed=config.seed, drop_remainder=even)

    def train_files(batch: int, even: bool, epoch: int, steps: int | None):
        examples = data_lib.imagenet(config.data_dir, "train")
        if steps is None:  # unknown length: one pass per epoch
            return _shardable(data_lib.pipeline(
                examples, batch, training=True, **settings(even))), None
        batches, steps = data_lib.stream(examples, batch, initial_epoch=epoch,
                                         steps_per_epoch=steps,
                                         **settings(even))
        return _shardable(batches), steps

    def test_files(batch: int, even: bool):
        return _shardable(data_lib.pipeline(
            data_lib.imagenet(config.data_dir, "validation"), batch,
            training=False, **settings(even)))

    return Data((size, size, 3), config.num_classes or 1000, train_files,
                test_files)


# -- model -------------------------------------------------------------------------
def build_model(config: Config, shape: tuple[int, int, int],
                num_classes: int) -> keras.Model:
    if config.pretrained is not None:
        return _pretrained(config, shape, num_classes)
    if config.architecture is not None:
        return _architecture(config.architecture, shape, num_classes)
    m = config.width_multiplier
    seed = config.seed
    if config.model.startswith("vgg"):
        if min(shape[:2]) < 32:
            raise ValueError(f"--model={config.model} needs images of at least "
                             f"32x32 (five poolings); {config.data} is "
                             f"{shape[0]}x{shape[1]}: add --image_size=32.")
        return models.vgg_cifar(int(config.model[3:]), num_classes, shape,
                                width_multiplier=m, seed=seed)
    if config.model == "resnet50":
        return keras.applications.ResNet50(weights=None, input_shape=shape,
                                           classes=num_classes,
                                           classifier_activation=None)
    if config.model == "mobilenetv2":  # --width_multiplier is its alpha
        if min(shape[:2]) < 32:
            raise ValueError(f"--model=mobilenetv2 needs images of at least "
                             f"32x32; {config.data} is {shape[0]}x{shape[1]}:"
                             " add --image_size=32.")
        model = keras.applications.MobileNetV2(
            weights=None, input_shape=shape, classes=num_classes, alpha=m,
            classifier_activation=None)
        for layer in model.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.momentum = MOBILENET_BN_MOMENTUM
        return model
    widths = tuple(max(1, round(w * m)) for w in (16, 32, 64))
    if config.model == "resnet50_cifar":
        return models.resnet_cifar(50, num_classes, shape, widths,
                                   bottleneck=True, blocks_per_stage=8,
                                   seed=seed)
    return models.resnet_cifar(int(config.model[6:]), num_classes, shape,
                               widths, seed=seed)


def _architecture(path: str, shape: tuple[int, int, int],
                  num_classes: int) -> keras.Model:
    """The model of a `model.to_json()` file, with fresh weights and without
    tf_prunetrain's regularizers and constraints (--prunetrain adds its
    own)."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    try:
        model = keras.models.model_from_json(text)
    except (ValueError, TypeError, KeyError, AttributeError) as err:
        raise ValueError(f"--architecture={path!r} is not a Keras model "
                         f"JSON file ({type(err).__name__}: {err}).") from err
    if not isinstance(model, keras.Model):
        raise ValueError(f"--architecture={path!r} is not a Keras model JSON "
                         f"file (it reads as a {type(model).__name__}).")
    inputs, outputs = tuple(model.input_shape[1:]), model.output_shape[-1]
    if inputs != tuple(shape) or outputs != num_classes:
        raise ValueError(f"--architecture={path!r} takes {inputs} and gives "
                         f"{outputs} outputs; the data needs {tuple(shape)} "
                         f"and {num_classes}.")
    return tf_prunetrain.strip_prunetrain(model)


def _pretrained(config: Config, shape: tuple[int, int, int],
                num_classes: int) -> keras.Model:
    """The --pretrained model, its weights as trained (without
    tf_prunetrain's regularizers: --prunetrain adds its own), with a fresh
    classifier for `num_classes` when --new_head."""
    path = config.pretrained
    try:
        model = keras.models.load_model(path, compile=False)
    except (ValueError, TypeError, KeyError, OSError) as err:
        raise ValueError(f"--pretrained={path!r} could not be loaded "
                         f"({type(err).__name__}: {err}).") from err
    if not isinstance(model, keras.Model) or not model.built:
        raise ValueError(f"--pretrained={path!r} holds a "
                         f"{type(model).__name__}, not a built Keras model.")
    model = tf_prunetrain.strip_prunetrain(model)
    if tuple(model.input_shape[1:]) != tuple(shape):
        raise ValueError(f"--pretrained={path!r} takes inputs of shape "
                         f"{tuple(model.input_shape[1:])}; --data="
                         f"{config.data} gives {tuple(shape)} (--image_size "
                         "resizes).")
    head = model.layers[-1]
    if config.new_head:
        if not isinstance(head, keras.layers.Dense):
            raise ValueError(f"--new_head replaces the last layer of "
                             f"--pretrained={path!r}, which must be a Dense "
                             f"classifier; '{head.name}' is a "
                             f"{type(head).__name__}.")
        outputs = keras.layers.Dense(num_classes, name=head.name)(head.input)
        return keras.Model(model.inputs, outputs, name=model.name)
    if getattr(head, "activation", None) not in (None,
                                                 keras.activations.linear):
        raise ValueError(f"--pretrained={path!r} ends in '{head.name}' with "
                         "an activation; the recipes train on logits. Pass "
                         "--new_head for a fresh linear classifier.")
    if model.output_shape[-1] != num_classes:
        raise ValueError(f"--pretrained={path!r} gives "
                         f"{model.output_shape[-1]} outputs; --data="
                         f"{config.data} has {num_classes} classes. Pass "
                         "--new_head to replace its classifier.")
    return model


def _sublayers(model: keras.Model) -> list[keras.layers.Layer]:
    """Every layer of `model`, nested models' layers included."""
    out = []
    for layer in model.layers:
        out.append(layer)
        if isinstance(layer, keras.Model):
            out += _sublayers(layer)
    return out


def _optimizer(config: Config, replicas: int) -> keras.optimizers.Optimizer:
    return keras.optimizers.SGD(
        config.learning_rate * replicas, momentum=config.momentum,
        weight_decay=config.weight_decay or None)


def train_head(config: Config, model: keras.Model, data: Data,
               replicas: int, callbacks: list[Any]) -> float:
    """--freeze_epochs: trains only `model`'s last layer, every other one
    frozen, at the recipe's learning rate (no decay); the layers' own
    `trainable` flags (nested models' layers too) are then given back.
    Returns fit's seconds."""
    head = model.layers[-1]
    flags_before = [(layer, layer.trainable) for layer in _sublayers(model)
                    if layer is not head]
    for layer in model.layers[:-1]:
        layer.trainable = False
    model.compile(_optimizer(config, replicas), _loss(), metrics=["accuracy"])
    batch = config.batch_size * replicas
    train, steps = data.train(batch, replicas > 1, 0, config.steps_per_epoch)
    start = time.perf_counter()
    model.fit(train, epochs=config.freeze_epochs, steps_per_epoch=steps,
              callbacks=callbacks, verbose=config.verbose, shuffle=False)
    seconds = time.perf_counter() - start
    for layer, trainable in flags_before:  # outer models before inner
        layer.trainable = trainable
    return seconds


def prune_once(config: Config, model: keras.Model) -> keras.Model:
    """--prune_first: `model` cut to --flops_target of its FLOPs now, the
    channels --ranking chooses (weights as they are: no fade)."""
    graph = tf_prunetrain.channel_groups(model)
    ranking = ranking_of(config)
    ranking.start(graph)
    goal = config.flops_target * tf_prunetrain.cost.forward_flops(model)
    plan = tf_prunetrain.budget.plan_to_flops(
        graph, goal, floor=goal, threshold=config.threshold,
        round_to=config.round_to, ranking=ranking)
    return tf_prunetrain.surgery.rebuild(plan)


class _SegmentBatch:
    """The per-replica batch of the `--dynamic_batch` segment in progress,
    a `Checkpoint` tracker: a run resumed inside a segment trains on at
    the batch the segment started with, not at one grown into the memory
    of a cut made inside it."""

    def __init__(self, size: int):
        self.size = size

    def get_state(self) -> dict[str, int]:
        return {"size": self.size}

    def set_state(self, state: dict[str, int]) -> None:
        self.size = int(state["size"])


class _StepLearningRate(keras.callbacks.Callback):
    """lr(epoch) = base × scale × decay^(drops passed), set every epoch."""

    def __init__(self, config: Config, base: float):
        super().__init__()
        self.config, self.base, self.scale = config, base, 1.0

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        drops = sum(epoch >= e for e in self.config.lr_decay_epochs)
        self.model.optimizer.learning_rate = (
            self.base * self.scale * self.config.lr_decay ** drops)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if logs is not None:
            logs["learning_rate"] = float(
                keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))


def recalibration_data(config: Config, data: Data, replicas: int) -> Any:
    """--recalibrate_steps' batches: the first of the training stream."""
    return data.train(config.batch_size * replicas, replicas > 1, 0, None)[0]


def search_data(config: Config, data: Data, replicas: int) -> Any:
    """--ranking=searched's batches: the training examples in the order of
    an epoch no run reaches (`SEARCH_EPOCH`), the same in every run of a
    seed (and not the first batches a run trains on)."""
    return data.train(config.batch_size * replicas, replicas > 1,
                      SEARCH_EPOCH, None)[0]


def _loss() -> keras.losses.Loss:
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def compiled_model(config: Config, data: Data, replicas: int,
                   model: keras.Model | None = None) -> keras.Model:
    """The model `config` trains (`model`, else `build_model`'s), with
    BatchNorm frozen (--freeze_batchnorm), cut first (--prune_first), and
    its lasso (no proximal step yet: `Reconfigure` binds it), compiled with
    the recipe's SGD."""
    if model is None:
        model = build_model(config, data.shape, data.num_classes)
    if config.freeze_batchnorm:
        for layer in _sublayers(model):
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.trainable = False
    if config.prune_first:
        model = prune_once(config, model)
        if config.recalibrate_steps:
            tf_prunetrain.experimental.recalibrate_batchnorm(
                model, recalibration_data(config, data, replicas),
                config.recalibrate_steps)
    if replicas > 1:
        model = tf_prunetrain.distribute.synchronize_batchnorm(model)
    if config.prunetrain and not config.prune_first:
        model = tf_prunetrain.add_group_lasso(
            model, strength=config.strength or 0.0, proximal=config.proximal,
            scales=config.scales)
    model.compile(_optimizer(config, 1), _loss(), metrics=["accuracy"])
    return model


# -- the run -----------------------------------------------------------------------
def run(config: Config) -> dict[str, Any]:
    """Trains as `config` says; returns the final figures (and the model)."""
    validate(config)
    start = time.perf_counter()
    keras.utils.set_random_seed(config.seed)
    previous_policy = keras.mixed_precision.global_policy()
    if config.mixed_precision:
        keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        return _run(config, start)
    finally:
        keras.mixed_precision.set_global_policy(previous_policy)


def pruning(config: Config, data: Any = None) -> tf_prunetrain.Reconfigure:
    """PruneTrain's callback for `config`: `Reconfigure` with its
    `schedule` (`data`: --ranking=searched's batches)."""
    return tf_prunetrain.Reconfigure(
        schedule(config, data=data), penalty_ratio=None if config.strength is not None
        else config.penalty_ratio, round_to=config.round_to,
        verbose=1 if config.verbose else 0)


@dataclasses.dataclass
class _Callbacks:
    """A run's callbacks (`callbacks`, in `fit`'s order) and the trackers
    its checkpoints carry; `segment_batch` is None without a batch to grow
    (--dynamic_batch with PruneTrain)."""

    reconfigure: tf_prunetrain.Reconfigure | None
    runlog: tf_prunetrain.RunLog
    timeline: timeline_lib.Timeline
    distill: Any  # --distill_epochs' experimental.Distill, or None
    segment_batch: _SegmentBatch | None
    trackers: list[Any]
    callbacks: list[Any]


def _callbacks(config: Config, replicas: int, data: Data) -> _Callbacks:
    """PruneTrain's `Reconfigure`, the `RunLog` after it (it refuses one
    listed before it), --rewarm_epochs' `Rewarm`, --distill_epochs'
    `Distill` and the timeline; the checkpoint and the learning rate come
    later."""
    searched = search_data(config, data, replicas) \
        if config.ranking == SEARCHED else None
    reconfigure = pruning(config, searched) if config.prunetrain \
        and not config.prune_first else None
    runlog = tf_prunetrain.RunLog(log_dir=config.log_dir,
                                  batch_size=config.batch_size * replicas)
    trackers: list[Any] = [reconfigure, runlog] if reconfigure else [runlog]
    if config.rewarm_epochs:  # its lift in progress travels in checkpoints
        trackers.append(tf_prunetrain.experimental.Rewarm(config.rewarm_epochs))
    distill = None
    if config.distill_epochs and reconfigure:  # its teacher too
        distill = tf_prunetrain.experimental.Distill(
            config.distill_epochs, config.distill_temperature,
            config.distill_weight,
            trained_start=config.pretrained is not None,
            verbose=int(config.verbose))
        trackers.append(distill)
    timeline = timeline_lib.Timeline()
    callbacks: list[Any] = [*trackers, timeline]
    segment_batch = None
    if config.dynamic_batch and config.prunetrain:
        segment_batch = _SegmentBatch(config.batch_size)
        trackers.append(segment_batch)  # a resume inside a segment goes on
    return _Callbacks(reconfigure, runlog, timeline, distill, segment_batch,
                      trackers, callbacks)


@dataclasses.dataclass
class _Start:
    """The model a run trains from `epoch` on, and what preparing it took."""

    model: keras.Model
    epoch: int = 0
    resumed: bool = False
    head_seconds: float = 0.0  # --freeze_epochs' fit
    one_off: float = 0.0  # --prune_first's surgery, a one-off like a cut's
    # --prune_first: the cost of the model before its cut.
    uncut: tf_prunetrain.cost.TrainingCost | None = None


def _start(config: Config, data: Data, replicas: int,
           parts: _Callbacks) -> _Start:
    """In the strategy's scope: the checkpoint (--log_dir, added to the
    callbacks) and the model it restores (--resume), else a fresh one."""
    if config.log_dir:
        backup = tf_prunetrain.Checkpoint(
            os.path.join(config.log_dir, CHECKPOINT_DIR),
            trackers=parts.trackers)
        parts.callbacks.append(backup)
        restored = backup.restore() if config.resume else None
        if restored:
            model, epoch = restored
            return _Start(model, epoch, resumed=True)
    start = _Start(build_model(config, data.shape, data.num_classes))
    if config.freeze_epochs:  # the head first, the rest frozen
        start.head_seconds = train_head(config, start.model, data, replicas,
                                        [parts.timeline])
    if config.prune_first:
        start.uncut = tf_prunetrain.training_cost(
            start.model, batch_size=config.batch_size * replicas)
    start_cut = time.perf_counter()
    start.model = compiled_model(config, data, replicas, start.model)
    if config.prune_first:
        start.one_off = time.perf_counter() - start_cut
    return start


def _run(config: Config, start_time: float) -> dict[str, Any]:
    strategy = tf_prunetrain.distribute.make_strategy(config.strategy)
    replicas = strategy.num_replicas_in_sync
    data = load_data(config)
    parts = _callbacks(config, replicas, data)
    recalibrate = None
    if config.recalibrate_steps and parts.reconfigure:
        recalibrate = tf_prunetrain.experimental.RecalibrateBatchNorm(
            recalibration_data(config, data, replicas),
            config.recalibrate_steps, verbose=int(config.verbose))
        parts.callbacks.insert(parts.callbacks.index(parts.timeline),
                               recalibrate)
    with strategy.scope():
        start = _start(config, data, replicas, parts)
    learning_rate = _StepLearningRate(config, config.learning_rate * replicas)
    parts.callbacks.append(learning_rate)
    history, batch, train_seconds = _train(config, data, replicas, parts,
                                           start, learning_rate)
    model = start.model
    precise = 0.0
    if config.precise_bn:
        precise = time.perf_counter()
        tf_prunetrain.experimental.recalibrate_batchnorm(
            model, recalibration_data(config, data, replicas),
            config.precise_bn, layers=tf_prunetrain.experimental.recalibration
            .batchnorm_layers(model))
        precise = time.perf_counter() - precise
    evaluation = model.evaluate(data.test(config.batch_size * replicas,
                                          replicas > 1),
                                steps=config.eval_steps, verbose=0,
                                return_dict=True)
    if config.log_dir:  # the trainable model, and one for plain Keras
        model.save(os.path.join(config.log_dir, MODEL_FILE))
        tf_prunetrain.strip_prunetrain(model).save(
            os.path.join(config.log_dir, PLAIN_MODEL_FILE))
    if config.export_dir:
        model.export(config.export_dir, verbose=False)
    result = {
        "model": model, "history": history,
        "accuracy": float(evaluation["accuracy"]),
        "loss": float(evaluation["loss"]),
        **_cost_figures(model, parts.runlog, start.uncut),
        **_cut_figures(parts.reconfigure, parts.runlog, start.one_off),
        # After the cuts and --precise_bn's (in-run, not replayed;
        # --prune_first's is in its one-off).
        "recalibration_seconds": precise + (recalibrate.seconds
                                            if recalibrate else 0.0),
        # --ranking=searched's candidates (in-run, not replayed).
        "search_seconds": getattr(parts.reconfigure.schedule.ranking,
                                  "seconds", 0.0) if parts.reconfigure
        else 0.0,
        "teaching_steps": parts.distill.teaching_steps if parts.distill
        else 0,
        "batch_size": batch,
        # What trained for how many steps (tools/benchmark.py replays it).
        "timeline": parts.timeline.segments,
        "architectures": parts.timeline.architectures,
        "train_seconds": train_seconds + start.head_seconds,
        "seconds": time.perf_counter() - start_time,
    }
    if config.verbose:
        print(summary_line(config, result), flush=True)
    return result


def _train(config: Config, data: Data, replicas: int, parts: _Callbacks,
           start: _Start, learning_rate: _StepLearningRate
           ) -> tuple[dict[str, list], int, float]:
    """Fits `start.model` from `start.epoch` to --epochs, one `fit` per
    segment (`segment_ends`), the batch grown where one starts
    (--dynamic_batch). Returns the history, the per-replica batch the next
    segment would get, and fit's seconds."""
    model, epoch, grows = start.model, start.epoch, parts.segment_batch
    # The dense model's activation memory at the base batch: the budget the
    # dynamic batch grows into.
    initial = dataclasses.replace(
        parts.runlog.initial_cost or tf_prunetrain.training_cost(model),
        batch_size=config.batch_size)

    def grown() -> int:
        return tf_prunetrain.dynamic_batch.dynamic_batch_size(
            initial, model, multiple=8, max_batch_size=config.max_batch_size)

    ends = segment_ends(config, parts.reconfigure.schedule.cut_epochs(
        config.epochs) if parts.reconfigure else [])
    history: dict[str, list] = {}
    batch, seconds, even = config.batch_size, 0.0, replicas > 1
    for end in [e for e in ends if e > epoch]:
        if grows and (epoch == 0 or epoch in ends):  # a segment starts:
            grows.size = grown()  # grow into the memory
        if grows:
            batch = grows.size
        learning_rate.scale = batch / config.batch_size
        parts.runlog.batch_size = batch * replicas
        if config.verbose:
            print(f"epochs {epoch + 1}-{end}: batch {batch} per replica × "
                  f"{replicas}, learning rate × {learning_rate.scale:g}",
                  flush=True)
        fit_start = time.perf_counter()
        train, steps = data.train(batch * replicas, even, epoch,
                                  config.steps_per_epoch)
        if steps is None and epoch and start.resumed:
            warnings.warn(
                f"--resume: the training images of --data={config.data} are "
                "read from files of unknown length, so the epochs after the "
                "resume are shuffled afresh, not as the uninterrupted run's "
                "were. --steps_per_epoch (training images // global batch) "
                "makes it exact.", stacklevel=2)
        fit = model.fit(train, epochs=end,
                        initial_epoch=epoch, steps_per_epoch=steps,
                        validation_data=data.test(batch * replicas, even)
                        if config.validate else None,
                        validation_steps=config.eval_steps
                        if config.validate else None,
                        callbacks=parts.callbacks, verbose=config.verbose,
                        shuffle=False)  # the pipeline shuffles
        seconds += time.perf_counter() - fit_start
        for key, values in fit.history.items():
            history.setdefault(key, []).extend(values)
        epoch = end
    return history, grown() if grows else batch, seconds


def _cost_figures(model: keras.Model, runlog: tf_prunetrain.RunLog,
                  uncut: tf_prunetrain.cost.TrainingCost | None
                  ) -> dict[str, Any]:
    """`run`'s figures of the model's cost, now and at the start (with
    --prune_first: before its cut)."""
    cost, initial_cost = runlog.cost, runlog.initial_cost
    train_flops_dense = runlog.train_flops_dense
    if uncut is not None and initial_cost:  # against the model before it
        train_flops_dense *= uncut.train_flops / initial_cost.train_flops
        initial_cost = uncut
    return {
        "params": model.count_params(),
        "channels": cost.channels() if cost else None,
        "initial_params": initial_cost.params if initial_cost else None,
        "inference_flops": cost.inference_flops if cost else None,
        "initial_inference_flops": initial_cost.inference_flops
        if initial_cost else None,
        "train_flops_spent": runlog.train_flops_spent,
        "train_flops_dense": train_flops_dense,
        "train_flops_saved": 1 - runlog.train_flops_spent / train_flops_dense
        if train_flops_dense else 0.0,
        "gradient_bytes": cost.gradient_bytes if cost else None,
        "initial_gradient_bytes": initial_cost.gradient_bytes
        if initial_cost else None,
        "memory_traffic_bytes": cost.memory_traffic_bytes if cost else None,
        "initial_memory_traffic_bytes": initial_cost.memory_traffic_bytes
        if initial_cost else None,
    }


def _cut_figures(reconfigure: tf_prunetrain.Reconfigure | None,
                 runlog: tf_prunetrain.RunLog, one_off: float
                 ) -> dict[str, Any]:
    """`run`'s figures of the cuts (`one_off`: --prune_first's surgery)."""
    reconfigurations = reconfigure.reconfigurations if reconfigure else []
    cuts = [r for r in reconfigurations if r.changes]
    timings = runlog.cut_timings  # one per cut, measured by the RunLog
    return {
        "reconfiguration_seconds": one_off + sum(r.seconds
                                                 for r in reconfigurations),
        # The RunLog's measure of each cut's re-trace (None: not timed).
        "retrace_seconds": sum(t.retrace_seconds or 0.0 for t in timings),
        # Measured step time after / before each cut (re-trace steps
        # excluded; only those timed on both sides).
        "step_changes": [
            t.step_seconds_after / t.step_seconds_before
            for t in timings
            if t.step_seconds_before and t.step_seconds_after],
        "removed_layers": sum(
            after == 0 for r in cuts for _, _, after in r.changes),
        # How live the removed channels were at each cut (0: only zeros).
        "removed_norms": [r.removed_norm for r in cuts],
        # --early_bird: the mask's distance after each epoch it was planned.
        "mask_distances": list(getattr(reconfigure.schedule, "distances",
                                       [])) if reconfigure else [],
    }


def summary_line(config: Config, result: dict[str, Any]) -> str:
    return (f"{'PruneTrain' if config.prunetrain else 'dense'} "
            f"{config.model} on {config.data}: accuracy {result['accuracy']:.4f}"
            f", parameters {result['initial_params'] or 0:,} -> "
            f"{result['params']:,}, training FLOPs saved "
            f"{100 * result['train_flops_saved']:.1f}%, "
            f"{result['seconds']:.0f} s")

