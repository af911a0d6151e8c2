"""tools/benchmark.py on a tiny workload: the comparison is consistent."""

import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tools"))

import benchmark  # noqa: E402  (tools/benchmark.py)
import common  # noqa: E402  (recipes/common.py, put on the path by benchmark)


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
