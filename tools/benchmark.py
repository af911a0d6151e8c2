r"""PruneTrain against what a user would do instead, side by side, priced on
a replayed clock.

The default (`--mode=comparison`): on one workload, for every seed, the same
data, epochs and schedule, it trains

* `dense`: the full network, no group lasso;
* `thin`: uniformly thinner dense networks, for every `--widths` multiplier
  (the simplest alternative: a smaller model trained from scratch);
* `prunetrain`: `Reconfigure(FlopsBudget(t))` for every `--targets` value;
* `scratch`: each PruneTrain run's final architecture trained dense from
  fresh weights (is pruning while training worth it?);
* `paper` (with `--paper`): the paper's setting (λ calibrated from a 0.2
  penalty ratio, the lasso as a loss term on kernels, a reconfiguration
  every `--paper_interval` epochs, arbitrary widths).

**Time is replayed** (`tools/replay.py`): every run records its architecture
timeline (what trained, lasso on or off, how many steps; `recipes/timeline.py`)
and its one-off reconfiguration seconds; at the end one process builds every
distinct architecture and times its train step in round-robin rounds, and a
run's time is Σ steps × step seconds + one-off seconds. Whole-run wall time
stays as a column beside it (`wall/replayed`: their agreement).

It reports, per setting, mean ± std over seeds of top-1 and of each figure
as a ratio to the same seed's dense run; the **paired** top-1 difference
against dense, every thin width and (PruneTrain) its scratch control, with
a 95 % bootstrap interval over seeds (`tools/verdicts.py`: a claim needs an
interval that excludes 0); the Pareto front of top-1 vs replayed time; the
goals of BENCHMARKS.md; and `--png` (top-1 vs replayed time and vs training
FLOPs). Top-1 is measured once, on the whole test set, after training.

**The `--json` file is the sweep's state**: it is written after every run,
and running the same command again skips the runs it holds (same seed,
method and setting) and goes on; more `--seeds`, `--widths` or `--targets`
extend it. A file made with other recipe flags is refused, naming them.
Every run trains in a worker process with `--run_threads` TensorFlow threads
(1 by default: TensorFlow's CPU sums depend on the thread count, so a fixed
count makes a run's top-1 the same however it is scheduled); `--jobs=N` runs
N at a time (on 2 cores: `--jobs=2`). Top-1 and timelines are then those of
`--jobs=1`; only the wall column suffers.

    python tools/benchmark.py --json=bench.json --png=bench.png --jobs=2  # Fashion-MNIST, 5 seeds
    python tools/benchmark.py --replay=bench.json --json=again.json   # re-time only
    python tools/benchmark.py --workload=mnist5k --seeds=0        # the quick mode
    python tools/benchmark.py --mode=pair --targets=0.5           # one dense/PruneTrain pair

Workloads (`--workload`; any recipe flag given on the command line wins):
`fashion_mnist` (the default: ResNet-20 on a 10,000-example training
subset, 8 epochs, all 10,000 test images) and `mnist5k` (ResNet-20, 20
epochs; saturated: it cannot rank methods, BENCHMARKS.md). Fashion-MNIST
needs its files (`sudo apt-get install dataset-fashion-mnist`).

`--mode=pair` runs one dense/PruneTrain pair with the recipe flags as given
(`--targets` empty or one value) and adds the group-lasso step overhead (the
initial model's median train-step time with its GroupLasso regularizers vs
without, same widths, alternating rounds).
"""

from __future__ import annotations

import dataclasses
import gc
import json
import os
import statistics
import sys
import tempfile
import time
from typing import Any, Sequence

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "..", "recipes"))

import keras  # noqa: E402
import numpy as np  # noqa: E402
from absl import app  # noqa: E402
from absl import flags  # noqa: E402

import common  # noqa: E402  (recipes/common.py)
import replay as replay_lib  # noqa: E402  (tools/replay.py)
import summary  # noqa: E402  (tools/summary.py)
import sweep  # noqa: E402  (tools/sweep.py)
import tf_prunetrain  # noqa: E402

# PruneTrain's tuned settings in both workloads: the proximal lasso on
# kernels and BatchNorm scales at λ = 0.02 until the FLOPs target is met.
# Widths are rounded to multiples of 8 (the recipes' and the library's
# default --round_to).
# `prunetrain` is 0.2's cut (norm per FLOP, abrupt), the one the stored
# comparisons ran; the levers (`LEVERS`) are the alternatives, `thin_gentle`
# the library's default since issue 31.
_TUNED = dict(model="resnet20", batch_size=128, proximal=True, scales=True,
              strength=0.02, validate=False, verbose=0,
              ranking="norm_per_flop", gentle=False)
