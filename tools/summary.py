"""A comparison's figures: per-run ratios to the same seed's dense run,
per-setting means, paired verdicts, the Pareto front, the goals, and the
tables and plot that report them (`tools.benchmark`, `tools.comparison`).

Time is the replayed training time (`tools/replay.py`) when the results hold
a replay, and whole-run wall time otherwise; the wall-time ratio stays as a
column, with `agreement` = wall ratio / replayed ratio.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from tools import oneoffs
from tools import replay as replay_lib
from tools import verdicts

_RATIOS = {"wall_time": "train_seconds", "train_flops": "train_flops_spent",
           "final_flops": "inference_flops", "params": "params",
           "memory_traffic": "memory_traffic_bytes"}


# What every `prunetrain_<lever>` is also paired with at its target.
CONTROLS = ("prunetrain", "prunetrain_one_cut")


def label(method: str, value: float | None) -> str:
    return method if value is None else f"{method} {value:g}"


def scratch_of(method: str) -> str | None:
    """The scratch control of a PruneTrain method (`prunetrain_<lever>`:
    `scratch_<lever>`), None for other methods.

    >>> scratch_of("prunetrain"), scratch_of("prunetrain_norm_per_flop"), scratch_of("thin")
    ('scratch', 'scratch_norm_per_flop', None)
    """
    if not method.startswith("prunetrain"):
        return None
    return "scratch" + method[len("prunetrain"):]


def time_key(result: dict[str, Any]) -> str:
    """The ratio that ranks settings: replayed when a replay exists."""
    return "replayed_time" if result.get("replay") else "wall_time"


def annotate(result: dict[str, Any]) -> None:
    """Sets every run's `replayed_seconds` (with a replay) and `ratios` to
    the same seed's dense run (absent while that run is missing)."""
    replay = result.get("replay")
    for run in result["runs"]:
        run.pop("ratios", None)
        if replay and "timeline" in run:
            run["replayed_seconds"] = oneoffs.price(run, replay)
    dense = {r["seed"]: r for r in result["runs"] if r["method"] == "dense"}
    for run in result["runs"]:
        if run["seed"] in dense:
            run["ratios"] = ratios(dense[run["seed"]], run)


def ratios(dense: dict[str, Any], run: dict[str, Any]) -> dict[str, float]:
    """One run against the same seed's dense run."""
    out = {name: run[key] / dense[key] for name, key in _RATIOS.items()}
    out["top1_points"] = 100 * (run["accuracy"] - dense["accuracy"])
    seconds = run.get("replayed_seconds", run["train_seconds"])
    out["one_off_share"] = oneoffs.share(run, seconds)
    if "replayed_seconds" in run and "replayed_seconds" in dense:
        out["replayed_time"] = run["replayed_seconds"] \
            / dense["replayed_seconds"]
        out["agreement"] = out["wall_time"] / out["replayed_time"]
    return out


def priced(result: dict[str, Any], replay: dict[str, Any]
           ) -> dict[str, float]:
    """Per setting label: the mean replayed time ratio when `result`'s runs
    are priced by `replay` (one replay, or several combined)."""
    twin = dict(result, replay=replay,
                runs=[dict(r) for r in result["runs"]])
    annotate(twin)
    return {row["label"]: row["replayed_time"]["mean"]
            for row in summarize(twin)}


def replay_spread(result: dict[str, Any]) -> dict[str, list[float]]:
    """Per setting label: [lowest, highest] mean replayed time ratio over
    the single replays of `result["replays"]` (what one replay alone could
    have reported)."""
    each = [priced(result, one) for one in result.get("replays", [])]
    return {name: [min(p[name] for p in each), max(p[name] for p in each)]
            for name in (each[0] if each else {})}


def _mean_std(values: list[float]) -> dict[str, float]:
    return {"mean": float(np.mean(values)),
            "std": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0}


def _top1(runs: list[dict[str, Any]], method: str, value: float | None
          ) -> dict[int, float]:
    return {r["seed"]: r["accuracy"] for r in runs
            if (r["method"], r["setting"]) == (method, value)}


