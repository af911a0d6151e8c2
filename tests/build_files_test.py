"""Keeps the Bazel BUILD files in step with the Python sources.

Checked for every `.py` file under tf_prunetrain/, tests/, tools/, recipes/:

* it is in the `srcs` of exactly one target of its package's BUILD (the
  BUILD in its folder or the nearest folder above it, within the root);
* every file a target names in `srcs` exists;
* every first-party dependency label (`:name`, `//pkg`, `//pkg:name`) names a
  target that exists;
* every first-party import of a source (`tf_prunetrain`, `tf_prunetrain.X`,
  the `tools` and `recipes` packages' modules such as `tools.replay` or
  `from recipes import common`, or a helper module beside it such as
  `model_zoo`) is covered by a direct dependency of its target on the
  target that owns that module;
* the root BUILD, when there is one, is whole: its `py_library` depends on
  every library and binary of tf_prunetrain/, and its `test_suite`s list
  every `py_test` of tests/.

BUILD files are Starlark, whose syntax is a subset of Python's, so `ast`
parses them. Third-party dependencies are comments (`# keras dep1,`) and are
not checked.
"""

from __future__ import annotations

import ast
import dataclasses
import os
import textwrap

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROOTS = ("tf_prunetrain", "tests", "tools", "recipes")
PACKAGE = "tf_prunetrain"  # the installed first-party package
# Every importable first-party package (tools/ and recipes/ import as
# packages from the repository root).
PACKAGES = (PACKAGE, "tools", "recipes")


@dataclasses.dataclass
class Target:
    package: str  # folder relative to the repo, '/'-separated
    kind: str
    name: str
    srcs: list[str]
    deps: list[str]
    tests: list[str] = dataclasses.field(default_factory=list)

    @property
    def label(self) -> str:
        return f"//{self.package}:{self.name}"


def _strings(node: ast.AST | None, what: str, where: str) -> list[str]:
    if node is None:
        return []
    if not isinstance(node, (ast.List, ast.Tuple)) or not all(
            isinstance(e, ast.Constant) and isinstance(e.value, str)
            for e in node.elts):
        raise ValueError(f"{where}: `{what}` must be a literal list of strings "
                         "(no glob(), so that the check can read it).")
    return [e.value for e in node.elts]


def parse_build(path: str, package: str) -> list[Target]:
    """The named rules of one BUILD file."""
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), filename=path)
    targets = []
    for stmt in tree.body:
        if not (isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Call)
                and isinstance(stmt.value.func, ast.Name)):
            continue
        call = stmt.value
        kw = {k.arg: k.value for k in call.keywords}
        name = kw.get("name")
        if name is None:  # package(), licenses(), load(), ...
            continue
        if not (isinstance(name, ast.Constant) and isinstance(name.value, str)):
            raise ValueError(f"{path}:{call.lineno}: `name` must be a string.")
        where = f"{path}:{call.lineno} ({name.value})"
        targets.append(Target(package, call.func.id, name.value,
                              _strings(kw.get("srcs"), "srcs", where),
                              _strings(kw.get("deps"), "deps", where),
                              _strings(kw.get("tests"), "tests", where)))
    return targets


def _python_files(repo: str, root: str) -> list[str]:
    found = []
    for folder, dirs, files in os.walk(os.path.join(repo, root)):
        dirs[:] = sorted(d for d in dirs
                         if not d.startswith(".") and d != "__pycache__")
        rel = os.path.relpath(folder, repo).replace(os.sep, "/")
        found += [f"{rel}/{f}" for f in sorted(files) if f.endswith(".py")]
    return found


def _package_of(repo: str, root: str, path: str) -> str | None:
    """The nearest folder at or above `path`'s, within `root`, with a BUILD."""
    folder = os.path.dirname(path)
    while True:
        if os.path.isfile(os.path.join(repo, folder, "BUILD")):
            return folder
        if folder == root or "/" not in folder:
            return None
        folder = os.path.dirname(folder)