# ResNet-20, not -32: on 2 cores a sweep must fit in a few sittings, and
# ResNet-20's thin 0.25 already trails dense by several points on
# Fashion-MNIST, so width matters at this size.
WORKLOADS = {
    "fashion_mnist": common.Config(data="fashion_mnist", train_size=10_000,
                                   epochs=8, lr_decay_epochs=(4, 6),
                                   **_TUNED),
    "mnist5k": common.Config(data="mnist5k", epochs=20,
                             lr_decay_epochs=(10, 15), **_TUNED),
    # Issue 31's second workload, a network nobody here wrote
    # (keras.applications; --width_multiplier is its alpha). Dense, seed 0:
    # at learning rate 0.1 its training accuracy swung between 0.46 and
    # 0.75 over 8 epochs (test 0.758); at 0.02 it reached 0.88 (test
    # 0.827). Here `prunetrain` is the library's default cut (thin widths,
    # gentle): 0.2's cut collapsed at λ 0.1 (0.246-0.388 top-1, seed 0).
    # λ chosen on seed 0 at target 0.25 (top-1 with the default cut):
    # 0 → 0.834, 0.005 → 0.835, 0.02 → 0.800, 0.1 → 0.485
    # (BENCHMARKS.md, "Issue 31, second workload").
    "fashion_mnist_mobilenetv2": common.Config(
        data="fashion_mnist", train_size=10_000, image_size=32, epochs=8,
        lr_decay_epochs=(4, 6), learning_rate=0.02,
        **{**_TUNED, "model": "mobilenetv2", "strength": 0.005,
           "ranking": "thin_widths", "gentle": True}),
}
# Per workload: the thin widths and PruneTrain targets when --widths and
# --targets are not given. MobileNetV2's alphas 0.25/0.4/0.6 have 0.119/
# 0.261/0.495 of its FLOPs at 32x32 (a thin of about equal FLOPs per
# target).
SWEEP_DEFAULTS = {
    "fashion_mnist_mobilenetv2": {"widths": ["0.25", "0.4", "0.6", "0.75"],
                                  "targets": ["0.125", "0.25", "0.5"]}}
DEFAULTS = WORKLOADS["fashion_mnist"]
# The levers of issue 31: recipe flags a `prunetrain_<lever>` method sets
# (its `scratch_<lever>` control trains that run's final architecture).
LEVERS: dict[str, dict[str, Any]] = {
    "thin_widths": {"ranking": "thin_widths"},
    "thin_gentle": {"ranking": "thin_widths", "gentle": True},
    # The same without the group lasso: with thin widths, the norms only
    # choose which channels fade; is the penalty worth its shrinkage?
    "thin_gentle_no_lasso": {"ranking": "thin_widths", "gentle": True,
                             "strength": 0.0},
    # When to cut, from the data: one cut when the mask settles.
    "eb_gentle": {"ranking": "thin_widths", "gentle": True,
                  "early_bird": True},
    # The same with the learning rate lifted after the cut.
    "eb_gentle_rewarm": {"ranking": "thin_widths", "gentle": True,
                         "early_bird": True, "rewarm_epochs": 1.0}}
_MODE = flags.DEFINE_enum("mode", "comparison", ["comparison", "pair"],
                          "comparison: every method over seeds; pair: one "
                          "dense/PruneTrain pair with the flags as given.")
_WORKLOAD = flags.DEFINE_enum("workload", "fashion_mnist", list(WORKLOADS),
                              "Defaults of the recipe flags not given.")
_JSON = flags.DEFINE_string("json", None, "The sweep's state and figures: "
                            "written after every run, resumed from when it "
                            "exists.")
_PNG = flags.DEFINE_string("png", None, "Draw top-1 vs training time and vs "
                           "training FLOPs here (needs matplotlib).")
_TARGETS = flags.DEFINE_list("targets", ["0.25", "0.5"],
                             "PruneTrain flops_target values.")
_WIDTHS = flags.DEFINE_list("widths", ["0.25", "0.375", "0.5", "0.75"],
                            "Width multipliers of the thin dense runs.")
_SEEDS = flags.DEFINE_list("seeds", ["0", "1", "2", "3", "4"], "Seeds.")
_JOBS = flags.DEFINE_integer("jobs", 1, "Training runs at a time, each in "
                             "its own worker process.")
_RUN_THREADS = flags.DEFINE_integer(
    "run_threads", 1, "TensorFlow threads of every training run (part of the "
    "sweep's configuration: other counts give other floats, so other top-1).")
_REPLAY = flags.DEFINE_string(
    "replay", None, "Only replay the runs of this results JSON (no "
    "training); writes --json (default: this file).")