def summarize(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Per setting, in run order, over the seeds that have a dense run: mean
    ± std of top-1 and of each ratio; `paired`: top-1 points against dense
    and every thin width (PruneTrain also against its scratch control, a
    lever also against `CONTROLS`), same seeds, with 95 % bootstrap
    intervals;
    `pareto`: on the front of mean top-1 vs mean time ratio."""
    runs = [r for r in result["runs"] if "ratios" in r]
    keys = list(dict.fromkeys((r["method"], r["setting"]) for r in runs))
    references = [k for k in keys if k[0] in ("dense", "thin")]
    # PruneTrain also against its own architecture from scratch (the path):
    # its scratch_<lever> runs, else scratch runs of the same architecture
    # on every seed (a lever run without --scratch whose widths another
    # lever's scratch control already trained).
    arch = {k: {r["seed"]: r.get("final_architecture") for r in runs
                if (r["method"], r["setting"]) == k} for k in keys}
    own = {}
    for k in keys:
        if not scratch_of(k[0]):
            continue
        same = [s for s in keys if s[0].startswith("scratch") and s[1] == k[1]
                and all(arch[s].get(seed) == a for seed, a in arch[k].items())]
        if (scratch_of(k[0]), k[1]) in keys:
            own[k] = (scratch_of(k[0]), k[1])
        elif same:
            own[k] = same[0]
    rows = []
    for method, value in keys:
        mine = [r for r in runs if (r["method"], r["setting"]) == (method,
                                                                    value)]
        names = set.intersection(*(set(r["ratios"]) for r in mine))
        row = {"method": method, "setting": value,
               "label": label(method, value), "seeds": len(mine),
               "top1": _mean_std([r["accuracy"] for r in mine]),
               **{k: _mean_std([r["ratios"][k] for r in mine])
                  for k in sorted(names)}, "paired": {}}
        if (method, value) in own:
            row["scratch"] = label(*own[(method, value)])
        # A lever also against the default cut and issue 38's one-cut
        # control at its target.
        controls = [k for k in keys if method.startswith("prunetrain_")
                    and k[0] in CONTROLS and k[1] == value]
        mine_refs = references + controls + ([own[(method, value)]]
                                             if (method, value) in own
                                             else [])
        for ref in mine_refs:
            if ref != (method, value):
                row["paired"][label(*ref)] = verdicts.paired(
                    _top1(runs, method, value), _top1(runs, *ref), scale=100)
        rows.append(row)
    key = time_key(result)
    front = pareto([(r[key]["mean"], r["top1"]["mean"]) for r in rows])
    for i, row in enumerate(rows):
        row["pareto"] = i in front
    return rows


def pareto(points: Sequence[tuple[float, float]]) -> set[int]:
    """Indices of the `(cost, accuracy)` points that no other point beats:
    none has a cost as low and an accuracy as high, one of them strictly.

    >>> sorted(pareto([(1.0, 0.9), (0.5, 0.8), (0.6, 0.7), (0.5, 0.8)]))
    [0, 1, 3]
    """
    def beats(a: tuple[float, float], b: tuple[float, float]) -> bool:
        return a[0] <= b[0] and a[1] >= b[1] and a != b
    return {i for i, p in enumerate(points)
            if not any(beats(q, p) for q in points)}


def _interval(row: dict[str, Any] | None) -> str:
    if row is None:
        return "no common seed"
    return (f"{row['mean']:+.2f} points [{row['low']:+.2f}, "
            f"{row['high']:+.2f}], {row['verdict']}")


def _status(verdict: str) -> str:
    return {"better": "reached", "worse": "missed"}.get(verdict,
                                                        "not established")


def goals(summary: list[dict[str, Any]], key: str) -> list[dict[str, Any]]:
    """The goals of BENCHMARKS.md (issue 31), each `reached`, `missed` or
    `not established` by the paired top-1 intervals (a mean alone decides
    nothing), with their figures; `key` is the time ratio that decides
    "faster"."""
    by = {row["label"]: row for row in summary}
    pruned = [r for r in summary if scratch_of(r["method"])]
    thin = [r for r in summary if r["method"] == "thin"]
    out: list[dict[str, Any]] = []

    def time(row: dict[str, Any]) -> float:
        return row[key]["mean"]

    for p in pruned:
        scratch = by.get(p.get("scratch")
                         or label(scratch_of(p["method"]), p["setting"]))
        if scratch is None:
            continue
        if thin:  # the architecture: its widths vs uniform at equal FLOPs
            near = min(thin, key=lambda t: abs(
                t["final_flops"]["mean"] - scratch["final_flops"]["mean"]))
            pair = scratch["paired"].get(near["label"])
            out.append({
                "goal": f"architecture: {scratch['label']} >= {near['label']}"
                        f" (final FLOPs {scratch['final_flops']['mean']:.3f} "
                        f"vs {near['final_flops']['mean']:.3f})",
                "status": _status(pair["verdict"]) if pair else "missed",
                "detail": _interval(pair)})
        pair = p["paired"].get(scratch["label"])
        out.append({"goal": f"path: {p['label']} >= {scratch['label']}",
                    "status": _status(pair["verdict"]) if pair else "missed",
                    "detail": _interval(pair)})
    faster = []
    for p in pruned:
        for t in thin:
            pair = p["paired"].get(t["label"])  # PruneTrain − thin
            if time(t) < time(p) and pair and pair["mean"] < 0:
                faster.append((t, p, "established" if pair["verdict"]
                               == "worse" else "not established"))
    out.append({
        "goal": "worth it: no thin width both faster and more accurate than "
                "a PruneTrain setting",
        "status": "missed" if any(f[2] == "established" for f in faster)
        else "not established" if faster else "reached",
        "detail": "; ".join(f"{t['label']} ({time(t):.3f}x) is faster than "
                            f"{p['label']} ({time(p):.3f}x) and more accurate"
                            f" ({how})" for t, p, how in faster)
        or "none is"})
    half = by.get("thin 0.5")
    if half is not None and pruned:
        fast = [p for p in pruned if time(p) <= time(half)]
        best = max(fast, key=lambda r: r["top1"]["mean"], default=None)
        pair = best["paired"].get("thin 0.5") if best else None
        out.append({
            "goal": "at thin 0.5's time, at least as accurate as thin 0.5",
            "status": _status(pair["verdict"]) if pair else "missed",
            "detail": f"{best['label']} at {time(best):.3f}x vs "
                      f"{time(half):.3f}x: {_interval(pair)}" if best
            else f"no PruneTrain setting is as fast (fastest "
                 f"{min(map(time, pruned)):.3f}x vs {time(half):.3f}x)"})
    return out


def _cell(row: dict[str, Any], key: str, scale: float = 1.0,
          digits: int = 3, unit: str = "x") -> str:
    if key not in row:
        return "-"
    return (f"{scale * row[key]['mean']:.{digits}f} ± "
            f"{scale * row[key]['std']:.{digits}f}{unit}")


def _short(pair: dict[str, Any] | None) -> str:
    if pair is None:
        return "-"
    mark = {"better": " +", "worse": " -"}.get(pair["verdict"], "")
    return (f"{pair['mean']:+.2f} [{pair['low']:+.2f}, {pair['high']:+.2f}]"
            f"{mark}")


def rows(result: dict[str, Any]) -> tuple[tuple[str, ...],
                                          list[tuple[str, ...]]]:
    """The comparison's header and one row per setting: top-1, the paired
    difference to dense, the time ratio that ranks (replayed, or wall), the
    range of what single replays gave, the wall ratio and their agreement,
    FLOPs, the one-off share, the front."""
    key = time_key(result)
    header = ("setting", "seeds", "top-1", "vs dense (points, 95% CI)",
              "replayed time" if key == "replayed_time" else "wall time",
              "single replays", "wall time", "wall/replayed",
              "training FLOPs", "final FLOPs", "one-off share", "front")
    out = [(r["label"], str(r["seeds"]), _cell(r, "top1", digits=4, unit=""),
            _short(r["paired"].get("dense")) if r["method"] != "dense"
            else "", _cell(r, key),
            "{:.3f}..{:.3f}".format(*r["replayed_spread"])
            if "replayed_spread" in r else "-",
            _cell(r, "wall_time") if key != "wall_time" else "-",
            _cell(r, "agreement"), _cell(r, "train_flops"),
            _cell(r, "final_flops"),
            _cell(r, "one_off_share", scale=100, digits=2, unit="%"),
            "*" if r["pareto"] else "") for r in result["summary"]]
    return header, out


def paired_rows(result: dict[str, Any]) -> tuple[tuple[str, ...],
                                                 list[tuple[str, ...]]]:
    """Top-1 points of every non-reference setting against each thin width
    (and PruneTrain against its scratch control): mean [95 % CI], `+`/`-`
    where the interval excludes 0."""
    summary = result["summary"]
    refs = [r["label"] for r in summary if r["method"] == "thin"]
    header = ("setting", *(f"vs {ref}" for ref in refs), "vs own scratch")
    out = []
    for r in summary:
        if r["method"] in ("dense", "thin"):
            continue
        own = scratch_of(r["method"])
        out.append((r["label"], *(_short(r["paired"].get(ref))
                                  for ref in refs),
                    _short(r["paired"].get(label(own, r["setting"])))
                    if own else ""))
    return header, out


def _aligned(header: tuple[str, ...], body: list[tuple[str, ...]]) -> str:
    widths = [max(len(row[i]) for row in [header, *body])
              for i in range(len(header))]
    return "\n".join("  ".join(c.rjust(w) for c, w in zip(row, widths))
                     for row in [header, *body])


def _markdown(header: tuple[str, ...], body: list[tuple[str, ...]]) -> str:
    return "\n".join(["| " + " | ".join(header) + " |",
                      "|" + "---|" * len(header)]
                     + ["| " + " | ".join(row) + " |" for row in body])


def _goal_lines(result: dict[str, Any]) -> list[str]:
    return [f"{g['status']}: {g['goal']} ({g['detail']})"
            for g in result.get("goals", [])]


def comparison_table(result: dict[str, Any]) -> str:
    """The settings, the paired table and the goals, as aligned text."""
    return "\n".join([_aligned(*rows(result)), "",
                      _aligned(*paired_rows(result)), *_goal_lines(result)])


def comparison_markdown(result: dict[str, Any]) -> str:
    """The same as Markdown tables (BENCHMARKS.md), front settings bold."""
    header, body = rows(result)
    body = [(f"**{row[0]}**" if row[-1] else row[0], *row[1:-1])
            for row in body]
    return "\n\n".join([_markdown(header[:-1], body),
                        _markdown(*paired_rows(result)),
                        "\n".join(f"- {line}" for line in _goal_lines(result))])


# prunetrain_time and prunetrain_undo (rank="time", undo_slower=True), and
# prunetrain_uniform(_widths) (earlier rankings, BENCHMARKS.md) are no
# longer run; results files of earlier sweeps hold them (tools/results/).
# Their plot colours; a method not listed gets one of `_OTHER_COLORS`.
_COLORS = {
    "dense": "black", "thin": "tab:blue", "prunetrain": "tab:red",
    "scratch": "tab:orange", "paper": "tab:green",
    "prunetrain_norm_per_flop": "darkred",
    "scratch_norm_per_flop": "tab:brown",
    "prunetrain_thin_widths": "gold", "scratch_thin_widths": "olive",
    "prunetrain_thin_gentle_no_lasso": "teal",
    "scratch_thin_gentle_no_lasso": "khaki",
    "prunetrain_eb_gentle": "darkviolet", "prunetrain_eb_gentle_rewarm":
    "tab:olive", "prunetrain_time": "tab:purple",
    "prunetrain_undo": "tab:brown", "prunetrain_uniform": "tab:pink",
    "scratch_uniform": "tab:olive", "prunetrain_uniform_widths": "tab:cyan",
    "scratch_uniform_widths": "tab:gray"}
_OTHER_COLORS = ("navy", "crimson", "darkgreen", "sienna", "slateblue")


def _color(method: str, methods: Sequence[str]) -> str:
    """A method's plot colour (`methods`: every method of the plot, in
    order, for the colours of unlisted ones).

    >>> _color("dense", []), _color("new_a", ["new_b", "new_a"])
    ('black', 'crimson')
    """
    if method in _COLORS:
        return _COLORS[method]
    others = [m for m in methods if m not in _COLORS]
    return _OTHER_COLORS[others.index(method) % len(_OTHER_COLORS)]


def plot(result: dict[str, Any], path: str) -> None:
    """Top-1 vs training time (replayed, or wall) and vs training FLOPs
    (ratios to dense), one point per run, setting means with their Pareto
    front drawn."""
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    key = time_key(result)
    figure, axes = plt.subplots(1, 2, figsize=(12, 4.8), sharey=True)
    runs = [r for r in result["runs"] if "ratios" in r]
    methods = list(dict.fromkeys(r["method"] for r in runs))
    for ax, x_key, name in (
            (axes[0], key, key.replace("_", " ")),
            (axes[1], "train_flops", "training FLOPs")):
        for method in methods:
            mine = [r for r in runs if r["method"] == method]
            ax.scatter([r["ratios"][x_key] for r in mine],
                       [r["accuracy"] for r in mine], s=14, alpha=0.45,
                       color=_color(method, methods), label=method)
        summary = result["summary"]
        means = [(r[x_key]["mean"], r["top1"]["mean"]) for r in summary]
        for row, (x, y) in zip(summary, means):
            ax.errorbar(x, y, xerr=row[x_key]["std"],
                        yerr=row["top1"]["std"], fmt="D", ms=5,
                        color=_color(row["method"], methods), capsize=2)
            ax.annotate(row["label"], (x, y), fontsize=7, xytext=(3, 3),
                        textcoords="offset points")
        front = sorted(means[i] for i in pareto(means))
        ax.step([p[0] for p in front], [p[1] for p in front], where="post",
                color="gray", linestyle="--", label="Pareto front (means)")
        ax.set_xlabel(f"{name} / dense (same seed)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("top-1 (test set)")
    axes[0].legend(fontsize=8, loc="lower right")
    config = result["config"]
    where = result.get("replay", {}).get("machine")
    figure.suptitle(f"{config['model']} on {config['data']}, "
                    f"{config['epochs']} epochs, seeds {result['seeds']}"
                    + (f"; replayed on {replay_lib.describe(where)}"
                       if where else ""), fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)

