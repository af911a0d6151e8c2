"""The house rules of tools/ and recipes/ (issue 41): packages that import
each other without editing `sys.path`, an import graph with no cycle in
which the library imports neither, and one timing primitive (the size
rule is tests/api_test.py's)."""

import ast
import importlib
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
FOLDERS = ("tf_prunetrain", "tools", "recipes")


def _modules() -> dict[str, pathlib.Path]:
    """Dotted name -> file, for every module of the three packages."""
    found = {}
    for folder in FOLDERS:
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__"
                           else parts)] = path
    return found


def _imports(path: pathlib.Path, known: set[str]) -> set[str]:
    """The first-party modules a file imports, at any level (`from p
    import m`: the module `p.m` when there is one, else `p`)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                found.add(sub if sub in known else node.module)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
    return found & known


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(path, set(modules)) - {name}
            for name, path in modules.items()}


def test_every_folder_is_a_package():
    for folder in FOLDERS:
        assert (ROOT / folder / "__init__.py").is_file(), folder


@pytest.mark.parametrize("folder", ["tools", "recipes"])
def test_no_module_edits_sys_path(folder):
    editing = []
    for path in sorted((ROOT / folder).glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr == "path" \
                    and isinstance(node.value, ast.Name) \
                    and node.value.id == "sys":
                editing.append(f"{path.name}:{node.lineno}")
    assert editing == []


def test_the_library_imports_neither_tools_nor_recipes():
    graph = _graph()
    for name, deps in graph.items():
        if name.startswith("tf_prunetrain"):
            assert not {d for d in deps if not d.startswith(
                "tf_prunetrain")}, name
        if name.startswith("recipes"):
            assert not {d for d in deps if d.startswith("tools")}, name


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


def test_alternating_rounds_are_timed_in_one_place():
    """`latency.round_robin` is the only loop of alternating rounds: no
    other module defines one, and the tools that time rounds call it."""
    defined = [name for name, path in _modules().items()
               if "def round_robin(" in path.read_text()]
    assert defined == ["tf_prunetrain.latency"]
    for name in ("replay", "comparison", "bench_group_lasso"):
        assert "latency.round_robin(" in (ROOT / "tools" /
                                          f"{name}.py").read_text(), name


def test_every_tool_imports_beside_the_others():
    """Importing every module of tools/ and recipes/ in one process works:
    no flag is defined at import twice, no import needs a path hack."""
    names = [name for name in _modules() if not name.startswith(
        "tf_prunetrain")]
    assert "tools.benchmark" in names and "recipes.cifar" in names
    for name in names:
        module = importlib.import_module(name)
        assert pathlib.Path(module.__file__).resolve() == _modules()[name]