_REPLAYS = flags.DEFINE_integer(
    "replays", 3, "Replays, one after another, each in a fresh process; "
    "the runs are priced on their median ratios (tools/replay.py).")
_REPLAY_ROUNDS = flags.DEFINE_integer(
    "replay_rounds", 5, "Round-robin rounds of the replay (0: no replay; "
    "time is then wall time).")
_REPLAY_STEPS = flags.DEFINE_integer("replay_steps", 6, "Timed steps per "
                                     "architecture per round.")
_REPLAY_WARMUP = flags.DEFINE_integer("replay_warmup", 2, "Untimed steps "
                                      "before them in each round.")
_LEVERS = flags.DEFINE_list(
    "levers", [], "Also run PruneTrain with each of these levers (issue 31), "
    f"as methods prunetrain_<lever> and scratch_<lever>: {', '.join(LEVERS)}.")
_SCRATCH = flags.DEFINE_boolean("scratch", True, "Also train each PruneTrain "
                                "run's final architecture from scratch.")
_PAPER = flags.DEFINE_boolean("paper", False, "Also run the paper's setting.")
_PAPER_INTERVAL = flags.DEFINE_integer(
    "paper_interval", 2, "Epochs between the paper setting's "
    "reconfigurations (the paper: 10 of 182).")
_ROUNDS = flags.DEFINE_integer("overhead_rounds", 8, "Alternating rounds of "
                               "the group-lasso overhead measurement (pair).")
_STEPS = flags.DEFINE_integer("overhead_steps", 5, "Timed steps per round "
                              "(pair).")


def group_lasso_overhead(config: common.Config, rounds: int,
                         steps: int) -> dict[str, float]:
    """Median train-step seconds of the initial model with and without its
    GroupLasso regularizers (same widths, same batch), alternating rounds;
    with `config.proximal` the regularizers' cost is their proximal step."""
    data = common.load_data(config)
    x, y = next(iter(data.train(config.batch_size, True, 0, None)[0]))
    models = {}
    for name, lasso in (("with", True), ("without", False)):
        model = common.build_model(config, data.shape, data.num_classes)
        if lasso:
            model = tf_prunetrain.add_group_lasso(
                model, strength=1e-4, proximal=config.proximal)
        model.compile(keras.optimizers.SGD(0.01, momentum=0.9),
                      keras.losses.SparseCategoricalCrossentropy(
                          from_logits=True))
        tf_prunetrain.regularizers.attach_proximal_step(model)
        model.train_on_batch(x, y)  # trace
        models[name] = model
    times: dict[str, list[float]] = {"with": [], "without": []}
    for _ in range(rounds):
        for name, model in models.items():
            for _ in range(steps):
                start = time.perf_counter()
                model.train_on_batch(x, y)
                times[name].append(time.perf_counter() - start)
    with_, without = (statistics.median(times[k]) for k in ("with", "without"))
    return {"step_with": with_, "step_without": without,
            "ratio": with_ / without}


def compare(config: common.Config, rounds: int, steps: int) -> dict[str, Any]:
    """Runs dense and PruneTrain with `config`; returns both and the ratios."""
    dense = common.run(dataclasses.replace(config, prunetrain=False))
    pruned = common.run(dataclasses.replace(config, prunetrain=True))
    overhead = group_lasso_overhead(config, rounds, steps)
    d, p = _figures(dense), _figures(pruned)
    wall = p["train_seconds"] / d["train_seconds"]
    flops = p["train_flops_spent"] / d["train_flops_spent"]
    return {
        "config": dataclasses.asdict(config), "dense": d, "prunetrain": p,
        "group_lasso_overhead": overhead,
        "ratios": {
            "wall_time": wall, "train_flops": flops,
            "wall_over_flops": wall / flops,
            "inference_flops": p["inference_flops"] / d["inference_flops"],
            "params": p["params"] / d["params"],
            "gradient_bytes": p["gradient_bytes"] / d["gradient_bytes"],
            "memory_traffic": p["memory_traffic_bytes"]
            / d["memory_traffic_bytes"],
            "top1_points": 100 * (p["accuracy"] - d["accuracy"]),
            "reconfiguration_share": (p["reconfiguration_seconds"]
                                      + p["retrace_seconds"])
            / p["train_seconds"],
        },
    }


def paper_setting(config: common.Config, interval: int) -> common.Config:
    """The paper's PruneTrain on `config`'s workload: λ from a 0.2 penalty
    ratio, the lasso as a loss term on kernels only, dead channels removed
    every `interval` epochs, arbitrary widths."""
    return dataclasses.replace(config, prunetrain=True, flops_target=None,
                               target_epoch=None, proximal=False,
                               scales=False, strength=None, penalty_ratio=0.2,
                               round_to=1, interval=interval)