def _module_name(path: str) -> str | None:
    """Dotted import name of a file inside a first-party package."""
    if not any(path == p + ".py" or path.startswith(p + "/")
               for p in PACKAGES):
        return None
    parts = path[:-len(".py")].split("/")
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: str) -> list[tuple[str, list[str]]]:
    """(module, imported names) for every import statement of a file."""
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), filename=path)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(a.name, []) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.append((node.module, [a.name for a in node.names]))
    return found


def _normalize(label: str, package: str) -> str | None:
    """Absolute `//pkg:name` form of a first-party label, else None."""
    if label.startswith(":"):
        return f"//{package}{label}"
    if label.startswith("//"):
        pkg, _, name = label[2:].partition(":")
        return f"//{pkg}:{name or pkg.rsplit('/', 1)[-1]}"
    return None  # external (@repo//...) or malformed: not ours to check


def check_tree(repo: str, roots: tuple[str, ...] = ROOTS) -> list[str]:
    """Every problem found, as readable lines (empty when all is well)."""
    errors: list[str] = []
    targets: dict[str, Target] = {}
    owner: dict[str, str] = {}  # source path -> owning label
    packages: set[str] = set()

    for root in roots:
        for path in _python_files(repo, root):
            package = _package_of(repo, root, path)
            if package is None:
                errors.append(
                    f"{path}: no BUILD file in {os.path.dirname(path)}/ (or "
                    f"above it within {root}/); add one with a target whose "
                    f"srcs name this file.")
            else:
                packages.add(package)
        if os.path.isfile(os.path.join(repo, root, "BUILD")):
            packages.add(root)

    for package in sorted(packages):
        build = os.path.join(repo, package, "BUILD")
        try:
            parsed = parse_build(build, package)
        except (SyntaxError, ValueError) as e:
            errors.append(f"{package}/BUILD: cannot be read: {e}")
            continue
        for t in parsed:
            if t.label in targets:
                errors.append(f"{package}/BUILD: target '{t.name}' is defined "
                              "twice.")
            targets[t.label] = t
            for src in t.srcs:
                path = f"{package}/{src}"
                if not os.path.isfile(os.path.join(repo, path)):
                    errors.append(f"{package}/BUILD: target '{t.name}' names "
                                  f"src '{src}', which does not exist.")
                elif path in owner:
                    errors.append(f"{path}: in the srcs of both {owner[path]} "
                                  f"and {t.label}.")
                else:
                    owner[path] = t.label

    for root in roots:
        for path in _python_files(repo, root):
            package = _package_of(repo, root, path)
            if package is not None and path not in owner:
                errors.append(
                    f"{path}: not in the srcs of any target in {package}/BUILD"
                    f"; add a py_library/py_binary/py_test for it.")

    if os.path.isfile(os.path.join(repo, "BUILD")):
        errors += _check_root(repo, targets)

    by_module = {m: label for path, label in owner.items()
                 if (m := _module_name(path)) is not None}
    for t in targets.values():
        deps = set()
        for dep in t.deps:
            label = _normalize(dep, t.package)
            if label is None:
                continue
            if label not in targets:
                errors.append(f"{t.package}/BUILD: target '{t.name}' depends "
                              f"on '{dep}', which is not a target.")
            deps.add(label)
        for src in t.srcs:
            path = f"{t.package}/{src}"
            if not path.endswith(".py") or not os.path.isfile(
                    os.path.join(repo, path)):
                continue
            for needed in _needed(repo, path, by_module, owner) - {t.label}:
                if needed not in deps:
                    errors.append(
                        f"{path} imports code of {needed}, but target "
                        f"{t.label} does not list it in deps.")
    return errors


