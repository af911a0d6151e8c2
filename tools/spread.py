r"""How far a replay's step ratios move between processes: `--processes`
single-process replays of a results file's architectures (`tools.retime`,
the train steps only), each in a fresh process, and per architecture its
step-time ratio to the reference (dense) in each, with the half-range
around their median.

Issue 40 found the step time of one architecture bimodal across processes
under glibc's malloc (about 0.7x apart); the workers of `tools.sweep`
preload jemalloc or tcmalloc where the machine has one, which removes it.
`--malloc` replays on the C library's malloc instead (the "before").

    python -m tools.spread tools/results/mobilenetv2_fashion_mnist_5seeds.json \
        --processes=6 --json=spread.json
    python -m tools.spread ... --malloc     # glibc's malloc, for comparison
"""

from __future__ import annotations

import os
import statistics
from typing import Any, Sequence

from absl import app
from absl import flags

from tools import results as results_lib
from tools import retime
from tools import sweep

FLAGS = flags.FLAGS


def spread(replays: Sequence[dict[str, Any]], reference: str
           ) -> dict[str, dict[str, float]]:
    """Per item: the median, lowest and highest of its step-seconds ratio to
    `reference` over `replays`, and the half-range over the median.

    >>> row = spread([{"step_seconds": {"d": 1.0, "t": 0.5}},
    ...               {"step_seconds": {"d": 2.0, "t": 1.1}},
    ...               {"step_seconds": {"d": 1.0, "t": 0.6}}], "d")["t"]
    >>> {key: round(value, 3) for key, value in row.items()}
    {'median': 0.55, 'low': 0.5, 'high': 0.6, 'half_range': 0.091}
    """
    out = {}
    for item in replays[0]["step_seconds"]:
        ratios = [r["step_seconds"][item] / r["step_seconds"][reference]
                  for r in replays]
        middle = statistics.median(ratios)
        out[item] = {"median": middle, "low": min(ratios),
                     "high": max(ratios),
                     "half_range": (max(ratios) - min(ratios)) / 2 / middle}
    return out


def table(rows: dict[str, dict[str, float]], reference: str) -> str:
    """A Markdown table of `spread`'s rows, the widest first."""
    lines = ["| architecture | median ratio | lowest | highest | ± |",
             "|---|---|---|---|---|"]
    for item, row in sorted(rows.items(), key=lambda kv: -kv[1][
            "half_range"]):
        if item != reference:
            lines.append(f"| {item} | {row['median']:.3f} | {row['low']:.3f}"
                         f" | {row['high']:.3f} | "
                         f"{100 * row['half_range']:.1f} % |")
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    if len(argv) != 2:
        raise app.UsageError("Pass one results file.")
    result = results_lib.read(argv[1])
    replays: list[dict[str, Any]] = []

    def done(task: int, new: dict[str, Any]) -> None:
        replays.append(new)
        print(f"process {task + 1}/{FLAGS.processes}: {new['seconds']:.0f} s "
              f"on {new['machine']['allocator']}", flush=True)

    sweep.run_tasks(range(FLAGS.processes),
                    lambda task: (result, FLAGS.rounds, FLAGS.steps,
                                  FLAGS.warmup, 0),
                    retime.replay_runs, done, jobs=1,
                    threads=os.cpu_count() or 1, fresh=True,
                    preload=not FLAGS.malloc)
    reference = retime.reference(result)
    rows = spread(replays, reference)
    print(f"\nStep-time ratio to {reference} over {len(replays)} processes "
          f"({replays[0]['machine']['allocator']}):\n{table(rows, reference)}")
    widest = max(row["half_range"] for item, row in rows.items()
                 if item != reference)
    print(f"\nwidest: ±{100 * widest:.1f} %")
    if FLAGS.json:
        results_lib.write({"source": argv[1], "reference": reference,
                           "replays": replays, "spread": rows}, FLAGS.json)


def define_flags() -> None:
    flags.DEFINE_integer("processes", 6, "Fresh processes, one replay each.")
    flags.DEFINE_integer("rounds", 3, "Round-robin rounds per replay.")
    flags.DEFINE_integer("steps", 6, "Timed steps per item per round.")
    flags.DEFINE_integer("warmup", 2, "Untimed steps per item per round.")
    flags.DEFINE_bool("malloc", False,
                      "Replay on the C library's malloc (no preloaded "
                      "allocator).")
    flags.DEFINE_string("json", None, "Also write the replays and rows here.")


if __name__ == "__main__":
    define_flags()
    app.run(main)