def _figures(result: dict[str, Any]) -> dict[str, Any]:
    figures = {key: result[key] for key in (
        "accuracy", "params", "channels", "inference_flops",
        "train_flops_spent", "train_flops_dense", "gradient_bytes",
        "memory_traffic_bytes", "reconfiguration_seconds", "retrace_seconds",
        "step_changes", "removed_layers", "timeline", "train_seconds",
        "seconds", "removed_norms", "mask_distances")}
    # What the replay adds to a run's steps: the surgery, and the first
    # step after each reconfiguration minus a steady one.
    figures["one_off_seconds"] = (result["reconfiguration_seconds"]
                                  + result["retrace_seconds"])
    return figures


def settings(widths: Sequence[float], targets: Sequence[float],
             scratch: bool = True, paper: bool = False,
             levers: Sequence[str] = ()) -> list[tuple[str, float | None]]:
    """The (method, setting) pairs of a comparison, in report order; each
    lever adds `prunetrain_<lever>` (and `scratch_<lever>`) per target.

    >>> settings([0.5], [0.25], paper=True)
    [('dense', None), ('thin', 0.5), ('prunetrain', 0.25), ('scratch', 0.25), ('paper', None)]
    >>> settings([], [0.5], levers=["uniform"])[1:]
    [('prunetrain', 0.5), ('scratch', 0.5), ('prunetrain_uniform', 0.5), ('scratch_uniform', 0.5)]
    """
    out: list[tuple[str, float | None]] = [("dense", None)]
    out += [("thin", w) for w in widths]
    for target in targets:
        for suffix in ["", *(f"_{lever}" for lever in levers)]:
            out += [(f"prunetrain{suffix}", target)] \
                + [(f"scratch{suffix}", target)] * scratch
    return out + [("paper", None)] * paper


def train(config: common.Config, architecture: str | None = None
          ) -> dict[str, Any]:
    """One training run, here or in a worker process: its figures, its
    timeline, the model JSON of every architecture it trained, and the
    load average at its end (`architecture`: a model JSON text the run
    trains, as --architecture)."""
    _fresh_state()  # a worker's earlier run
    with tempfile.TemporaryDirectory() as folder:
        if architecture is not None:
            path = os.path.join(folder, "architecture.json")
            with open(path, "w", encoding="utf-8") as f:
                f.write(architecture)
            config = dataclasses.replace(config, architecture=path)
        outcome = common.run(config)
    # The 1-minute load average at the run's end: its one-off seconds
    # (re-traces, fades) are measured in the run, not replayed, and a
    # load above the CPU count inflates them.
    return {**_figures(outcome), "architectures": outcome["architectures"],
            "load_average": os.getloadavg()[0]}


def run_record(config: common.Config, method: str, value: float | None,
               paper_interval: int, architecture: str | None
               ) -> dict[str, Any]:
    """One run of a comparison (`train`; `architecture`: the JSON a
    scratch run trains)."""
    return {"seed": config.seed, "method": method, "setting": value,
            **train(_setting(config, method, value, paper_interval),
                    architecture)}


# Recipe flags whose default changed after they were added: their value
# in results files written before them.
_FIRST_DEFAULTS = {"ranking": "norm_per_flop", "gentle": False}
# Recipe flags that do not change what a run computes.
_NEUTRAL = ("seed", "verbose", "log_dir", "export_dir")


def _config_dict(config: common.Config) -> dict[str, Any]:
    return json.loads(json.dumps(dataclasses.asdict(config)))


def load_state(path: str | None, config: common.Config, paper_interval: int,
               run_threads: int) -> dict[str, Any]:
    """The sweep so far: `path`'s results when it exists (refused when its
    recipe flags, `--paper_interval` or `--run_threads` differ), else an
    empty one."""
    state = {"config": _config_dict(config), "paper_interval": paper_interval,
             "run_threads": run_threads, "seeds": [], "runs": [],
             "architectures": {}, "sweep_seconds": 0.0}
    if not path or not os.path.exists(path):
        return state
    with open(path, encoding="utf-8") as f:
        old = json.load(f)
    if "architectures" not in old:
        raise ValueError(f"{path} holds no architecture timelines (it was "
                         "written before sweeps could be replayed or "
                         "resumed): give another --json.")
    # A flag added since the file was written ran at its default there
    # (the default when it was added, where that changed since).
    defaults = {**_config_dict(common.Config()), **_FIRST_DEFAULTS}
    was = {name: old["config"].get(name, defaults[name])
           for name in state["config"]}
    differing = [f"--{name}={was[name]!r} there, {value!r} now"
                 for name, value in state["config"].items()
                 if name not in _NEUTRAL and was[name] != value]
    for name in ("paper_interval", "run_threads"):
        if old.get(name) != state[name]:
            differing.append(f"--{name}={old.get(name)!r} there, "
                             f"{state[name]!r} now")
    if differing:
        raise ValueError(f"{path} was made with other flags: "
                         f"{'; '.join(differing)}. Give the same flags to "
                         "go on with it, or another --json.")
    return old


