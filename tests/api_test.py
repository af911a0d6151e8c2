"""The public API and the house rules of issues 28 and 41: a small
surface, no import cycle, no function over 80 lines and no class over 300
(library, recipes and tools), a callback with few arguments."""

import ast
import importlib
import inspect
import pathlib

import pytest

import tf_prunetrain

PACKAGE = pathlib.Path(tf_prunetrain.__file__).parent
CHECKOUT = pathlib.Path(__file__).resolve().parents[1]

# (name, where it lives now): the old top-level names (CHANGELOG.md).
MOVED = [
    ("zero_channels", "tf_prunetrain.coupling"),
    ("lasso_variables", "tf_prunetrain.regularizers"),
    ("attach_proximal_step", "tf_prunetrain.regularizers"),
    ("plan_pruning", "tf_prunetrain.planning"),
    ("reconfigure_in_place", "tf_prunetrain.inplace"),
    ("forward_flops", "tf_prunetrain.cost"),
    ("make_strategy", "tf_prunetrain.distribute"),
    ("synchronize_batchnorm", "tf_prunetrain.distribute"),
    ("dynamic_batch_size", "tf_prunetrain.dynamic_batch"),
]


def _imports(path: pathlib.Path) -> set[str]:
    """The tf_prunetrain modules a module imports, at any level."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and \
                node.module.startswith("tf_prunetrain"):
            if node.module == "tf_prunetrain":
                found |= {f"tf_prunetrain.{a.name}" for a in node.names}
            else:
                found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names
                      if a.name.startswith("tf_prunetrain.")}
    return found


def _graph() -> dict[str, set[str]]:
    modules = {f"tf_prunetrain.{p.stem}": p for p in PACKAGE.glob("*.py")
               if p.stem != "__init__"}
    return {name: _imports(path) & set(modules)
            for name, path in modules.items()}


def test_every_public_name_exists_and_the_surface_is_small():
    assert all(hasattr(tf_prunetrain, n) for n in tf_prunetrain.__all__)
    assert len(tf_prunetrain.__all__) <= 15


@pytest.mark.parametrize("name, module", MOVED)
def test_moved_names_live_in_their_module_only(name, module):
    assert name not in tf_prunetrain.__all__
    assert getattr(importlib.import_module(module), name).__module__ == module


def test_the_old_shims_are_gone():
    for old in ("tf_prunetrain.group_lasso", "tf_prunetrain.proximal"):
        with pytest.raises(ImportError):
            importlib.import_module(old)


def test_the_layers_run_one_way():
    graph = _graph()
    order = ["handlers", "coupling", "planning", "budget", "schedules",
             "fading",
             "slicing", "inplace", "surgery", "reconfigure"]
    for i, low in enumerate(order):
        for high in order[i + 1:]:
            assert f"tf_prunetrain.{high}" not in graph[f"tf_prunetrain.{low}"]


def _too_long(source: str) -> list[str]:
    """The functions over 80 lines and classes over 300 in `source`, as
    'name (lines)', nested ones too."""
    limits = {ast.FunctionDef: 80, ast.AsyncFunctionDef: 80,
              ast.ClassDef: 300}
    long = []
    for node in ast.walk(ast.parse(source)):
        if type(node) in limits:
            lines = node.end_lineno - node.lineno + 1
            if lines > limits[type(node)]:
                long.append(f"{node.name} ({lines} lines)")
    return long


def test_the_size_rule_counts_functions_and_classes():
    def function(name: str, lines: int, indent: str = "") -> str:
        return f"{indent}def {name}():\n" + f"{indent}    x = 0\n" * (lines - 1)

    assert _too_long(function("f", 80)) == []
    assert _too_long("class C:\n" + function("g", 81, "    ")) == [
        "g (81 lines)"]
    assert _too_long("class C:\n" + "    x = 0\n" * 299) == []
    assert _too_long("class C:\n" + "    x = 0\n" * 300) == ["C (301 lines)"]


def test_no_function_over_80_lines_nor_class_over_300():
    """Issue 41's house rule, in the library, the recipes and the tools of
    the checkout this test sits in."""
    long = []
    for folder in ("tf_prunetrain", "recipes", "tools"):
        paths = sorted((CHECKOUT / folder).rglob("*.py"))
        assert paths, folder
        long += [f"{path.relative_to(CHECKOUT)}: {name}" for path in paths
                 for name in _too_long(path.read_text())]
    assert not long, "over 80 lines (functions) or 300 (classes): " + \
        "; ".join(long)


def test_reconfigure_takes_a_schedule_and_four_keywords():
    params = list(inspect.signature(
        tf_prunetrain.Reconfigure.__init__).parameters.values())[1:]
    assert len(params) <= 5
    assert params[0].name == "schedule"
    assert all(p.kind is p.KEYWORD_ONLY for p in params[1:])
