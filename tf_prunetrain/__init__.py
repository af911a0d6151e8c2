"""tf_prunetrain: PruneTrain for Keras 3 — prune channels while training.

Public API:
  GroupLasso        channel group-lasso regularizer.
  add_group_lasso   attach GroupLasso to every prunable kernel of a model.
  attach_proximal_step  apply proximal GroupLasso after each update
                    (ProximalStep; Reconfigure does it for you).
  channel_groups    which weight slices of a model are coupled.
  zero_channels     zero channels with everything coupled to them (what the
                    lasso does to a channel it kills; for tests and examples).
  register_layer    teach the library a layer kind of your own (the building
                    blocks are in tf_prunetrain.handlers).
  lasso_variables   the variables that carry a GroupLasso.
  forward_flops     forward FLOPs of one example (handler-table formulas).
  training_cost     training/inference FLOPs, gradient, activation and
                    memory-traffic bytes, per layer (TrainingCost, LayerCost).
  RunLog            Keras callback: training cost spent, TensorBoard, run log.
  Checkpoint        Keras callback: crash-safe checkpoints of a shrinking run.
  dynamic_batch_size  memory-aware mini-batch growth after a reconfiguration.
  export_saved_model  SavedModel (and TFLite), verified, with pruning metadata.
  strip_prunetrain  the model with nothing of ours left: loads in plain Keras.
  make_strategy, synchronize_batchnorm, broadcast
                    data-parallel training with tf.distribute.
  plan_pruning      the pruning decision (Plan) that the engines apply.
  prune_channels    a physically smaller copy without the dead channels.
  Reconfigure       Keras callback: shrink the model in place during fit, to
                    a FLOPs target (flops_target=) or as the lasso kills
                    channels (the paper's mode).
  budget            the FLOPs budget: FlopsSchedule, plan_to_flops.
  latency           hardware-aware widths: channel_multiple, the channel
                    multiple that runs fast here (Reconfigure(round_to="auto")).
  reconfigure_in_place   apply a plan to the live model (the callback's engine;
                         returns an Undo that puts it back).
"""

try:
    import tensorflow  # noqa: F401  (the Keras backend this library runs on)
except ImportError as e:
    raise ImportError(
        "tf_prunetrain needs TensorFlow 2.21: install the package with the "
        "'cpu' or 'gpu' extra, e.g. pip install 'tf-prunetrain[cpu]'.") from e

from tf_prunetrain import budget
from tf_prunetrain import latency
from tf_prunetrain.checkpoint import Checkpoint
from tf_prunetrain.cost import LayerCost, TrainingCost, forward_flops, training_cost
from tf_prunetrain.coupling import (ChannelGraph, ChannelGroup, Slice,
                                    channel_groups, zero_channels)
from tf_prunetrain.distribute import broadcast, make_strategy, synchronize_batchnorm
from tf_prunetrain.dynamic_batch import dynamic_batch_size
from tf_prunetrain.export import Export, export_saved_model, strip_prunetrain
from tf_prunetrain.handlers import register_layer
from tf_prunetrain.inplace import reconfigure_in_place
from tf_prunetrain.planning import Plan, plan_pruning
from tf_prunetrain.reconfigure import Reconfiguration, Reconfigure
from tf_prunetrain.regularizers import (GroupLasso, ProximalStep,
                                        add_group_lasso, attach_proximal_step,
                                        lasso_variables)
from tf_prunetrain.runlog import RunLog
from tf_prunetrain.surgery import prune_channels

__version__ = "0.1.0"

__all__ = [
    "ChannelGraph",
    "Checkpoint",
    "ChannelGroup",
    "Export",
    "GroupLasso",
    "LayerCost",
    "Plan",
    "ProximalStep",
    "Reconfiguration",
    "Reconfigure",
    "RunLog",
    "Slice",
    "TrainingCost",
    "add_group_lasso",
    "attach_proximal_step",
    "broadcast",
    "budget",
    "channel_groups",
    "dynamic_batch_size",
    "export_saved_model",
    "forward_flops",
    "lasso_variables",
    "latency",
    "make_strategy",
    "plan_pruning",
    "prune_channels",
    "reconfigure_in_place",
    "register_layer",
    "strip_prunetrain",
    "synchronize_batchnorm",
    "training_cost",
    "zero_channels",
]
