r"""PruneTrain against what a user would do instead, side by side, priced on
a replayed clock: the command line of `tools.comparison`.

The default (`--mode=comparison`): on one workload, for every seed, the same
data, epochs and schedule, it trains `dense`, `thin` (every `--widths`
multiplier), `prunetrain` (`Reconfigure(FlopsBudget(t))`, the library's
default cut, for every `--targets` value), `scratch` (each PruneTrain run's
final architecture from fresh weights), with `--levers` other cuts as
`prunetrain_<lever>` and `scratch_<lever>` (`prunetrain_norm_per_flop`:
0.2's cut), and with `--paper` the paper's setting (`tools/comparison.py`).

**Time is replayed** (`tools/replay.py`, `tools/retime.py`): every run
records its architecture timeline (what trained, lasso on or off, how many
steps; `recipes/timeline.py`) and its one-off reconfiguration seconds; at
the end fresh processes build every distinct architecture and time its
train step in round-robin rounds, and a run's time is Σ steps × step
seconds + one-off seconds. Whole-run wall time stays as a column beside it
(`wall/replayed`: their agreement).

It reports, per setting, mean ± std over seeds of top-1 and of each figure
as a ratio to the same seed's dense run; the **paired** top-1 difference
against dense, every thin width and (PruneTrain) its scratch control, with
a 95 % bootstrap interval over seeds (`tools/verdicts.py`: a claim needs an
interval that excludes 0); the Pareto front of top-1 vs replayed time; the
goals of BENCHMARKS.md; and `--png` (top-1 vs replayed time and vs training
FLOPs). Top-1 is measured once, on the whole test set, after training.

**The `--json` file is the sweep's state** (`tools/sweep.py`,
`tools/results.py`): it is written after every run, and running the same
command again skips the runs it holds (same seed, method and setting) and
goes on; more `--seeds`, `--widths`, `--targets` or `--levers` extend it.
A file made with other recipe flags is refused, naming them; a file
written before issue 41's method names is read with today's. Every run
trains in a worker process with `--run_threads` TensorFlow threads (1 by
default: TensorFlow's CPU sums depend on the thread count, so a fixed
count makes a run's top-1 the same however it is scheduled); `--jobs=N`
runs N at a time (on 2 cores: `--jobs=2`). Top-1 and timelines are then
those of `--jobs=1`; only the wall column suffers.

From the repository root:

    python -m tools.benchmark --json=bench.json --png=bench.png --jobs=2  # Fashion-MNIST, 5 seeds
    python -m tools.benchmark --replay=bench.json --json=again.json   # re-time only
    python -m tools.benchmark --workload=mnist5k --seeds=0        # the quick mode
    python -m tools.benchmark --mode=pair --targets=0.5           # one dense/PruneTrain pair

Workloads (`--workload`; any recipe flag given on the command line wins):
`fashion_mnist` (the default: ResNet-20 on a 10,000-example training
subset, 8 epochs, all 10,000 test images), `mnist5k` (ResNet-20, 20
epochs; saturated: it cannot rank methods, BENCHMARKS.md),
`fashion_mnist_mobilenetv2` and `fashion_mnist_vgg11` (VGG-11 with
BatchNorm at 32x32: thin 0.5 against PruneTrain 0.25 by default). Fashion-MNIST needs its files (`sudo apt-get
install dataset-fashion-mnist`).

`--mode=pair` runs one dense/PruneTrain pair with the recipe flags as given
(`--targets` empty or one value) and adds the group-lasso step overhead (the
initial model's median train-step time with its GroupLasso regularizers vs
without, same widths, alternating rounds).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from absl import app
from absl import flags

from recipes import common
from tools import comparison
from tools import replay as replay_lib
from tools import results as results_lib
from tools import summary
from tools import sweep


def define_flags() -> None:
    """The command line: the recipe flags (`recipes.common`), the sweep's
    (`tools.sweep`) and the comparison's (defined here, not at import:
    other tools and the tests import this module)."""
    common.define_flags(comparison.DEFAULTS)
    sweep.define_flags(targets=["0.25", "0.5"])
    flags.DEFINE_enum("mode", "comparison", ["comparison", "pair"],
                      "comparison: every method over seeds; pair: one "
                      "dense/PruneTrain pair with the flags as given.")
    flags.DEFINE_enum("workload", "fashion_mnist",
                      list(comparison.WORKLOADS),
                      "Defaults of the recipe flags not given.")
    flags.DEFINE_string("png", None, "Draw top-1 vs training time and vs "
                        "training FLOPs here (needs matplotlib).")
    flags.DEFINE_list("widths", ["0.25", "0.375", "0.5", "0.75"],
                      "Width multipliers of the thin dense runs.")
    flags.DEFINE_list(
        "levers", [], "Also run PruneTrain with each of these cuts, as "
        "methods prunetrain_<lever> and scratch_<lever>: "
        f"{', '.join(comparison.LEVERS)}.")
    flags.DEFINE_boolean("scratch", True, "Also train each PruneTrain run's "
                         "final architecture from scratch.")
    flags.DEFINE_boolean("paper", False, "Also run the paper's setting.")
    flags.DEFINE_integer("paper_interval", 2, "Epochs between the paper "
                         "setting's reconfigurations (the paper: 10 of 182).")
    flags.DEFINE_integer("overhead_rounds", 8, "Alternating rounds of the "
                         "group-lasso overhead measurement (pair).")
    flags.DEFINE_integer("overhead_steps", 5, "Timed steps per round (pair).")


def apply_workload(name: str) -> None:
    """The workload's value for every recipe flag not on the command line
    (and its --widths and --targets, `comparison.SWEEP_DEFAULTS`)."""
    for flag, value in comparison.SWEEP_DEFAULTS.get(name, {}).items():
        if not flags.FLAGS[flag].present:
            flags.FLAGS[flag].value = value
    workload = comparison.WORKLOADS[name]
    for field in dataclasses.fields(common.Config):
        flag = flags.FLAGS[field.name]
        if not flag.present:
            value = getattr(workload, field.name)
            flag.value = [str(v) for v in value] \
                if field.name == "lr_decay_epochs" else value


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    f = flags.FLAGS
    rounds = sweep.replay_flags()
    if f.replay:
        if rounds[0] < 1:
            raise app.UsageError("--replay needs --replay_rounds >= 1.")
        report(comparison.replay_file(f.replay, f.json, f.replays, *rounds))
        return
    apply_workload(f.workload)
    config = common.config_from_flags()
    targets = [float(t) for t in f.targets]
    if f.mode == "pair":
        if len(targets) > 1:
            raise app.UsageError("--mode=pair takes at most one --targets "
                                 f"value, got {targets}.")
        config = dataclasses.replace(
            config, flops_target=targets[0] if targets else config.flops_target)
        result = comparison.compare(config, f.overhead_rounds,
                                    f.overhead_steps)
        print(comparison.table(result))
        results_lib.write(result, f.json)
        return
    if not targets:
        raise app.UsageError("--targets: give at least one flops_target.")
    if f.jobs < 1:
        raise app.UsageError(f"--jobs must be >= 1, got {f.jobs}.")
    unknown = sorted(set(f.levers) - set(comparison.LEVERS))
    if unknown:
        raise app.UsageError(f"--levers: unknown {', '.join(unknown)}; known: "
                             f"{', '.join(comparison.LEVERS)}.")
    try:
        result = comparison.comparison(
            config, [float(w) for w in f.widths], targets,
            [int(s) for s in f.seeds], f.scratch,
            f.paper_interval if f.paper else None, f.json, f.jobs,
            f.run_threads, f.replays, *rounds, levers=f.levers)
    except ValueError as err:  # a results file made with other flags
        raise app.UsageError(str(err)) from None
    report(result)


def report(result: dict[str, Any]) -> dict[str, Any]:
    """Prints the comparison's tables and draws `--png`."""
    replay = result.get("replay")
    if replay:
        print(f"time: replayed on {replay_lib.describe(replay['machine'])} "
              f"({replay.get('replays', 1)} replays of {replay['rounds']} "
              f"rounds x {replay['steps']} steps, {replay['seconds']:.0f} s);"
              f" sweep wall time "
              f"{result.get('sweep_seconds', 0) / 60:.1f} min")
    print(summary.comparison_table(result))
    print(summary.comparison_markdown(result))
    if flags.FLAGS.png:
        summary.plot(result, flags.FLAGS.png)
        print(f"plot: {flags.FLAGS.png}")
    return result


if __name__ == "__main__":
    define_flags()
    app.run(main)