def _refresh(result: dict[str, Any]) -> None:
    summary.annotate(result)
    result["summary"] = summary.summarize(result)
    spread = summary.replay_spread(result) if result.get("replay") else {}
    for row in result["summary"]:
        if row["label"] in spread:
            row["replayed_spread"] = spread[row["label"]]
    result["goals"] = summary.goals(result["summary"],
                                    summary.time_key(result))


def comparison(config: common.Config, widths: Sequence[float],
               targets: Sequence[float], seeds: Sequence[int],
               scratch: bool = True, paper_interval: int | None = None,
               json_path: str | None = None, jobs: int = 1,
               run_threads: int = 1,
               replays: int = 3, replay_rounds: int = 5,
               replay_steps: int = 6, replay_warmup: int = 2,
               levers: Sequence[str] = ()) -> dict[str, Any]:
    """Every method of the module docstring for every seed (`paper_interval`
    None: no paper run), `jobs` runs at a time in worker processes of
    `run_threads` TensorFlow threads (`tools/sweep.py`), resumed from
    `json_path` and written there after every run; then `replays` replays,
    each in a fresh process (`replay_rounds` 0: none), the summary, the
    paired verdicts and the goals."""
    start = time.perf_counter()
    result = load_state(json_path, config, paper_interval or 0, run_threads)
    plan = settings(widths, targets, scratch, paper_interval is not None,
                    levers)
    result["seeds"] = sorted(set(result["seeds"]) | set(seeds))
    held = {(r["seed"], r["method"], r["setting"]) for r in result["runs"]}
    tasks = [(seed, *s) for seed in seeds for s in plan
             if (seed, *s) not in held]
    if tasks:
        print(f"{len(tasks)} runs to go ({len(held)} in "
              f"{json_path or 'no file'} already), {jobs} at a time",
              flush=True)
    # (seed, lever suffix, target): the final model JSON of that PruneTrain
    # run, which its scratch control trains.
    finals = {(r["seed"], r["method"][len("prunetrain"):], r["setting"]):
              r["final_model"] for r in result["runs"]
              if r["method"].startswith("prunetrain")}
    spent = result["sweep_seconds"]

    def prepare(task: tuple) -> tuple | None:
        seed, method, value = task
        architecture = None
        if method.startswith("scratch"):
            architecture = finals.get((seed, method[len("scratch"):], value))
            if architecture is None:
                return None  # its PruneTrain run is not done yet
        return (dataclasses.replace(config, seed=seed), method, value,
                paper_interval or 0, architecture)

    def done(task: tuple, record: dict[str, Any]) -> None:
        architectures = record.pop("architectures")
        record["final_architecture"] = record["timeline"][-1]["architecture"]
        if record["method"].startswith("prunetrain"):
            # Its own JSON (its seed's initializers) for its scratch run;
            # the shared table keeps one JSON per architecture, for replays.
            record["final_model"] = architectures[record["final_architecture"]]
            finals[(record["seed"], record["method"][len("prunetrain"):],
                    record["setting"])] = record["final_model"]
        for key, text in architectures.items():
            result["architectures"].setdefault(key, text)
        result["runs"].append(record)
        _order(result["runs"], plan)
        if result.get("replay") and not covered(result, record):
            result.pop("replay"), result.pop("replays", None)
            print("the results' replays no longer cover every run: a new "
                  "one is made at the end", flush=True)
        result["sweep_seconds"] = spent + time.perf_counter() - start
        _refresh(result)
        _write(result, json_path)
        if record["load_average"] > (os.cpu_count() or 1) + 0.5:
            print(f"warning: load average {record['load_average']:.1f} on "
                  f"{os.cpu_count()} CPUs at the end of this run: its "
                  "one-off seconds are measured under contention (run "
                  "nothing else beside a sweep)", flush=True)
        print(f"seed {record['seed']}, "
              f"{summary.label(record['method'], record['setting'])}: top-1 "
              f"{record['accuracy']:.4f}, wall {record['train_seconds']:.0f}"
              f" s, steps " + "+".join(str(s["steps"])
                                       for s in record["timeline"]),
              flush=True)

    sweep.run_tasks(tasks, prepare, run_record, done, jobs, run_threads)
    if replay_rounds > 0 and result["runs"] and "replay" not in result:
        replay_many(result, replays, replay_rounds, replay_steps,
                    replay_warmup)
    result["sweep_seconds"] = spent + time.perf_counter() - start
    _refresh(result)
    _write(result, json_path)
    return result


