"""The public API: every name in `__all__` exists, and moved names still
import from their old modules as the same objects."""

import importlib

import pytest

import tf_prunetrain

# (old module, name, where it lives now)
MOVED = [
    ("tf_prunetrain.group_lasso", "add_group_lasso", "tf_prunetrain.regularizers"),
    ("tf_prunetrain.proximal", "ProximalStep", "tf_prunetrain.regularizers"),
    ("tf_prunetrain.proximal", "attach_proximal_step", "tf_prunetrain.regularizers"),
    ("tf_prunetrain.surgery", "Plan", "tf_prunetrain.planning"),
    ("tf_prunetrain.surgery", "plan_pruning", "tf_prunetrain.planning"),
    ("tf_prunetrain.surgery", "MergeEdit", "tf_prunetrain.planning"),
    ("tf_prunetrain.distribute", "fix_multi_worker_fit", "tf_prunetrain._keras"),
]


def test_every_public_name_exists():
    missing = [n for n in tf_prunetrain.__all__ if not hasattr(tf_prunetrain, n)]
    assert not missing
    for name in ("register_layer", "zero_channels", "lasso_variables"):
        assert name in tf_prunetrain.__all__


@pytest.mark.parametrize("old, name, new", MOVED)
def test_old_import_paths_keep_working(old, name, new):
    moved = getattr(importlib.import_module(old), name)
    assert moved is getattr(importlib.import_module(new), name)
    assert moved.__module__ == new


def test_the_top_level_names_are_the_modules_own():
    assert tf_prunetrain.Plan is importlib.import_module(
        "tf_prunetrain.planning").Plan
    assert tf_prunetrain.add_group_lasso is importlib.import_module(
        "tf_prunetrain.regularizers").add_group_lasso
