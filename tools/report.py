"""Figures from PruneTrain run logs: a command-line front for
`tf_prunetrain.report` (channels per layer at each reconfiguration, training
FLOPs per step and cumulative vs dense, parameters, loss/accuracy curves).

Example:

    python -m tools.report --log=runs/prunetrain --label=PruneTrain \
        --log=runs/dense --label=dense --out_dir=runs/report

Each --log is a run log (prunetrain.jsonl) written by a RunLog callback
with log_dir=... (after Reconfigure in a PruneTrain run, alone in a dense
one), or that log_dir. Needs matplotlib: pip install 'tf-prunetrain[plots]'.
"""

from __future__ import annotations

import os
import sys

from absl import app
from absl import flags

from tf_prunetrain import report

_LOG = flags.DEFINE_multi_string("log", None, "Run log (prunetrain.jsonl) or "
                                 "the log_dir holding it; repeat for several.")
_LABEL = flags.DEFINE_multi_string("label", None, "Legend label per --log "
                                   "(default: the log's directory name).")
_OUT_DIR = flags.DEFINE_string("out_dir", "prunetrain_report",
                               "Directory for the PNG files.")


def _default_label(path: str) -> str:
    """The name of the directory holding the run log."""
    folder = path if os.path.isdir(path) else os.path.dirname(path)
    return os.path.basename(os.path.abspath(folder))


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if not _LOG.value:
        raise app.UsageError("give at least one --log")
    labels = _LABEL.value or []
    if labels and len(labels) != len(_LOG.value):
        raise app.UsageError("give one --label per --log, or none")
    runs = [(labels[i] if labels else _default_label(path), report.load(path))
            for i, path in enumerate(_LOG.value)]
    for path in report.render(runs, _OUT_DIR.value):
        print(path)


if __name__ == "__main__":
    sys.exit(app.run(main))