def covered(result: dict[str, Any], record: dict[str, Any]) -> bool:
    """Whether every replay of `result` timed every architecture (and lasso
    kind) `record` trained: then they price it as they price the others
    (a lever that changes when or how, not what, needs no new replay).

    >>> run = {"timeline": [{"architecture": "a", "lasso": "", "steps": 3}]}
    >>> covered({"replays": [{"step_seconds": {"a": 0.1}}]}, run)
    True
    >>> covered({"replays": [{"step_seconds": {"b": 0.1}}]}, run)
    False
    """
    items = replay_lib.items(record["timeline"])
    replays = result.get("replays") or []
    return bool(replays) and all(item in r["step_seconds"]
                                 for r in replays for item in items)


def _order(runs: list[dict[str, Any]],
           plan: Sequence[tuple[str, float | None]]) -> None:
    """Runs by seed, then in the plan's order (others after, by name)."""
    def key(run: dict[str, Any]) -> tuple:
        setting = (run["method"], run["setting"])
        return (run["seed"], plan.index(setting) if setting in plan
                else len(plan), run["method"], run["setting"] or 0.0)
    runs.sort(key=key)


def _replay_model(config: common.Config, data: common.Data, item: str,
                  architectures: dict[str, str], folder: str) -> keras.Model:
    """The compiled model a replay item trains: its architecture with fresh
    weights, the lasso of its kind when on, the recipe's optimizer."""
    architecture, lasso = replay_lib.split_item(item)
    path = os.path.join(folder, f"{architecture}.json")
    with open(path, "w", encoding="utf-8") as f:
        f.write(architectures[architecture])
    # The JSON fixes the widths and which layers are frozen; a trained
    # model's other flags (tools/pretrained.py) do not apply.
    config = dataclasses.replace(
        config, architecture=path, width_multiplier=1.0, pretrained=None,
        new_head=False, freeze_epochs=0, freeze_batchnorm=False,
        prune_first=False, prunetrain=bool(lasso), proximal="proximal" in lasso,
        scales="scales" in lasso, strength=config.strength or 1e-4)
    model = common.compiled_model(config, data, replicas=1)
    if config.proximal:
        tf_prunetrain.regularizers.attach_proximal_step(model)
    return model


def replay_runs(result: dict[str, Any], rounds: int, steps: int,
                warmup: int) -> dict[str, Any]:
    """Times the train step of every architecture (and lasso kind) the runs
    trained, with the sweep's batch size, optimizer, precision and input
    pipeline, in round-robin rounds (`tools/replay.py`)."""
    start = time.perf_counter()
    fields = {f.name for f in dataclasses.fields(common.Config)}
    values = {k: v for k, v in result["config"].items() if k in fields}
    values["lr_decay_epochs"] = tuple(values["lr_decay_epochs"])
    config = common.Config(**values)
    keys = replay_lib.items(s for r in result["runs"] for s in r["timeline"])
    info = replay_lib.machine()
    print(f"replay: {len(keys)} architectures, {rounds} rounds x {steps} "
          f"steps, on {replay_lib.describe(info)}", flush=True)
    _fresh_state()
    data = common.load_data(config)

    def dataset() -> Any:
        return data.train(config.batch_size, False, 0, None)[0]

    policy = keras.mixed_precision.global_policy()
    if config.mixed_precision:
        keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        with tempfile.TemporaryDirectory() as folder:
            models = {key: _replay_model(config, data, key,
                                         result["architectures"], folder)
                      for key in keys}
        seconds = replay_lib.time_models(
            models, dataset, rounds, steps, warmup,
            progress=lambda line: print(line, flush=True))
    finally:
        keras.mixed_precision.set_global_policy(policy)
    del models
    _fresh_state()
    return {"machine": info, "rounds": rounds, "steps": steps,
            "warmup": warmup, "step_seconds": seconds,
            "seconds": time.perf_counter() - start,
            "date": time.strftime("%Y-%m-%d %H:%M")}


def _reference(result: dict[str, Any]) -> str:
    """The replay item ratios are taken against: the dense architecture,
    else the one trained for the most steps."""
    steps: dict[str, int] = {}
    for run in result["runs"]:
        for segment in run["timeline"]:
            item = replay_lib.item_key(segment["architecture"],
                                       segment["lasso"])
            if run["method"] == "dense":
                return item
            steps[item] = steps.get(item, 0) + segment["steps"]
    return max(steps, key=steps.get)


