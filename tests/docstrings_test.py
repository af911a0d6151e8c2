"""The runnable examples in public docstrings run and print what they say."""

import doctest
import importlib
import importlib.util
import os

import pytest

_ROOT = os.path.join(os.path.dirname(__file__), "..")

MODULES = ["tf_prunetrain._checks", "tf_prunetrain.budget",
           "tf_prunetrain.checkpoint", "tf_prunetrain.cost",
           "tf_prunetrain.coupling",
           "tf_prunetrain.data", "tf_prunetrain.distribute",
           "tf_prunetrain.dynamic_batch", "tf_prunetrain.export",
           "tf_prunetrain.handlers", "tf_prunetrain.keras_callbacks",
           "tf_prunetrain.latency",
           "tf_prunetrain.planning",
           "tf_prunetrain.reconfigure", "tf_prunetrain.regularizers",
           "tf_prunetrain.runlog", "tf_prunetrain.schedules",
           "tf_prunetrain.fading", "tf_prunetrain.experimental",
           "tf_prunetrain.experimental.rewarm",
           "tf_prunetrain.experimental.recalibration",
           "tf_prunetrain.experimental.distillation",
           "tf_prunetrain.experimental.search",
           "tf_prunetrain.experimental.early_bird", "tf_prunetrain.importance",
           "tf_prunetrain.surgery",
           "tf_prunetrain.models", "tf_prunetrain.tfmot_interop",
           # The benchmark's instruments (the tools and recipes packages).
           "recipes.common", "recipes.timeline", "tools.comparison",
           "tools.oneoffs", "tools.pretrained", "tools.replay", "tools.results",
           "tools.retime", "tools.runs", "tools.spread", "tools.summary",
           "tools.sweep",
           "tools.verdicts"]
# Modules whose examples need an optional extra: the packages it brings.
# (Looked up, not imported: importing TFMOT changes the process' Keras.)
NEEDS = {"tf_prunetrain.tfmot_interop": (
    "tf_keras", "tensorflow_model_optimization")}


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    missing = [package for package in NEEDS.get(name, ())
               if not importlib.util.find_spec(package)]
    if missing:
        pytest.skip(f"{name}'s examples need {', '.join(missing)}: the "
                    "optional extra its docstring names is not installed")
    result = doctest.testmod(importlib.import_module(name),
                             optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0, f"{name} has no runnable example"
    assert result.failed == 0


def test_every_module_with_an_example_is_listed():
    """A module of tf_prunetrain/, tools/ or recipes/ whose docstrings show
    `>>>` examples is in MODULES (a new module, e.g. `schedules`, is not
    silently skipped)."""
    with_examples = set()
    for package in ("tf_prunetrain", "tools", "recipes"):
        folder = os.path.join(_ROOT, package)
        for filename in os.listdir(folder):
            if filename.endswith(".py") and filename != "__init__.py":
                with open(os.path.join(folder, filename),
                          encoding="utf-8") as f:
                    if ">>>" in f.read():
                        with_examples.add(f"{package}.{filename[:-3]}")
    assert {"tf_prunetrain.schedules", "tools.results",
            "tf_prunetrain.latency"} <= with_examples
    assert sorted(with_examples - set(MODULES)) == []
