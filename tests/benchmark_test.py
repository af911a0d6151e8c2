"""tools/benchmark.py on a tiny workload: the comparison is consistent."""

import json
import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tools"))

import benchmark  # noqa: E402  (tools/benchmark.py)
import common  # noqa: E402  (recipes/common.py, put on the path by benchmark)
import step_time  # noqa: E402  (tools/step_time.py)


def test_compare_reports_consistent_ratios():
    config = common.Config(model="resnet20", data="synthetic", image_size=16,
                           synthetic_size=64, epochs=2, interval=1,
                           batch_size=16, width_multiplier=0.25,
                           threshold=1.0, verbose=0)  # channels die at once
    result = benchmark.compare(config, rounds=2, steps=2)
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
    text = benchmark.table(result)
    assert "wall / FLOPs ratio" in text and "group-lasso step" in text


def test_comparison_runs_every_method_against_its_seeds_dense_run(tmp_path):
    config = common.Config(model="resnet20", data="synthetic", image_size=16,
                           synthetic_size=64, epochs=3, batch_size=16,
                           width_multiplier=0.5, proximal=True,
                           strength=0.05, validate=False, verbose=0)
    path = tmp_path / "comparison.json"
    result = benchmark.comparison(config, [0.5], [0.5], [0, 1],
                                  paper_interval=1, json_path=str(path))
    runs = result["runs"]
    settings = [("dense", None), ("thin", 0.5), ("prunetrain", 0.5),
                ("scratch", 0.5), ("paper", None)]
    assert [(r["seed"], r["method"], r["setting"]) for r in runs] == [
        (seed, *s) for seed in (0, 1) for s in settings]
    for seed in (0, 1):
        dense, thin, pruned, scratch, paper = (
            r for r in runs if r["seed"] == seed)
        assert dense["ratios"]["wall_time"] == 1.0
        # PruneTrain's dense reference is what the dense run spent.
        assert pruned["train_flops_dense"] == dense["train_flops_spent"]
        assert pruned["ratios"]["final_flops"] == pytest.approx(0.5, abs=0.05)
        # Half the widths: about a quarter of the FLOPs.
        assert 0.2 < thin["ratios"]["final_flops"] < 0.35
        # The control trains exactly the pruned architecture, dense.
        assert scratch["params"] == pruned["params"]
        assert scratch["inference_flops"] == pruned["inference_flops"]
        assert scratch["reconfiguration_seconds"] == 0
        assert scratch["train_flops_spent"] < pruned["train_flops_spent"]
        assert paper["ratios"]["train_flops"] <= 1.0
    summary = {row["label"]: row for row in result["summary"]}
    assert list(summary) == ["dense", "thin 0.5", "prunetrain 0.5",
                             "scratch 0.5", "paper"]
    assert summary["thin 0.5"]["seeds"] == 2
    assert summary["thin 0.5"]["top1"]["mean"] == pytest.approx(
        (runs[1]["accuracy"] + runs[6]["accuracy"]) / 2)
    assert json.loads(path.read_text())["summary"] == result["summary"]
    assert [g["goal"] for g in result["goals"]][0].startswith("no thin")
    text = benchmark.comparison_table(result)
    assert "scratch 0.5" in text and "reached" in text
    markdown = benchmark.comparison_markdown(result).splitlines()
    assert len(markdown) == 2 + len(settings)
    assert markdown[3].startswith(("| thin 0.5 |", "| **thin 0.5** |"))
    png = tmp_path / "comparison.png"
    benchmark.plot(result, str(png))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _row(label, wall, top1, points=0.0):
    method, _, value = label.partition(" ")
    return {"method": method, "setting": float(value) if value else None,
            "label": label, "wall_time": {"mean": wall},
            "top1": {"mean": top1}, "top1_points": {"mean": points}}


def test_goals_decide_from_setting_means():
    summary = [_row("dense", 1.0, 0.90), _row("thin 0.25", 0.45, 0.86),
               _row("thin 0.5", 0.6, 0.895),
               _row("prunetrain 0.25", 0.58, 0.893, -0.7),
               _row("prunetrain 0.5", 0.7, 0.899, -0.1)]
    front, quarter, sixty = benchmark.goals(summary)
    # thin 0.5 is slower than prunetrain 0.25, and faster but less accurate
    # than prunetrain 0.5: no thin setting is better on both axes.
    assert front["reached"] and front["detail"] == "none is"
    assert not quarter["reached"] and "as fast" in quarter["detail"]
    assert not sixty["reached"] and "-0.70" in sixty["detail"]
    summary[2] = _row("thin 0.5", 0.55, 0.9)
    front, _, _ = benchmark.goals(summary)
    assert not front["reached"]
    assert front["detail"] == ("thin 0.5 beats prunetrain 0.25; "
                               "thin 0.5 beats prunetrain 0.5")
    summary[3] = _row("prunetrain 0.25", 0.44, 0.885, -0.4)
    _, quarter, sixty = benchmark.goals(summary)
    assert quarter["reached"] and "+2.50 points" in quarter["detail"]
    assert sixty["reached"]


def test_step_time_fit_is_consistent_with_its_rows():
    result = step_time.measure(8, (8, 8, 1), 8, [1.0, 0.5], rounds=1, steps=1)
    full, half = result["rows"]
    assert full["flops"] == 1.0 and full["step"] == 1.0
    assert 0.2 < half["flops"] < 0.35  # about a quarter of the products
    # Two points: the line goes through both.
    assert result["fixed"] + result["per_flop"] == pytest.approx(1.0)
    assert result["fixed"] + result["per_flop"] * half["flops"] == \
        pytest.approx(half["step"])


@pytest.mark.parametrize("undo_slower", [False, True])
def test_target_epoch_and_undo_flags_are_prunetrains_alone(tmp_path,
                                                           undo_slower):
    """`--target_epoch=1` sets when PruneTrain meets its target and
    `--undo_slower` makes it undo slower cuts; the dense, thin and scratch
    runs of the same invocation must still validate."""
    base = common.Config(data="synthetic", epochs=4, target_epoch=1,
                         undo_slower=undo_slower)
    architecture = tmp_path / "arch.json"
    architecture.write_text("{}")
    for method, value in (("dense", None), ("thin", 0.5), ("scratch", 0.5),
                          ("prunetrain", 0.5), ("prunetrain_time", 0.5),
                          ("prunetrain_undo", 0.5)):
        config = benchmark._setting(base, method, value, 2,
                                    str(architecture))
        common.validate(config)
        pruned = method.startswith("prunetrain")
        assert config.target_epoch == (1 if pruned else None), method
        assert config.prunetrain == pruned
        assert config.undo_slower == (pruned and (
            undo_slower or method == "prunetrain_undo")), method