def add_replay(result: dict[str, Any], new: dict[str, Any]) -> None:
    """Adds one replay to `result["replays"]` and sets `result["replay"]`,
    what prices the runs: every replay so far, combined
    (`replay.combine`)."""
    replays = result.setdefault("replays", [])
    replays.append(new)
    result["replay"] = {
        **{k: new[k] for k in ("machine", "rounds", "steps", "warmup",
                               "date")},
        "replays": len(replays), "seconds": sum(r["seconds"] for r in replays),
        "step_seconds": replay_lib.combine(
            [r["step_seconds"] for r in replays], _reference(result))}


def replay_many(result: dict[str, Any], replays: int, rounds: int,
                steps: int, warmup: int) -> None:
    """`replays` replays of `result`'s runs, one after another, each in a
    fresh process with all of this machine's threads (a process's own
    state, such as the kernels TensorFlow picked, then varies between
    replays and is outvoted), added to `result` (`add_replay`). Prints how
    far each new replay's time ratios are from the ones before, combined."""
    def done(task: int, new: dict[str, Any]) -> None:
        earlier = result.get("replay")
        if earlier:
            print(f"replay {task + 1}/{replays}: its time ratios against the "
                  f"earlier {earlier.get('replays', 1)} combined: " + ", ".join(
                      f"{name} {change:+.2%}" for name, change in
                      replay_agreement(result, new, earlier).items()),
                  flush=True)
        add_replay(result, new)

    sweep.run_tasks(range(replays), lambda task: (result, rounds, steps,
                                                  warmup),
                    replay_runs, done, jobs=1, threads=os.cpu_count() or 1,
                    fresh=True)


def replay_file(path: str, out: str | None, replays: int, rounds: int,
                steps: int, warmup: int) -> dict[str, Any]:
    """Replays the runs of the results file `path` (no training) `replays`
    more times and writes the result to `out` (default: `path`): the new
    replays join the file's earlier ones, and the runs are priced on all of
    them combined."""
    with open(path, encoding="utf-8") as f:
        result = json.load(f)
    if "architectures" not in result:
        raise ValueError(f"{path} holds no architecture timelines (written "
                         "before sweeps could be replayed): nothing to "
                         "replay.")
    replay_many(result, replays, rounds, steps, warmup)
    _refresh(result)
    _write(result, out or path)
    return result


def replay_agreement(result: dict[str, Any], one: dict[str, Any],
                     other: dict[str, Any]) -> dict[str, float]:
    """Per setting: the mean replayed time ratio when priced by the replay
    `one` over the same when priced by `other`, minus 1."""
    mine, theirs = summary.priced(result, one), summary.priced(result, other)
    return {name: mine[name] / theirs[name] - 1 for name in mine
            if name != "dense"}


def _fresh_state() -> None:
    """Frees the previous runs' models and traced functions before a run,
    so that collecting them does not land inside the next run's training.
    Measured once (four identical 2-epoch dense runs in a row): 29.5 / 47.9
    / 27.0 / 23.9 s without it, 25.4 / 25.0 / 28.5 / 25.9 s with it."""
    keras.backend.clear_session()
    gc.collect()


def _setting(base: common.Config, method: str, value: float | None,
             paper_interval: int) -> common.Config:
    # A --target_epoch given on the command line is PruneTrain's.
    dense = dataclasses.replace(base, prunetrain=False, target_epoch=None)
    if method == "dense":
        return dense
    if method == "thin":
        return dataclasses.replace(dense, width_multiplier=base.width_multiplier
                                   * value)
    if method.startswith("prunetrain"):
        lever = LEVERS[method[len("prunetrain_"):]] if "_" in method else {}
        return dataclasses.replace(base, prunetrain=True, flops_target=value,
                                   **lever)
    if method.startswith("scratch"):
        return dataclasses.replace(dense, width_multiplier=1.0)
    return paper_setting(base, paper_interval)


def _write(result: dict[str, Any], path: str | None) -> None:
    """Writes `result` to `path` whole or not at all (a stopped sweep
    leaves its last complete state)."""
    if path:
        with open(path + ".tmp", "w", encoding="utf-8") as f:
            json.dump(result, f, indent=1,
                      default=lambda v: np.asarray(v).tolist())
        os.replace(path + ".tmp", path)


