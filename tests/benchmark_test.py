"""tools/comparison.py's comparison (tools/comparison.py) on a tiny
workload: the comparison is consistent, replayed, resumable, the same with
two jobs, and its goals follow the paired intervals; its methods run what
they name, and results files written before issue 41's names read with
today's (tools/results.py)."""

import dataclasses
import json
import os
import shutil

import pytest

import tf_prunetrain
from recipes import common
from tools import comparison
from tools import oneoffs
from tools import replay
from tools import results
from tools import step_time
from tools import summary
from tools import sweep
from tools import verdicts

RESULTS = os.path.join(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))), "tools", "results")


def test_compare_reports_consistent_ratios():
    config = common.Config(model="resnet20", data="synthetic", image_size=16,
                           synthetic_size=64, epochs=2, interval=1,
                           batch_size=16, width_multiplier=0.25,
                           threshold=1.0, round_to=1,
                           verbose=0)  # channels die at once
    result = comparison.compare(config, rounds=2, steps=2)
    dense, pruned, ratios = (result["dense"], result["prunetrain"],
                             result["ratios"])
    # The same steps on the same initial model: PruneTrain's dense reference
    # is what the dense run spent.
    assert pruned["train_flops_dense"] == dense["train_flops_spent"]
    assert ratios["train_flops"] == pytest.approx(
        pruned["train_flops_spent"] / dense["train_flops_spent"])
    assert ratios["train_flops"] < 1 and ratios["params"] < 1
    assert ratios["gradient_bytes"] < 1
    assert 0 < ratios["reconfiguration_share"] < 1
    assert result["group_lasso_overhead"]["ratio"] > 0
    text = comparison.table(result)
    assert "wall / FLOPs ratio" in text and "group-lasso step" in text


TINY = common.Config(model="resnet20", data="synthetic", image_size=16,
                     synthetic_size=64, epochs=3, batch_size=16,
                     width_multiplier=0.5, proximal=True, scales=True,
                     strength=0.05, round_to=1, validate=False, verbose=0)
SETTINGS = [("dense", None), ("thin", 0.5), ("prunetrain", 0.5),
            ("scratch", 0.5), ("paper", None)]


@pytest.fixture(scope="module")
def sweeps(tmp_path_factory):
    """The tiny comparison over seeds 0 and 1, run by one worker process
    (then replayed) and by two (not replayed)."""
    folder = tmp_path_factory.mktemp("sweeps")
    out = {}
    for jobs, rounds in ((1, 1), (2, 0)):
        path = folder / f"jobs{jobs}.json"
        result = comparison.comparison(
            TINY, [0.5], [0.5], [0, 1], paper_interval=1, json_path=str(path),
            jobs=jobs, replays=1, replay_rounds=rounds, replay_steps=1,
            replay_warmup=1)
        out[jobs] = (result, path)
    return out


def _item(segment):
    return (f"{segment['architecture']}:{segment['lasso']}"
            if segment["lasso"] else segment["architecture"])


