"""The benchmarks and reports of tf_prunetrain, as a package.

Run from the repository root, as modules:

    python -m tools.benchmark --help     # PruneTrain against the alternatives
    python -m tools.pretrained --help    # prune what is already trained
    python -m tools.step_time            # step time vs FLOPs on this machine

The modules import each other as `from tools import ...` and the recipes
as `from recipes import common`; none edits `sys.path`. The command lines
(`benchmark`, `pretrained`, `step_time`, `bench_*`, `report`,
`resume_check`, `rewarm_control`, `tfmot_paths`) parse flags and call the
library-like modules: `comparison` (the benchmark's methods and sweep),
`retime` (re-timing a results file), `runs` (one training run), `sweep`
(worker processes and the sweep's state), `results` (results files),
`replay`, `summary`, `verdicts`. Timing in alternating rounds is the
library's `tf_prunetrain.latency.round_robin`. Not part of the installed
`tf_prunetrain` package.
"""
