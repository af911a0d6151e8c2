"""Re-timing a sweep's results: every architecture (and lasso kind) its
runs trained, replayed side by side in a fresh process (`tools.replay`),
several times, and the runs priced on all the replays combined.

`tools.comparison` and `tools.pretrained` replay their sweeps at the end
(or a results file again, `--replay=results.json`).
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
import time
from typing import Any, Callable

import keras

import tf_prunetrain
from recipes import common
from tools import oneoffs
from tools import replay as replay_lib
from tools import runs
from tools import sweep

# Rounds of the cuts' one-offs per replay (each builds and traces a model).
CUT_ROUNDS = 2

# (results, one replay, the replays before it combined) -> per setting, how
# far the new replay's time ratios are from the earlier ones (a fraction).
Agreement = Callable[[dict[str, Any], dict[str, Any], dict[str, Any]],
                     dict[str, float]]


def config_of(result: dict[str, Any]) -> common.Config:
    """The recipe config a results file was swept with (its `config`;
    fields it lacks at their defaults)."""
    fields = {f.name for f in dataclasses.fields(common.Config)}
    values = {k: v for k, v in result["config"].items() if k in fields}
    values["lr_decay_epochs"] = tuple(values["lr_decay_epochs"])
    return common.Config(**values)


def replay_model(config: common.Config, data: common.Data, item: str,
                 architectures: dict[str, str], folder: str) -> keras.Model:
    """The compiled model a replay item trains: its architecture with fresh
    weights, the lasso of its kind when on, the recipe's optimizer, and
    its teacher's term (`experimental.distillation.attach`: a model of the
    teacher's architecture, fresh weights) when one taught it."""
    architecture, lasso, teacher = replay_lib.split_item(item)
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
    if teacher:
        teacher_path = os.path.join(folder, f"{teacher}.json")
        with open(teacher_path, "w", encoding="utf-8") as f:
            f.write(architectures[teacher])
        tf_prunetrain.experimental.distillation.attach(
            model, common.build_model(dataclasses.replace(
                config, architecture=teacher_path), data.shape,
                data.num_classes),
            config.distill_temperature, config.distill_weight,
            from_logits=True)
    return model


def replay_runs(result: dict[str, Any], rounds: int, steps: int,
                warmup: int, cut_rounds: int = CUT_ROUNDS) -> dict[str, Any]:
    """Times the train step of every architecture (and lasso kind) the runs
    trained, with the sweep's batch size, optimizer, precision and input
    pipeline, in round-robin rounds (`tools.replay.time_models`), then
    their cuts' one-offs in `cut_rounds` rounds (`tools.oneoffs`)."""
    start = time.perf_counter()
    config = config_of(result)
    keys = replay_lib.items(s for r in result["runs"] for s in r["timeline"])
    info = replay_lib.machine()
    print(f"replay: {len(keys)} architectures, {rounds} rounds x {steps} "
          f"steps, on {replay_lib.describe(info)}", flush=True)
    runs.fresh_state()
    data = common.load_data(config)

    def dataset() -> Any:
        return data.train(config.batch_size, False, 0, None)[0]

    policy = keras.mixed_precision.global_policy()
    if config.mixed_precision:
        keras.mixed_precision.set_global_policy("mixed_float16")
    said = lambda line: print(line, flush=True)  # noqa: E731
    try:
        with tempfile.TemporaryDirectory() as folder:
            models = {key: replay_model(config, data, key,
                                        result["architectures"], folder)
                      for key in keys}
            seconds = replay_lib.time_models(models, dataset, rounds, steps,
                                             warmup, progress=said)
            del models
            runs.fresh_state()
            cuts = oneoffs.replay_cuts(
                lambda item: replay_model(config, data, item,
                                          result["architectures"], folder),
                result["runs"], result["architectures"], dataset,
                cut_rounds, warmup + steps, said) if cut_rounds else {}
    finally:
        keras.mixed_precision.set_global_policy(policy)
    runs.fresh_state()
    return {"machine": info, "rounds": rounds, "steps": steps,
            "warmup": warmup, "step_seconds": seconds, "cut_rounds":
            cut_rounds, "cuts": cuts, "seconds": time.perf_counter() - start,
            "date": time.strftime("%Y-%m-%d %H:%M")}


def reference(result: dict[str, Any]) -> str:
    """The replay item ratios are taken against: the dense architecture,
    else the one trained for the most steps.

    >>> reference({"runs": [
    ...     {"method": "thin", "timeline": [
    ...         {"architecture": "t", "lasso": "", "steps": 9}]},
    ...     {"method": "prunetrain", "timeline": [
    ...         {"architecture": "d", "lasso": "proximal", "steps": 5},
    ...         {"architecture": "p", "lasso": "", "steps": 5}]}]})
    't'
    """
    steps: dict[str, int] = {}
    for run in result["runs"]:
        for segment in run["timeline"]:
            item = replay_lib.segment_item(segment)
            if run["method"] == "dense":
                return item
            steps[item] = steps.get(item, 0) + segment["steps"]
    return max(steps, key=steps.get)


def allocator(replay: dict[str, Any]) -> str:
    """The allocator a replay's process ran on (`replay.machine`; older
    replays: the C library's malloc)."""
    return replay["machine"].get("allocator", "malloc")


def add_replay(result: dict[str, Any], new: dict[str, Any]) -> None:
    """Adds one replay to `result["replays"]` and sets `result["replay"]`,
    what prices the runs: every replay so far on the new one's allocator,
    combined (`replay.combine`; the allocator moves step times, issue 40)."""
    result.setdefault("replays", []).append(new)
    replays = [r for r in result["replays"]
               if allocator(r) == allocator(new)]
    base = reference(result)
    steps = replay_lib.combine([r["step_seconds"] for r in replays], base)
    result["replay"] = {
        **{k: new[k] for k in ("machine", "rounds", "steps", "warmup",
                               "date")},
        "replays": len(replays), "seconds": sum(r["seconds"] for r in replays),
        "step_seconds": steps,
        "cuts": oneoffs.combine(replays, base, steps[base])}


def replay_many(result: dict[str, Any], replays: int, rounds: int,
                steps: int, warmup: int,
                agreement: Agreement | None = None,
                cut_rounds: int = CUT_ROUNDS) -> None:
    """`replays` replays of `result`'s runs, one after another, each in a
    fresh process with all of this machine's threads (a process's own
    state, such as the kernels TensorFlow picked, then varies between
    replays and is outvoted), added to `result` (`add_replay`). With
    `agreement`, prints how far each new replay's time ratios are from the
    ones before, combined."""
    def done(task: int, new: dict[str, Any]) -> None:
        earlier = result.get("replay")
        if earlier and agreement is not None:
            print(f"replay {task + 1}/{replays}: its time ratios against the "
                  f"earlier {earlier.get('replays', 1)} combined: " + ", ".join(
                      f"{name} {change:+.2%}" for name, change in
                      agreement(result, new, earlier).items()),
                  flush=True)
        add_replay(result, new)

    sweep.run_tasks(range(replays), lambda task: (result, rounds, steps,
                                                  warmup, cut_rounds),
                    replay_runs, done, jobs=1, threads=os.cpu_count() or 1,
                    fresh=True)
