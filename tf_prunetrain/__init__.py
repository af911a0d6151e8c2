"""tf_prunetrain: PruneTrain for Keras 3 — prune channels while training.

The way in (README, "Tour"):
  GroupLasso, add_group_lasso   channel group-lasso regularizers.
  Reconfigure       Keras callback: shrink the model in place during fit,
                    when its schedule says.
  FlopsBudget       schedule: a FLOPs target met early (recommended).
  DeadChannels      schedule: the paper's, remove what the lasso zeroed.
  Schedule          base class of your own schedules (how much, when).
  RunLog            Keras callback: training cost, step times, run log,
                    TensorBoard.
  Checkpoint        Keras callback: crash-safe checkpoints of a shrinking run.
  prune_channels    a physically smaller copy without the dead channels.
  export_saved_model, strip_prunetrain   the pruned model for serving.
  training_cost     training/inference FLOPs, gradient and memory bytes.
  channel_groups    which weight slices of a model are coupled.
  register_layer    teach the library a layer kind of your own.

Everything else lives in submodules: `schedules`, `planning`
(`Constraints`), `budget` (rankings), `importance`, `inplace`, `surgery`,
`regularizers`, `cost`, `coupling`, `distribute` (`make_strategy`,
`synchronize_batchnorm`), `dynamic_batch`, `latency`, `keras_callbacks`;
what has not measured worth it in `experimental` (`EarlyBird`, `Rewarm`,
`RecalibrateBatchNorm`, `Distill`, `SearchedWidths`),
imported on first use. CHANGELOG.md lists what moved where.
"""

try:
    import tensorflow  # noqa: F401  (the Keras backend this library runs on)
except ImportError as e:
    raise ImportError(
        "tf_prunetrain needs TensorFlow 2.21: install the package with the "
        "'cpu' or 'gpu' extra, e.g. pip install 'tf-prunetrain[cpu]'.") from e

from tf_prunetrain import budget  # noqa: F401  (submodules, for dotted use)
from tf_prunetrain import distribute  # noqa: F401
from tf_prunetrain import dynamic_batch  # noqa: F401
from tf_prunetrain import experimental  # noqa: F401  (lazy: see its doc)
from tf_prunetrain import importance  # noqa: F401
from tf_prunetrain import inplace  # noqa: F401
from tf_prunetrain import latency  # noqa: F401
from tf_prunetrain import planning  # noqa: F401
from tf_prunetrain import schedules  # noqa: F401
from tf_prunetrain.checkpoint import Checkpoint
from tf_prunetrain.cost import training_cost
from tf_prunetrain.coupling import channel_groups
from tf_prunetrain.export import export_saved_model, strip_prunetrain
from tf_prunetrain.handlers import register_layer
from tf_prunetrain.reconfigure import Reconfigure
from tf_prunetrain.regularizers import GroupLasso, add_group_lasso
from tf_prunetrain.runlog import RunLog
from tf_prunetrain.schedules import DeadChannels, FlopsBudget, Schedule
from tf_prunetrain.surgery import prune_channels

__version__ = "0.2.0"

__all__ = [
    "Checkpoint",
    "DeadChannels",
    "FlopsBudget",
    "GroupLasso",
    "Reconfigure",
    "RunLog",
    "Schedule",
    "add_group_lasso",
    "channel_groups",
    "export_saved_model",
    "prune_channels",
    "register_layer",
    "strip_prunetrain",
    "training_cost",
]