def table(result: dict[str, Any]) -> str:
    d, p, r = result["dense"], result["prunetrain"], result["ratios"]
    o = result["group_lasso_overhead"]
    rows = [
        ("training wall time", f"{d['train_seconds']:.1f} s",
         f"{p['train_seconds']:.1f} s", f"{r['wall_time']:.3f}x"),
        ("training FLOPs spent", f"{d['train_flops_spent']:.3e}",
         f"{p['train_flops_spent']:.3e}", f"{r['train_flops']:.3f}x"),
        ("wall / FLOPs ratio", "", "", f"{r['wall_over_flops']:.3f}"),
        ("inference FLOPs/example", f"{d['inference_flops']:,}",
         f"{p['inference_flops']:,}", f"{r['inference_flops']:.3f}x"),
        ("parameters", f"{d['params']:,}", f"{p['params']:,}",
         f"{r['params']:.3f}x"),
        ("gradient bytes/step", f"{d['gradient_bytes']:,}",
         f"{p['gradient_bytes']:,}", f"{r['gradient_bytes']:.3f}x"),
        ("memory traffic/step (final)", f"{d['memory_traffic_bytes']:.3e}",
         f"{p['memory_traffic_bytes']:.3e}", f"{r['memory_traffic']:.3f}x"),
        ("top-1 (held out)", f"{d['accuracy']:.4f}", f"{p['accuracy']:.4f}",
         f"{r['top1_points']:+.2f} points"),
        ("in reconfigurations", "",
         f"{p['reconfiguration_seconds']:.2f} s + "
         f"{p['retrace_seconds']:.2f} s re-trace",
         f"{100 * r['reconfiguration_share']:.2f}% of training"),
        ("group-lasso step", f"{1e3 * o['step_without']:.1f} ms",
         f"{1e3 * o['step_with']:.1f} ms", f"{o['ratio']:.3f}x"),
    ]
    header = ("", "dense", "PruneTrain", "PruneTrain / dense")
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(4)]
    return "\n".join("  ".join(cell.ljust(w) if i == 0 else cell.rjust(w)
                               for i, (cell, w) in enumerate(zip(row, widths)))
                     for row in [header, *rows])


def _apply_workload(name: str) -> None:
    """The workload's value for every recipe flag not on the command line
    (and its --widths and --targets, `SWEEP_DEFAULTS`)."""
    for flag, value in SWEEP_DEFAULTS.get(name, {}).items():
        if not flags.FLAGS[flag].present:
            flags.FLAGS[flag].value = value
    workload = WORKLOADS[name]
    for field in dataclasses.fields(common.Config):
        flag = flags.FLAGS[field.name]
        if not flag.present:
            value = getattr(workload, field.name)
            flag.value = [str(v) for v in value] \
                if field.name == "lr_decay_epochs" else value


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    rounds = (_REPLAY_ROUNDS.value, _REPLAY_STEPS.value, _REPLAY_WARMUP.value)
    if _REPLAY.value:
        if rounds[0] < 1:
            raise app.UsageError("--replay needs --replay_rounds >= 1.")
        result = summary_report(replay_file(_REPLAY.value, _JSON.value,
                                            _REPLAYS.value, *rounds))
        return
    _apply_workload(_WORKLOAD.value)
    config = common.config_from_flags()
    targets = [float(t) for t in _TARGETS.value]
    if _MODE.value == "pair":
        if len(targets) > 1:
            raise app.UsageError("--mode=pair takes at most one --targets "
                                 f"value, got {targets}.")
        config = dataclasses.replace(
            config, flops_target=targets[0] if targets else config.flops_target)
        result = compare(config, _ROUNDS.value, _STEPS.value)
        print(table(result))
        _write(result, _JSON.value)
        return
    if not targets:
        raise app.UsageError("--targets: give at least one flops_target.")
    if _JOBS.value < 1:
        raise app.UsageError(f"--jobs must be >= 1, got {_JOBS.value}.")
    unknown = sorted(set(_LEVERS.value) - set(LEVERS))
    if unknown:
        raise app.UsageError(f"--levers: unknown {', '.join(unknown)}; known: "
                             f"{', '.join(LEVERS)}.")
    try:
        result = comparison(
            config, [float(w) for w in _WIDTHS.value], targets,
            [int(s) for s in _SEEDS.value], _SCRATCH.value,
            _PAPER_INTERVAL.value if _PAPER.value else None, _JSON.value,
            _JOBS.value, _RUN_THREADS.value,
            _REPLAYS.value, *rounds, levers=_LEVERS.value)
    except ValueError as err:  # a results file made with other flags
        raise app.UsageError(str(err)) from None
    summary_report(result)


def summary_report(result: dict[str, Any]) -> dict[str, Any]:
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
    if _PNG.value:
        summary.plot(result, _PNG.value)
        print(f"plot: {_PNG.value}")
    return result


if __name__ == "__main__":
    common.define_flags(DEFAULTS)
    app.run(main)