def test_comparison_runs_every_method_against_its_seeds_dense_run(
        sweeps, tmp_path):
    result, path = sweeps[1]
    runs = result["runs"]
    assert [(r["seed"], r["method"], r["setting"]) for r in runs] == [
        (seed, *s) for seed in (0, 1) for s in SETTINGS]
    steps = result["replay"]["step_seconds"]
    for seed in (0, 1):
        dense, thin, pruned, scratch, paper = (
            r for r in runs if r["seed"] == seed)
        assert dense["ratios"]["wall_time"] == 1.0
        assert dense["ratios"]["replayed_time"] == 1.0
        # PruneTrain's dense reference is what the dense run spent.
        assert pruned["train_flops_dense"] == dense["train_flops_spent"]
        assert pruned["ratios"]["final_flops"] == pytest.approx(0.5, abs=0.05)
        # Half the widths: about a quarter of the FLOPs.
        assert 0.2 < thin["ratios"]["final_flops"] < 0.35
        # The control trains exactly the pruned architecture, dense.
        assert scratch["params"] == pruned["params"]
        assert scratch["inference_flops"] == pruned["inference_flops"]
        (only,) = scratch["timeline"]
        assert {k: only[k] for k in ("architecture", "lasso", "steps")} == {
            "architecture": pruned["final_architecture"], "lasso": "",
            "steps": sum(s["steps"] for s in pruned["timeline"])}
        assert scratch["train_flops_spent"] < pruned["train_flops_spent"]
        assert paper["ratios"]["train_flops"] <= 1.0
        # PruneTrain starts as the dense architecture, with its lasso.
        assert pruned["timeline"][0]["architecture"] == \
            dense["final_architecture"]
        assert pruned["timeline"][0]["lasso"] == "proximal+scales"
        assert paper["timeline"][0]["lasso"] == "loss"
        # The replay timed PruneTrain's cuts: they price its one-offs
        # (tools/oneoffs.py); runs without a cut keep their in-run 0.
        assert pruned["one_off_replayed"] > 0
        assert dense["one_off_replayed"] is None
        for run in (dense, thin, pruned, scratch, paper):
            one_off = run["one_off_replayed"]
            assert run["replayed_seconds"] == pytest.approx(
                sum(s["steps"] * steps[_item(s)] for s in run["timeline"])
                + (run["one_off_seconds"] if one_off is None else one_off))
    summary_rows = {row["label"]: row for row in result["summary"]}
    assert list(summary_rows) == ["dense", "thin 0.5", "prunetrain 0.5",
                                  "scratch 0.5", "paper"]
    assert summary_rows["thin 0.5"]["seeds"] == 2
    assert summary_rows["thin 0.5"]["top1"]["mean"] == pytest.approx(
        (runs[1]["accuracy"] + runs[6]["accuracy"]) / 2)
    pair = summary_rows["prunetrain 0.5"]["paired"]["scratch 0.5"]
    assert pair["differences"] == pytest.approx(
        [100 * (runs[k]["accuracy"] - runs[k + 1]["accuracy"])
         for k in (2, 7)])
    saved = json.loads(path.read_text())
    assert saved["summary"] == json.loads(json.dumps(result["summary"]))
    assert saved["replay"]["machine"]["cpu"]
    assert [g["goal"].split(":")[0] for g in result["goals"]] == [
        "architecture", "path", "worth it", "at thin 0.5's time, at least "
        "as accurate as thin 0.5"]
    assert {g["status"] for g in result["goals"]} <= {
        "reached", "missed", "not established"}
    text = summary.comparison_table(result)
    assert "scratch 0.5" in text and "replayed time" in text
    markdown = summary.comparison_markdown(result).split("\n\n")
    assert len(markdown[0].splitlines()) == 2 + len(SETTINGS)
    assert markdown[0].splitlines()[3].startswith(("| thin 0.5 |",
                                                   "| **thin 0.5** |"))
    png = tmp_path / "comparison.png"
    summary.plot(result, str(png))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_two_jobs_give_the_serial_top1_and_timelines(sweeps):
    serial, parallel = sweeps[1][0]["runs"], sweeps[2][0]["runs"]
    assert [(r["seed"], r["method"], r["setting"]) for r in parallel] == [
        (r["seed"], r["method"], r["setting"]) for r in serial]
    for one, two in zip(serial, parallel):
        assert (one["accuracy"], one["timeline"], one["channels"]) == (
            two["accuracy"], two["timeline"], two["channels"]), one["method"]
    assert "replay" not in sweeps[2][0]  # --replay_rounds=0: wall time
    assert summary.time_key(sweeps[2][0]) == "wall_time"


