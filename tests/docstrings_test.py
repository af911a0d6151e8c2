"""The runnable examples in public docstrings run and print what they say."""

import doctest
import importlib

import pytest

MODULES = ["tf_prunetrain.checkpoint", "tf_prunetrain.cost",
           "tf_prunetrain.coupling",
           "tf_prunetrain.data", "tf_prunetrain.distribute",
           "tf_prunetrain.dynamic_batch", "tf_prunetrain.export",
           "tf_prunetrain.group_lasso", "tf_prunetrain.proximal",
           "tf_prunetrain.reconfigure", "tf_prunetrain.regularizers",
           "tf_prunetrain.runlog", "tf_prunetrain.surgery",
           "tf_prunetrain.models"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    result = doctest.testmod(importlib.import_module(name),
                             optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0, f"{name} has no runnable example"
    assert result.failed == 0