def _check_root(repo: str, targets: dict[str, Target]) -> list[str]:
    """The root BUILD gathers the whole package and every test."""
    try:
        root = parse_build(os.path.join(repo, "BUILD"), "")
    except (SyntaxError, ValueError) as e:
        return [f"BUILD: cannot be read: {e}"]
    errors = []
    listed: dict[str, set[str]] = {"py_library": set(), "test_suite": set()}
    for t in root:
        if t.srcs:
            errors.append(f"BUILD: target '{t.name}' has srcs; the root BUILD "
                          "only gathers targets of the folders.")
        for dep in t.deps + t.tests:
            label = _normalize(dep, "")
            if label is not None and label not in targets:
                errors.append(f"BUILD: target '{t.name}' names '{dep}', which "
                              "is not a target.")
            elif label is not None and t.kind in listed:
                listed[t.kind].add(label)
    for t in targets.values():
        if (t.package == PACKAGE and t.kind in ("py_library", "py_binary")
                and t.label not in listed["py_library"]):
            errors.append(f"BUILD: no root py_library depends on {t.label}; "
                          "add it to the deps.")
        if t.kind == "py_test" and t.label not in listed["test_suite"]:
            errors.append(f"BUILD: no root test_suite lists {t.label}; add it "
                          "to the tests.")
    return errors


def _needed(repo: str, path: str, by_module: dict[str, str],
            owner: dict[str, str]) -> set[str]:
    """Labels of the first-party targets whose modules `path` imports."""
    folder = os.path.dirname(path)
    needed = set()
    for module, names in _imports(os.path.join(repo, path)):
        if any(module == p or module.startswith(p + ".") for p in PACKAGES):
            subs = [f"{module}.{n}" for n in names if f"{module}.{n}" in by_module]
            if subs:
                needed.update(by_module[s] for s in subs)
            if len(subs) < len(names) or not names:
                mod = module
                while mod not in by_module and "." in mod:
                    mod = mod.rsplit(".", 1)[0]
                if mod in by_module:
                    needed.add(by_module[mod])
        elif "." not in module and f"{folder}/{module}.py" in owner:
            needed.add(owner[f"{folder}/{module}.py"])  # a helper beside it
    return needed


def test_repository_build_files_cover_every_module():
    errors = check_tree(REPO)
    assert not errors, "BUILD files are out of date:\n  " + "\n  ".join(errors)


def test_the_repository_has_a_root_build_file():
    assert os.path.isfile(os.path.join(REPO, "BUILD"))


def test_every_root_with_code_has_a_build_file():
    for root in ROOTS:
        if any(_python_files(REPO, root)):
            assert os.path.isfile(os.path.join(REPO, root, "BUILD")), root


# -- The checker itself, on small trees made here ----------------------------
def _write(repo, files: dict[str, str]) -> str:
    for rel, text in files.items():
        path = repo / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return str(repo)


GOOD = {
    "tf_prunetrain/__init__.py": "from tf_prunetrain.core import f\n",
    "tf_prunetrain/core.py": "import numpy\n",
    "tf_prunetrain/BUILD": """
        package(default_visibility = ["//visibility:public"])
        py_library(name = "tf_prunetrain", srcs = ["__init__.py"],
                   deps = [":core"])
        py_library(name = "core", srcs = ["core.py"], deps = [
            # numpy dep1,
        ])
    """,
    "tests/helper.py": "import tf_prunetrain\n",
    "tests/core_test.py": (
        "import helper\nfrom tf_prunetrain import core\n"
        "def test_x():\n    pass\n"),
    "tests/BUILD": """
        py_library(name = "helper", testonly = True, srcs = ["helper.py"],
                   deps = ["//tf_prunetrain"])
        py_test(name = "core_test", srcs = ["core_test.py"],
                deps = [":helper", "//tf_prunetrain:core"])
    """,
}


def test_checker_accepts_a_consistent_tree(tmp_path):
    assert check_tree(_write(tmp_path, GOOD)) == []


def test_checker_rejects_a_module_without_build_entry(tmp_path):
    repo = _write(tmp_path, {**GOOD, "tf_prunetrain/extra.py": "x = 1\n"})
    errors = check_tree(repo)
    assert len(errors) == 1 and "tf_prunetrain/extra.py" in errors[0]
    assert "not in the srcs" in errors[0]