def test_replaying_a_results_file_again_combines_the_replays(sweeps,
                                                           tmp_path, capsys):
    _, path = sweeps[1]
    first = json.loads(path.read_text())
    assert len(first["replays"]) == 1 and first["replay"]["replays"] == 1
    out = tmp_path / "again.json"
    result = comparison.replay_file(str(path), str(out), replays=2, rounds=1,
                                   steps=1, warmup=1)
    replays = result["replays"]
    assert replays[0] == first["replays"][0] and len(replays) == 3
    dense = first["runs"][0]["timeline"][0]["architecture"]
    assert result["replay"]["step_seconds"] == replay.combine(
        [r["step_seconds"] for r in replays], dense)
    assert result["replay"]["replays"] == 3
    # Priced on the combined replays, the cuts' one-offs too (each one's
    # median ratio to dense's step, as the steps).
    run = result["runs"][2]
    assert set(result["replay"]["cuts"]) == set(replays[1]["cuts"])
    assert run["replayed_seconds"] == pytest.approx(
        sum(s["steps"] * result["replay"]["step_seconds"][_item(s)]
            for s in run["timeline"])
        + oneoffs.one_off_seconds(run, result["replay"]["cuts"]))
    agreement = comparison.replay_agreement(result, replays[1],
                                           first["replay"])
    assert set(agreement) == {"thin 0.5", "prunetrain 0.5", "scratch 0.5",
                              "paper"}
    printed = capsys.readouterr().out
    assert "replay 1/2: its time ratios against the earlier 1 combined" in \
        printed and "replay 2/2" in printed
    assert json.loads(out.read_text())["runs"] == json.loads(
        json.dumps(result["runs"]))


def test_a_sweep_resumes_from_its_file_and_refuses_other_flags(tmp_path):
    config = dataclasses.replace(TINY, epochs=1)
    path = str(tmp_path / "sweep.json")
    first = comparison.comparison(config, [0.5], [], [0], json_path=path,
                                 replay_rounds=0)
    assert [r["method"] for r in first["runs"]] == ["dense", "thin"]
    again = comparison.comparison(config, [0.5, 0.25], [], [0, 1],
                                 json_path=path, replay_rounds=0)
    # Seed 0's two runs are the file's, not trained again.
    assert again["runs"][:2] == json.loads(json.dumps(first["runs"]))
    assert [(r["seed"], r["method"], r["setting"]) for r in again["runs"]] \
        == [(0, "dense", None), (0, "thin", 0.5), (0, "thin", 0.25),
            (1, "dense", None), (1, "thin", 0.5), (1, "thin", 0.25)]
    assert again["seeds"] == [0, 1]
    other = dataclasses.replace(config, epochs=2, learning_rate=0.05)
    with pytest.raises(ValueError, match=r"--epochs=1 there, 2 now; "
                       r"--learning_rate=0.1 there, 0.05 now"):
        comparison.comparison(other, [0.5], [], [0], json_path=path,
                             replay_rounds=0)
    with pytest.raises(ValueError, match=r"--run_threads=1 there, 2 now"):
        comparison.comparison(config, [0.5], [], [0], json_path=path,
                             run_threads=2, replay_rounds=0)
    old = tmp_path / "old.json"
    old.write_text(json.dumps({"config": {}, "runs": []}))
    with pytest.raises(ValueError, match="no architecture timelines"):
        comparison.comparison(config, [0.5], [], [0], json_path=str(old))


def _row(label, time, top1, final_flops=0.5, paired=None):
    method, _, value = label.partition(" ")
    return {"method": method, "setting": float(value) if value else None,
            "label": label, "replayed_time": {"mean": time},
            "top1": {"mean": top1}, "final_flops": {"mean": final_flops},
            "paired": paired or {}}


def _pair(mean, low, high):
    return {"mean": mean, "low": low, "high": high, "seeds": 5,
            "verdict": verdicts.verdict(low, high)}


