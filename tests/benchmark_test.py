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


def test_sweep_reports_each_target_against_its_seeds_dense_run(tmp_path):
    config = common.Config(model="resnet20", data="synthetic", image_size=16,
                           synthetic_size=64, epochs=3, batch_size=16,
                           width_multiplier=0.5, proximal=True,
                           strength=0.05, verbose=0)
    path = tmp_path / "sweep.json"
    result = benchmark.sweep(config, [0.5], [0, 1], str(path))
    runs = result["runs"]
    assert [(r["seed"], r["target"]) for r in runs] == [
        (0, None), (0, 0.5), (1, None), (1, 0.5)]
    for dense, pruned in (runs[0:2], runs[2:4]):
        assert pruned["train_flops_dense"] == dense["train_flops_spent"]
        assert pruned["ratios"]["final_flops"] == pytest.approx(0.5, abs=0.03)
    summary = result["summary"]["0.5"]
    assert summary["seeds"] == 2
    assert summary["final_flops"]["mean"] == pytest.approx(
        (runs[1]["ratios"]["final_flops"] + runs[3]["ratios"]["final_flops"])
        / 2)
    assert json.loads(path.read_text())["summary"]["0.5"] == summary
    assert "0.5" in benchmark.sweep_table(result)


def test_step_time_fit_is_consistent_with_its_rows():
    result = step_time.measure(8, (8, 8, 1), 8, [1.0, 0.5], rounds=1, steps=1)
    full, half = result["rows"]
    assert full["flops"] == 1.0 and full["step"] == 1.0
    assert 0.2 < half["flops"] < 0.35  # about a quarter of the products
    # Two points: the line goes through both.
    assert result["fixed"] + result["per_flop"] == pytest.approx(1.0)
    assert result["fixed"] + result["per_flop"] * half["flops"] == \
        pytest.approx(half["step"])
