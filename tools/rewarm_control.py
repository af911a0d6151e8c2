"""The control of issue 31's re-warm lever: the same learning-rate lift on
runs that make no cut.

`eb_gentle_rewarm` lifts the rate from 0.01 back to 0.1 over epoch 5 (the
epoch after its cut) and falls back along half a cosine; is its gain
recovery from the cut, or just a better schedule for any network? This
trains the networks its runs end as, from scratch, with that same lift over
epoch 5 and no cut: thin 0.5 (the widths of target 0.25) and the widths of
target 0.5 (`prunetrain_thin_widths` 0.5's final model in the levers file),
5 seeds, and writes their top-1 to a JSON file (resumable: runs already in
it are skipped). BENCHMARKS.md, "Issue 31, cut time and re-warm", pairs them.

    python -m tools.rewarm_control tools/results/levers_fashion_mnist_5seeds.json \
        tools/results/rewarm_control_fashion_mnist_5seeds.json
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys

from recipes import common
from tools import comparison
from tools import results
from tools import sweep

PEAK, LIFTED_EPOCH = 0.1, 4  # 0-based: the epoch after the cut after epoch 4


class Lifted(common._StepLearningRate):
    """The recipe's step schedule plus `experimental.Rewarm`'s lift over
    epoch `LIFTED_EPOCH` (peak `PEAK`, one epoch): the same rates as
    `Rewarm(epochs=1, peak=PEAK)` lifting from that epoch's start.

    The rate the lift gives back is `held`, not `base` (the schedule's
    own base rate: issue 40, overwriting it ran every epoch after the lift
    at a tenth of its rate).
    """

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        super().on_epoch_begin(epoch, logs)
        self.epoch, self.step = epoch, 0

    def on_train_batch_begin(self, batch: int, logs: dict | None = None
                             ) -> None:
        if self.epoch != LIFTED_EPOCH:
            return
        self.held = float(self.model.optimizer.learning_rate.numpy())
        weight = 0.5 * (1 + math.cos(math.pi * self.step
                                     / self.params["steps"]))
        self.model.optimizer.learning_rate = \
            self.held + max(PEAK - self.held, 0.0) * weight

    def on_train_batch_end(self, batch: int, logs: dict | None = None
                           ) -> None:
        if self.epoch == LIFTED_EPOCH:
            self.model.optimizer.learning_rate = self.held
            self.step += 1


def main(levers_path: str, out_path: str) -> None:
    sweep._init_worker(1)  # one thread per run, as in the sweep (no op ran)
    common._StepLearningRate = Lifted
    levers = comparison.read_results(levers_path)
    finals = {r["seed"]: r["final_model"] for r in levers["runs"]
              if r["method"] == "prunetrain_thin_widths"
              and r["setting"] == 0.5}
    out = results.read(out_path) if os.path.exists(out_path) else []
    done = {(r["seed"], r["method"]) for r in out}
    for seed in range(5):
        for method, architecture in (("thin", None),
                                     ("scratch_thin_widths", finals[seed])):
            if (seed, method) in done:
                continue
            record = comparison.run_record(
                dataclasses.replace(comparison.DEFAULTS, seed=seed), method,
                0.5, 0, architecture)
            out.append({"seed": seed, "method": method, "setting": 0.5,
                        "accuracy": record["accuracy"],
                        "load_average": record["load_average"]})
            results.write(out, out_path)
            print(f"seed {seed}, {method} 0.5 with the lift: top-1 "
                  f"{record['accuracy']:.4f}", flush=True)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