def test_goals_are_decided_by_paired_intervals_not_means():
    rows = [
        _row("dense", 1.0, 0.90, 1.0),
        _row("thin 0.5", 0.4, 0.89, 0.25),
        _row("thin 0.75", 0.7, 0.90, 0.56),
        _row("prunetrain 0.5", 0.6, 0.887, 0.5, {
            "scratch 0.5": _pair(-1.0, -1.6, -0.4),
            "thin 0.5": _pair(-0.3, -0.7, 0.1),
            "thin 0.75": _pair(-0.8, -1.4, -0.2)}),
        _row("scratch 0.5", 0.5, 0.897, 0.5, {
            "thin 0.75": _pair(-0.3, -0.9, 0.2)})]

    def goals():
        return {g["goal"].split(":")[0]: g for g in
                summary.goals(rows, "replayed_time")}

    decided = goals()
    # scratch 0.5's final FLOPs (0.5) are nearest thin 0.75's (0.56).
    assert "scratch 0.5 >= thin 0.75" in decided["architecture"]["goal"]
    assert decided["architecture"]["status"] == "not established"
    assert decided["path"]["status"] == "missed"
    # thin 0.5 is faster and more accurate on the mean only; thin 0.75 is
    # slower than prunetrain 0.5 (0.7 vs 0.6): it does not count.
    worth = decided["worth it"]
    assert worth["status"] == "not established"
    assert "thin 0.5 (0.400x) is faster than prunetrain 0.5" in \
        worth["detail"] and "thin 0.75" not in worth["detail"]
    half = "at thin 0.5's time, at least as accurate as thin 0.5"
    assert decided[half]["status"] == "missed"  # none is that fast
    assert "no PruneTrain setting is as fast" in decided[half]["detail"]
    rows[3]["paired"]["thin 0.5"] = _pair(-0.9, -1.5, -0.3)
    rows[1]["replayed_time"]["mean"] = 0.65  # now slower than PruneTrain
    decided = goals()
    assert decided["worth it"]["status"] == "reached"
    assert decided[half]["status"] == "missed"  # -0.9 [-1.5, -0.3]
    rows[1]["replayed_time"]["mean"] = 0.5
    decided = goals()
    assert decided["worth it"]["status"] == "missed"
    assert "thin 0.5 (0.500x) is faster than prunetrain 0.5 (0.600x) and " \
        "more accurate (established)" in decided["worth it"]["detail"]


def test_a_lever_without_scratch_runs_pairs_with_the_same_architecture():
    def run(seed, method, setting, accuracy, architecture):
        return {"seed": seed, "method": method, "setting": setting,
                "accuracy": accuracy, "final_architecture": architecture,
                "train_seconds": 10.0, "one_off_seconds": 0.0,
                **{key: 1.0 for key in summary._RATIOS.values()}}

    runs = []
    for seed in range(3):
        runs += [run(seed, "dense", None, 0.9, "d"),
                 run(seed, "prunetrain_a", 0.5, 0.85, f"a{seed}"),
                 run(seed, "scratch_a", 0.5, 0.88 + seed / 100, f"a{seed}"),
                 run(seed, "prunetrain_b", 0.5, 0.86, f"a{seed}"),
                 run(seed, "prunetrain_c", 0.5, 0.87, "other")]
    result = {"runs": runs}
    summary.annotate(result)
    rows = {r["label"]: r for r in summary.summarize(result)}
    # b trained a's widths on every seed: a's scratch runs are its control.
    assert rows["prunetrain_a 0.5"]["scratch"] == "scratch_a 0.5"
    assert rows["prunetrain_b 0.5"]["scratch"] == "scratch_a 0.5"
    assert rows["prunetrain_b 0.5"]["paired"]["scratch_a 0.5"]["mean"] == \
        pytest.approx(-3.0)
    assert "scratch" not in rows["prunetrain_c 0.5"]  # no such control
    paths = [g["goal"] for g in summary.goals(
        list(rows.values()), "wall_time") if g["goal"].startswith("path")]
    assert paths == ["path: prunetrain_a 0.5 >= scratch_a 0.5",
                     "path: prunetrain_b 0.5 >= scratch_a 0.5"]


def test_step_time_fit_is_consistent_with_its_rows():
    result = step_time.measure(8, (8, 8, 1), 8, [1.0, 0.5], rounds=1, steps=1)
    full, half = result["rows"]
    assert full["flops"] == 1.0 and full["step"] == 1.0
    assert 0.2 < half["flops"] < 0.35  # about a quarter of the products
    # Two points: the line goes through both.
    assert result["fixed"] + result["per_flop"] == pytest.approx(1.0)
    assert result["fixed"] + result["per_flop"] * half["flops"] == \
        pytest.approx(half["step"])
    # Replayed, and named: the machine it was measured on.
    assert full["widths"] == [16, 32, 64] and half["widths"] == [8, 16, 32]
    assert result["machine"]["cpu"] and result["machine"]["cores"] >= 1