def test_checker_rejects_a_folder_without_build(tmp_path):
    repo = _write(tmp_path, {**GOOD, "recipes/cifar.py": "x = 1\n"})
    errors = check_tree(repo)
    assert len(errors) == 1 and "recipes/cifar.py: no BUILD" in errors[0]


def test_checker_rejects_a_missing_src_and_a_dangling_dep(tmp_path):
    files = dict(GOOD)
    files["tools/BUILD"] = """
        py_binary(name = "gone", srcs = ["gone.py"], deps = [":nothing"])
    """
    errors = check_tree(_write(tmp_path, files))
    assert any("'gone.py', which does not exist" in e for e in errors)
    assert any("':nothing', which is not a target" in e for e in errors)


def test_checker_rejects_a_missing_first_party_dep(tmp_path):
    files = dict(GOOD)
    files["tests/BUILD"] = GOOD["tests/BUILD"].replace(
        '":helper", ', "")
    errors = check_tree(_write(tmp_path, files))
    assert errors == [
        "tests/core_test.py imports code of //tests:helper, but target "
        "//tests:core_test does not list it in deps."]


def test_checker_follows_imports_of_the_tools_and_recipes_packages(
        tmp_path):
    files = {**GOOD,
             "tools/__init__.py": "", "tools/a.py": "x = 1\n",
             "tools/b.py": "from tools import a\nfrom recipes import c\n",
             "recipes/__init__.py": "", "recipes/c.py": "y = 2\n",
             "tools/BUILD": """
                 py_library(name = "tools", srcs = ["__init__.py"])
                 py_library(name = "a", srcs = ["a.py"])
                 py_library(name = "b", srcs = ["b.py"], deps = [":a"])
             """,
             "recipes/BUILD": """
                 py_library(name = "recipes", srcs = ["__init__.py"])
                 py_library(name = "c", srcs = ["c.py"])
             """}
    assert check_tree(_write(tmp_path, files)) == [
        "tools/b.py imports code of //recipes:c, but target //tools:b does "
        "not list it in deps."]


def test_checker_rejects_glob_srcs(tmp_path):
    files = dict(GOOD)
    files["tests/BUILD"] = GOOD["tests/BUILD"].replace(
        'srcs = ["core_test.py"]', 'srcs = glob(["*_test.py"])')
    errors = check_tree(_write(tmp_path, files))
    assert any("literal list" in e for e in errors)


@pytest.mark.parametrize("label, expected", [
    (":core", "//tf_prunetrain:core"),
    ("//tf_prunetrain", "//tf_prunetrain:tf_prunetrain"),
    ("//tools:bench", "//tools:bench"),
    ("@pypi//numpy", None),
])
def test_normalize(label, expected):
    assert _normalize(label, "tf_prunetrain") == expected


ROOT_BUILD = """
    py_library(name = "everything", deps = ["//tf_prunetrain",
                                           "//tf_prunetrain:core"])
    test_suite(name = "all_tests", tests = ["//tests:core_test"])
"""


def test_checker_accepts_a_whole_root_build(tmp_path):
    assert check_tree(_write(tmp_path, {**GOOD, "BUILD": ROOT_BUILD})) == []


def test_checker_rejects_a_root_build_that_leaves_things_out(tmp_path):
    root = ROOT_BUILD.replace(',\n                                           '
                              '"//tf_prunetrain:core"', "").replace(
        '"//tests:core_test"', '"//tests:gone_test"')
    errors = check_tree(_write(tmp_path, {**GOOD, "BUILD": root}))
    assert sorted(errors) == sorted([
        "BUILD: target 'all_tests' names '//tests:gone_test', which is not a "
        "target.",
        "BUILD: no root py_library depends on //tf_prunetrain:core; add it to "
        "the deps.",
        "BUILD: no root test_suite lists //tests:core_test; add it to the "
        "tests."])
