"""Results files: JSON written whole or not at all, and read back as the
state of a sweep, with today's method names.

A sweep's `--json` file is its state (`tools.sweep.Sweep`): written after
every run, and read back by the same command to go on (`resume`), refused
when it was made with other flags. Every tool writes its results through
`write`.

**Method names (issue 41).** Before it, a comparison's (`tools.benchmark`)
method `prunetrain` ran the sweep's own cut: the `--ranking` and
`--gentle` of its config (files older than those flags ran 0.2's cut,
norm per FLOP, abrupt), and the lever `thin_gentle` was the library's
default cut. Now `prunetrain` is the library's default cut (thin widths,
gentle) and every other cut is a lever named after it
(`prunetrain_norm_per_flop` is 0.2's). Files written since carry
`"names": 2`; `upgrade_names` renames the runs of an older file, so that
replaying, reporting and resuming it work on the names of today.

**Same runs, same figures.** `python -m tools.results reference.json
new.json` prints every run (seed, method, setting) of both files with its
top-1 in each and exits 1 unless every one is bit for bit the same (issue
41's check that a refactor changed nothing a run computes).
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Callable, Mapping

import numpy as np

NAMES = 2  # the `"names"` marker of results with issue 41's method names
# The cut a comparison's `prunetrain` method runs today (the recipes' and
# `FlopsBudget`'s default): the config of an upgraded file says so.
DEFAULT_CUT = {"ranking": "thin_widths", "gentle": True}
# The cut of files written before the --ranking and --gentle flags.
_FIRST_CUT = {"ranking": "norm_per_flop", "gentle": False}
# The suffix of the old `prunetrain` method's new name, per cut of the
# file's config: 0.2's cut, thin widths abrupt, the default cut.
_OLD_BASE = {("norm_per_flop", False): "_norm_per_flop",
             ("thin_widths", False): "_thin_widths",
             ("thin_widths", True): ""}


def read(path: str) -> Any:
    """The JSON content of `path`."""
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def write(result: Any, path: str | None, indent: int = 1) -> None:
    """Writes `result` as JSON to `path` whole or not at all (a stopped
    sweep leaves its last complete state; missing folders are made);
    `path` "-" prints it, None or "" writes nothing. numpy values are
    written as lists and numbers.

    >>> write({"top1": np.float32(0.5), "widths": np.arange(2)}, "-", None)
    {"top1": 0.5, "widths": [0, 1]}
    """
    if not path:
        return
    text = json.dumps(result, indent=indent,
                      default=lambda v: np.asarray(v).tolist())
    if path == "-":
        print(text)
        return
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        f.write(text + "\n")
    os.replace(path + ".tmp", path)


def config_dict(config: Any) -> dict[str, Any]:
    """A dataclass config as a results file holds it (JSON types: tuples
    become lists).

    >>> @dataclasses.dataclass
    ... class Config:
    ...     epochs: int = 8
    ...     lr_decay_epochs: tuple = (4, 6)
    >>> config_dict(Config())
    {'epochs': 8, 'lr_decay_epochs': [4, 6]}
    """
    return json.loads(json.dumps(dataclasses.asdict(config)))


def resume(path: str | None, fresh: dict[str, Any],
           flags: Callable[[dict[str, Any]], Mapping[str, Any]],
           upgrade: Callable[[dict[str, Any], str], dict[str, Any]]
           | None = None) -> dict[str, Any]:
    """The sweep so far: `path`'s results when the file exists (after
    `upgrade(results, path)`), else `fresh`. Refused (ValueError, naming
    them) when the flags the file was made with, `flags(results)`, differ
    from `flags(fresh)`.

    >>> resume(None, {"epochs": 8, "runs": []}, dict)
    {'epochs': 8, 'runs': []}
    """
    if not path or not os.path.exists(path):
        return fresh
    old = read(path)
    if upgrade is not None:
        old = upgrade(old, path)
    there, now = flags(old), flags(fresh)
    differing = [f"--{name}={there.get(name)!r} there, {value!r} now"
                 for name, value in now.items() if there.get(name) != value]
    if differing:
        raise ValueError(f"{path} was made with other flags: "
                         f"{'; '.join(differing)}. Give the same flags to "
                         "go on with it, or another --json.")
    return old


def upgrade_names(result: dict[str, Any]) -> dict[str, Any]:
    """Renames, in place, the methods of a comparison's results written
    before issue 41 (no `"names": 2`; module docstring): `prunetrain` and
    `scratch` after the cut they ran (`prunetrain_norm_per_flop` for 0.2's),
    `prunetrain_thin_gentle` and `scratch_thin_gentle` to `prunetrain` and
    `scratch`; the config then holds the default cut, `prunetrain`'s. The
    runs' figures are kept as they are; derived ones (summary, goals) are
    the caller's to recompute. Files with the marker are returned as they
    are.

    >>> old = {"config": {"model": "resnet20"}, "runs": [
    ...     {"method": "prunetrain"}, {"method": "scratch"},
    ...     {"method": "prunetrain_thin_gentle"}, {"method": "thin"}]}
    >>> new = upgrade_names(old)
    >>> [r["method"] for r in new["runs"]], new["names"]
    (['prunetrain_norm_per_flop', 'scratch_norm_per_flop', 'prunetrain', 'thin'], 2)
    >>> new["config"]
    {'model': 'resnet20', 'ranking': 'thin_widths', 'gentle': True}
    """
    if result.get("names", 1) >= NAMES:
        return result
    config = result.get("config") or {}
    cut = tuple(config.get(name, _FIRST_CUT[name]) for name in _FIRST_CUT)
    if cut not in _OLD_BASE:
        raise ValueError(f"upgrade_names: the results' prunetrain runs cut "
                         f"with --ranking={cut[0]} --gentle={cut[1]}, which "
                         "no method of today names.")
    suffix = _OLD_BASE[cut]
    renames = {"prunetrain": "prunetrain" + suffix,
               "scratch": "scratch" + suffix,
               "prunetrain_thin_gentle": "prunetrain",
               "scratch_thin_gentle": "scratch"}
    methods = {run["method"] for run in result.get("runs", [])}
    renamed = [renames.get(m, m) for m in methods]
    if len(set(renamed)) < len(renamed):
        raise ValueError(f"upgrade_names: {sorted(methods)} would give two "
                         "methods one name.")
    for run in result.get("runs", []):
        run["method"] = renames.get(run["method"], run["method"])
    if "config" in result:
        result["config"].update(DEFAULT_CUT)
    result["names"] = NAMES
    return result


def differences(reference: dict[str, Any], new: dict[str, Any],
                figure: str = "accuracy") -> tuple[list[str], list[str]]:
    """Every run of two results (today's names), as a line with `figure`
    in each, and the lines of those that differ or are in one only.

    >>> old = {"names": 2, "runs": [{"seed": 0, "method": "dense",
    ...                              "setting": None, "accuracy": 0.5}]}
    >>> new = {"names": 2, "runs": [{"seed": 0, "method": "dense",
    ...                              "setting": None, "accuracy": 0.5}]}
    >>> differences(old, new)[1]
    []
    >>> new["runs"][0]["accuracy"] = 0.25
    >>> differences(old, new)[1]
    ['seed 0, dense None: 0.5 -> 0.25']
    """
    def figures(result: dict[str, Any]) -> dict[tuple, Any]:
        return {(r["seed"], r["method"], r.get("setting")): r.get(figure)
                for r in upgrade_names(result)["runs"]}

    one, two = figures(reference), figures(new)
    lines, differing = [], []
    for key in sorted(set(one) | set(two), key=str):
        line = (f"seed {key[0]}, {key[1]} {key[2]}: {one.get(key, '-')!r} "
                f"-> {two.get(key, '-')!r}")
        lines.append(line)
        if key not in one or key not in two or one[key] != two[key]:
            differing.append(line)
    return lines, differing


if __name__ == "__main__":
    import sys
    every, changed = differences(read(sys.argv[1]), read(sys.argv[2]))
    print("\n".join(every))
    print(f"{len(every) - len(changed)} of {len(every)} the same"
          + "".join(f"\nDIFFERENT: {line}" for line in changed))
    sys.exit(1 if changed else 0)