def test_target_epoch_is_prunetrains_alone(tmp_path):
    """`--target_epoch=1` sets when PruneTrain meets its target; the dense,
    thin and scratch runs of the same invocation must still validate."""
    base = common.Config(data="synthetic", epochs=4, target_epoch=1)
    architecture = tmp_path / "arch.json"
    architecture.write_text("{}")
    for method, value in (("dense", None), ("thin", 0.5), ("scratch", 0.5),
                          ("prunetrain", 0.5)):
        config = comparison.setting_config(base, method, value, 2)
        if method == "scratch":  # runs.train sets its JSON file
            config = dataclasses.replace(config, architecture=str(
                architecture))
        common.validate(config)
        pruned = method == "prunetrain"
        assert config.target_epoch == (1 if pruned else None), method
        assert config.prunetrain == pruned
        assert config.flops_target == (0.5 if pruned else None), method


def test_a_lever_is_a_prunetrain_method_with_its_own_scratch_control(
        tmp_path):
    config = dataclasses.replace(TINY, epochs=1)
    # `prunetrain` is the library's default cut: the workloads leave the
    # recipes' default, which is FlopsBudget's (thin widths, gentle).
    assert (comparison.DEFAULTS.ranking, comparison.DEFAULTS.gentle) == \
        ("thin_widths", True) == (common.Config().ranking,
                                  common.Config().gentle)
    assert isinstance(tf_prunetrain.FlopsBudget(0.5).ranking,
                      tf_prunetrain.budget.ThinWidths)
    assert tf_prunetrain.FlopsBudget(0.5).gentle is True
    pruned = comparison.setting_config(config, "prunetrain", 0.5, 0)
    assert (pruned.ranking, pruned.gentle, pruned.flops_target) == \
        ("thin_widths", True, 0.5)
    old = comparison.setting_config(config, "prunetrain_norm_per_flop", 0.5,
                                    0)
    assert (old.ranking, old.gentle) == ("norm_per_flop", False)
    abrupt = comparison.setting_config(config, "prunetrain_thin_widths",
                                       0.5, 0)
    assert (abrupt.ranking, abrupt.gentle) == ("thin_widths", False)
    control = comparison.setting_config(config, "scratch_norm_per_flop",
                                        0.5, 0)
    assert not control.prunetrain and control.width_multiplier == 1.0
    assert summary.scratch_of("prunetrain_norm_per_flop") == \
        "scratch_norm_per_flop"
    # A file written before a recipe flag existed ran at its default then:
    # before --ranking and --gentle, 0.2's cut. Read with today's names,
    # its `prunetrain` runs are `prunetrain_norm_per_flop`, and its config
    # holds the default cut (what `prunetrain` runs now): it resumes.
    path = tmp_path / "before.json"
    state = comparison.load_state(None, config, 0, 1)
    assert state["names"] == results.NAMES
    del state["config"]["ranking"], state["config"]["gentle"], \
        state["names"]
    state["runs"] = [{"seed": 0, "method": "prunetrain", "setting": 0.5}]
    path.write_text(json.dumps(state))
    loaded = comparison.load_state(str(path), config, 0, 1)
    assert [r["method"] for r in loaded["runs"]] == [
        "prunetrain_norm_per_flop"]
    with pytest.raises(ValueError, match="--ranking='thin_widths' there, "
                       "'norm_per_flop' now"):
        comparison.load_state(str(path), dataclasses.replace(
            config, ranking="norm_per_flop"), 0, 1)
    with pytest.raises(ValueError, match="--gentle=True there, False now"):
        comparison.load_state(str(path), dataclasses.replace(
            config, gentle=False), 0, 1)


# Before issue 41 (tools/benchmark.py then): the workloads pinned 0.2's cut
# and each lever set only what it changed. Every method's recipe config is
# kept: (today's name, the name it had, the levers then).
_OLD_CUT = {"ranking": "norm_per_flop", "gentle": False}
_OLD_LEVERS = {
    "thin_widths": {"ranking": "thin_widths"},
    "thin_gentle": {"ranking": "thin_widths", "gentle": True},
    "thin_gentle_no_lasso": {"ranking": "thin_widths", "gentle": True,
                             "strength": 0.0},
    "eb_gentle": {"ranking": "thin_widths", "gentle": True,
                  "early_bird": True},
    "eb_gentle_rewarm": {"ranking": "thin_widths", "gentle": True,
                         "early_bird": True, "rewarm_epochs": 1.0}}
