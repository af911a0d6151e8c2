"""The public API and the house rules of issue 28: a small surface, no
import cycle, no class over 300 lines, a callback with few arguments."""

import ast
import importlib
import inspect
import pathlib

import pytest

import tf_prunetrain

PACKAGE = pathlib.Path(tf_prunetrain.__file__).parent

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


def test_the_import_graph_has_no_cycle():
    graph = _graph()
    state: dict[str, int] = {}  # 1 visiting, 2 done

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for dep in sorted(graph[module]):
            assert state.get(dep) != 1, " -> ".join(path + [module, dep])
            if dep not in state:
                visit(dep, path + [module])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [])


def test_the_layers_run_one_way():
    graph = _graph()
    order = ["handlers", "coupling", "planning", "budget", "schedules",
             "fading",
             "slicing", "inplace", "surgery", "reconfigure"]
    for i, low in enumerate(order):
        for high in order[i + 1:]:
            assert f"tf_prunetrain.{high}" not in graph[f"tf_prunetrain.{low}"]


def test_no_class_is_over_300_lines():
    long = []
    for path in PACKAGE.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and \
                    node.end_lineno - node.lineno + 1 > 300:
                long.append(f"{path.name}:{node.name}")
    assert not long


def test_reconfigure_takes_a_schedule_and_four_keywords():
    params = list(inspect.signature(
        tf_prunetrain.Reconfigure.__init__).parameters.values())[1:]
    assert len(params) <= 5
    assert params[0].name == "schedule"
    assert all(p.kind is p.KEYWORD_ONLY for p in params[1:])
