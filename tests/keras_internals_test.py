"""Keras internals: one module uses them, and the installed Keras has them."""

import ast
import os
import re

import keras
import numpy as np
import pytest

import tf_prunetrain
from tf_prunetrain import _keras

PACKAGE = os.path.dirname(os.path.abspath(tf_prunetrain.__file__))
SETUP = os.path.join(os.path.dirname(PACKAGE), "setup.py")
ACCESSORS = ("getattr", "hasattr", "setattr", "delattr")


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def violations(source: str, filename: str) -> list[str]:
    """Where `source` names `keras.src` or a private attribute of an object
    that is not `self`/`cls` or a module of this package."""
    tree = ast.parse(source, filename=filename)
    ours = {"self", "cls"}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(
                ".")[0] == "tf_prunetrain":
            ours |= {a.asname or a.name for a in node.names}
    found = [f"{filename}:{n}: keras.src"
             for n, line in enumerate(source.splitlines(), 1)
             if "keras.src" in line]
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and _private(node.attr)
                and not (isinstance(node.value, ast.Name)
                         and node.value.id in ours)):
            found.append(f"{filename}:{node.lineno}: {ast.unparse(node)}")
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                and node.func.id in ACCESSORS and len(node.args) > 1
                and isinstance(node.args[1], ast.Constant)
                and isinstance(node.args[1].value, str)
                and _private(node.args[1].value)):
            found.append(f"{filename}:{node.lineno}: {ast.unparse(node)}")
    return found


def test_every_internal_the_library_relies_on_exists():
    missing = _keras.missing()
    assert not missing, (
        f"Keras {keras.__version__} lacks internals tf_prunetrain relies on: "
        f"{', '.join(missing)}. Adapt tf_prunetrain/_keras.py to this Keras, "
        "or install a version setup.py allows.")


def test_only_the_internals_module_touches_keras_internals():
    found = []
    for name in sorted(os.listdir(PACKAGE)):
        if name.endswith(".py") and name != "_keras.py":
            with open(os.path.join(PACKAGE, name), encoding="utf-8") as f:
                found += violations(f.read(), name)
    assert not found, ("Keras internals outside tf_prunetrain/_keras.py:\n  "
                       + "\n  ".join(found))


@pytest.mark.parametrize("source, hit", [
    ("from keras.src.ops import nn\n", "keras.src"),
    ("def f(layer):\n    return layer._tracker\n", "layer._tracker"),
    ("def f(m):\n    return getattr(m, '_functional', None)\n",
     "getattr(m, '_functional', None)"),
    ("def f(m):\n    m._flag = True\n", "m._flag"),
])
def test_the_check_finds_internals(source, hit):
    assert any(hit in v for v in violations(source, "x.py"))


def test_the_check_allows_own_privates_and_dunders():
    source = ("from tf_prunetrain import _keras\n"
              "class A:\n"
              "    def f(self):\n"
              "        return self._x, _keras.history, type(self).__mro__\n")
    assert violations(source, "x.py") == []


def test_setup_pins_the_tested_keras_minor():
    with open(SETUP, encoding="utf-8") as f:
        pins = re.findall(r'"keras(>=[\d.]+,<[\d.]+)"', f.read())
    assert pins, "setup.py has no keras>=X,<Y requirement"
    low, high = re.match(r">=([\d.]+),<([\d.]+)", pins[0]).groups()

    def version(text):
        return tuple(int(p) for p in text.split(".")[:3])

    installed = version(keras.__version__)
    assert version(low) <= installed < version(high), (
        f"Keras {keras.__version__} is outside setup.py's keras{pins[0]}")
    # The bound is a minor version (e.g. <3.16), not the next major.
    assert len(version(high)) >= 2 and version(high)[1] > 0, pins[0]


class _Finder(keras.callbacks.Callback):
    """Records what `_keras.fit_callbacks` finds each time Keras sets the
    model on it (as `Reconfigure.set_model` does)."""

    def __init__(self):
        super().__init__()
        self.found = []

    def set_model(self, model):
        super().set_model(model)
        self.found.append(_keras.fit_callbacks(self))


def test_a_callback_finds_the_other_callbacks_of_its_fit():
    """`fit_callbacks` walks the call stack up to the `CallbackList` whose
    `set_model` runs: fails when Keras' fit, evaluate or predict set the
    model on their callbacks otherwise (Reconfigure would then miss the
    callbacks it tells of its cuts)."""
    x = keras.Input((4,))
    model = keras.Model(x, keras.layers.Dense(2)(x))
    model.compile("sgd", "mse")
    data = (np.ones((8, 4)), np.ones((8, 2)))
    finder, other = _Finder(), keras.callbacks.Callback()
    model.fit(*data, epochs=1, verbose=0, validation_data=data,
              callbacks=[other, finder])
    model.evaluate(*data, verbose=0, callbacks=[finder, other])
    model.predict(data[0], verbose=0, callbacks=[other, finder])
    assert [found[:2] for found in finder.found] == [
        [other, finder], [finder, other], [other, finder]]
    assert isinstance(finder.found[0][2], keras.callbacks.History)
    finder.set_model(model)  # not from a CallbackList
    assert finder.found[-1] == []