_RENAMED = {"prunetrain": "prunetrain_thin_gentle",
            "scratch": "scratch_thin_gentle",
            "prunetrain_norm_per_flop": "prunetrain",
            "scratch_norm_per_flop": "scratch"}


def _old_setting(base, method, value):
    """tools/benchmark.py's `_setting` before issue 41, on its workloads."""
    if method.startswith("prunetrain"):
        lever = _OLD_LEVERS[method[len("prunetrain_"):]] \
            if "_" in method else {}
        return dataclasses.replace(base, prunetrain=True, flops_target=value,
                                   **lever)
    return comparison.setting_config(base, method, value, 2)


@pytest.mark.parametrize("workload", ["fashion_mnist", "mnist5k"])
def test_every_method_trains_what_it_trained_before_the_rename(workload):
    new_base = dataclasses.replace(comparison.WORKLOADS[workload], seed=3)
    old_base = dataclasses.replace(new_base, **_OLD_CUT)
    methods = ["dense", "thin", "paper", "prunetrain", "scratch"] + [
        f"{kind}_{lever}" for lever in comparison.LEVERS
        if lever in _OLD_LEVERS  # the levers of then (not issue 38's)
        for kind in ("prunetrain", "scratch")]
    for method in methods:
        new = comparison.setting_config(new_base, method, 0.5, 2)
        old = _old_setting(old_base, _RENAMED.get(method, method), 0.5)
        if new.prunetrain and new.flops_target is not None:
            assert new == old, method  # the cut and everything else
        else:  # no budget cut: --ranking and --gentle are not read
            assert new == dataclasses.replace(
                old, ranking=new.ranking, gentle=new.gentle), method
    # MobileNetV2's workload ran the default cut as `prunetrain` already.
    mobile = comparison.WORKLOADS["fashion_mnist_mobilenetv2"]
    assert comparison.setting_config(mobile, "prunetrain", 0.5, 2) == \
        _old_setting(mobile, "prunetrain", 0.5)


def test_old_method_names_are_read_as_todays():
    def old(config, *methods):
        return {"config": config, "runs": [{"method": m, "accuracy": i}
                                           for i, m in enumerate(methods)]}

    before_flags = results.upgrade_names(old(
        {}, "dense", "prunetrain", "scratch", "prunetrain_thin_gentle",
        "prunetrain_thin_widths", "scratch_thin_widths", "prunetrain_time"))
    assert [r["method"] for r in before_flags["runs"]] == [
        "dense", "prunetrain_norm_per_flop", "scratch_norm_per_flop",
        "prunetrain", "prunetrain_thin_widths", "scratch_thin_widths",
        "prunetrain_time"]
    assert [r["accuracy"] for r in before_flags["runs"]] == list(range(7))
    assert before_flags["names"] == 2
    assert before_flags["config"] == {"ranking": "thin_widths",
                                      "gentle": True}
    # Read again (marked): nothing changes.
    again = results.upgrade_names(json.loads(json.dumps(before_flags)))
    assert again == before_flags
    # A sweep whose config was the default cut already (MobileNetV2's).
    default = results.upgrade_names(old(
        {"ranking": "thin_widths", "gentle": True}, "prunetrain", "scratch"))
    assert [r["method"] for r in default["runs"]] == ["prunetrain",
                                                      "scratch"]
    abrupt = results.upgrade_names(old(
        {"ranking": "thin_widths", "gentle": False}, "prunetrain"))
    assert abrupt["runs"][0]["method"] == "prunetrain_thin_widths"
    with pytest.raises(ValueError, match="no method of today names"):
        results.upgrade_names(old({"ranking": "norm_per_flop",
                                   "gentle": True}, "prunetrain"))
    with pytest.raises(ValueError, match="two methods one name"):
        results.upgrade_names(old({"ranking": "thin_widths",
                                   "gentle": True}, "prunetrain",
                                  "prunetrain_thin_gentle"))


def test_the_committed_results_read_with_todays_names():
    # An old file, written before the rename, is read with today's names.
    path = os.path.join(RESULTS, "comparison_fashion_mnist_5seeds.json")
    old, raw = comparison.read_results(path), results.read(path)
    assert "names" not in raw  # written before the rename
    renamed = {"prunetrain": "prunetrain_norm_per_flop",
               "scratch": "scratch_norm_per_flop",
               "prunetrain_thin_gentle": "prunetrain"}
    assert [r["method"] for r in old["runs"]] == [
        renamed.get(r["method"], r["method"]) for r in raw["runs"]]
    # The numbers are the file's, run by run.
    assert [r["accuracy"] for r in old["runs"]] == [
        r["accuracy"] for r in raw["runs"]]
    # The levers file was written again with today's names (issue 40's
    # replays): thin_gentle's runs are `prunetrain`.
    levers = comparison.read_results(os.path.join(
        RESULTS, "levers_fashion_mnist_5seeds.json"))
    methods = [r["method"] for r in levers["runs"]]
    assert methods.count("prunetrain_norm_per_flop") == 10
    assert methods.count("scratch_norm_per_flop") == 10
    assert methods.count("prunetrain") == 10
    assert "prunetrain_thin_gentle" not in methods
    # MobileNetV2's sweep ran the default cut as `prunetrain`: kept.
    mobile = comparison.read_results(os.path.join(
        RESULTS, "mobilenetv2_fashion_mnist_5seeds.json"))
    assert {r["method"] for r in mobile["runs"]} == {
        "dense", "thin", "prunetrain", "scratch"}


def test_resuming_a_file_written_before_the_rename_runs_nothing_again(
        tmp_path, monkeypatch):
    """The levers sweep's own command, on a copy of its file: every run it
    asks for is in the file under today's names, so none trains."""
    path = tmp_path / "levers.json"
    shutil.copy(os.path.join(RESULTS, "levers_fashion_mnist_5seeds.json"),
                path)
    runs = len(results.read(str(path))["runs"])
    asked = []
    monkeypatch.setattr(sweep, "run_tasks", lambda tasks, *a, **k:
                        asked.extend(tasks))
    result = comparison.comparison(
        comparison.DEFAULTS, [0.25, 0.375, 0.5, 0.7, 0.75], [0.25, 0.5],
        range(5), scratch=False, json_path=str(path), replay_rounds=0,
        levers=["norm_per_flop", "thin_widths", "thin_gentle_no_lasso",
                "eb_gentle", "eb_gentle_rewarm"])
    assert asked == []
    saved = json.loads(path.read_text())
    assert saved["names"] == 2 and len(saved["runs"]) == runs
    labels = {row["label"] for row in saved["summary"]}
    assert {"prunetrain 0.25", "prunetrain_norm_per_flop 0.25",
            "scratch_norm_per_flop 0.5"} <= labels
    assert saved["replay"] == result["replay"]  # its replays still price it


def test_mobilenetv2_workload_builds_keras_applications_at_its_widths():
    config = comparison.WORKLOADS["fashion_mnist_mobilenetv2"]
    common.validate(config)
    assert config.model == "mobilenetv2" and config.image_size == 32
    defaults = comparison.SWEEP_DEFAULTS["fashion_mnist_mobilenetv2"]
    assert defaults["targets"] == ["0.125", "0.25", "0.5"]
    for width, target in zip(defaults["widths"], defaults["targets"]):
        thin = comparison.setting_config(config, "thin", float(width), 0)
        model = common.build_model(thin, (32, 32, 1), 10)
        assert model.name.startswith(f"mobilenetv2_{float(width):.2f}")
        dense = common.build_model(config, (32, 32, 1), 10)
        ratio = tf_prunetrain.cost.forward_flops(model) \
            / tf_prunetrain.cost.forward_flops(dense)
        assert abs(ratio - float(target)) < 0.015  # a thin of equal FLOPs
    assert {layer.momentum for layer in model.layers
            if hasattr(layer, "moving_mean")} == {common.MOBILENET_BN_MOMENTUM}
    with pytest.raises(ValueError, match="--model=mobilenetv2 needs images "
                       "of at least 32x32.*add --image_size=32"):
        common.build_model(thin, (28, 28, 1), 10)
