r"""Kills a recipe run and resumes it; says whether it ends where the
uninterrupted run does.

Runs a recipe command (`recipes.cifar` flags) once uninterrupted, then
once per scenario in a fresh `--log_dir`: SIGKILLed right after the
checkpoint of each epoch in `--kill_after` (one scenario per epoch), and,
with `--random_kills=N`, N SIGKILLs in a row at random moments (uniform
over the uninterrupted run's duration, import and set-up included), each
followed by the same command with `--resume`. It prints the validation
top-1 of every epoch, the final top-1 and parameters, and whether the final
weights and optimizer state equal the uninterrupted run's bit for bit.

    python -m tools.resume_check --kill_after=3,5 -- --model=resnet20 \
        --width_multiplier=0.5 --data=digits --epochs=8 --interval=1 \
        --proximal --scales --strength=0.3 --penalty_epochs=4 \
        --batch_size=64 --lr_decay_epochs=6
    python -m tools.resume_check --random_kills=7 -- <the same flags>

Run from the repository root; each run is a child `python -m
tools.resume_check` process (this checkout's folder first on its
PYTHONPATH). Exits 1 when a scenario ends elsewhere.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from typing import Any

from tools import results

RESULT_FILE = "resume_check.json"


def _child(kill_after: int, flags: list[str]) -> None:
    """Runs the recipe with `flags`; SIGKILLs itself once the checkpoint of
    epoch `kill_after` (1-based; 0: never) is complete."""
    import numpy as np
    from absl import flags as absl_flags

    import tf_prunetrain
    from recipes import common

    if kill_after:
        save = tf_prunetrain.Checkpoint.save

        def save_then_die(self: Any, epoch: int) -> str:
            path = save(self, epoch)
            if epoch == kill_after:
                os.kill(os.getpid(), signal.SIGKILL)
            return path

        tf_prunetrain.Checkpoint.save = save_then_die
    common.define_flags(common.Config())
    absl_flags.FLAGS(["recipe", *flags])
    config = common.config_from_flags()
    result = common.run(config)
    model = result["model"]
    np.savez(os.path.join(config.log_dir, "final.npz"),
             *[np.asarray(v.numpy()) for v in model.weights],
             *[np.asarray(v.numpy()) for v in model.optimizer.variables])
    results.write({"accuracy": result["accuracy"],
                   "params": result["params"]},
                  os.path.join(config.log_dir, RESULT_FILE))


def _start(log_dir: str, flags: list[str], kill_after: int,
           resume: bool) -> subprocess.Popen:
    command = [sys.executable, "-m", "tools.resume_check",
               f"--child_kill_after={kill_after}", "--", *flags,
               f"--log_dir={log_dir}", "--verbose=0"]
    if resume:
        command.append("--resume")
    return subprocess.Popen(command, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True,
                            env=_environment())


def _environment() -> dict[str, str]:
    """This process's environment with the folder holding the `tools`
    package first on PYTHONPATH: the child imports this checkout's `tools`
    and `recipes` from whatever folder it starts in."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    paths = [root] + [p for p in os.environ.get("PYTHONPATH", "").split(
        os.pathsep) if p]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}


def _finish(process: subprocess.Popen, exits: tuple[int, ...]) -> None:
    _, stderr = process.communicate()
    if process.returncode not in exits:
        raise RuntimeError(f"the recipe exited with {process.returncode}, "
                           f"expected one of {exits}:\n{stderr[-3000:]}")


def _outcome(log_dir: str) -> dict[str, Any]:
    """Validation top-1 per epoch (the last record of each, from the run
    log), the final figures and the final variables."""
    import numpy as np

    val = {}
    with open(os.path.join(log_dir, "prunetrain.jsonl"),
              encoding="utf-8") as f:
        for line in f:
            record = json.loads(line)
            if record["event"] == "epoch":
                val[record["epoch"]] = record["logs"].get("val_accuracy")
    outcome = results.read(os.path.join(log_dir, RESULT_FILE))
    final = np.load(os.path.join(log_dir, "final.npz"))
    outcome.update(val=val, variables=[final[k] for k in final.files])
    return outcome


def _scenario(log_dir: str, flags: list[str], kills: list[Any]) -> dict:
    """Each kill: an epoch (int, killed after its checkpoint) or a delay in
    seconds (float); then a last run to the end."""
    for number, kill in enumerate(kills):
        epoch = kill if isinstance(kill, int) else 0
        process = _start(log_dir, flags, epoch, resume=number > 0)
        exits: tuple[int, ...] = (-signal.SIGKILL,)  # killed after `epoch`
        if isinstance(kill, float):
            try:
                process.wait(timeout=kill)
            except subprocess.TimeoutExpired:
                process.send_signal(signal.SIGKILL)
            exits = (-signal.SIGKILL, 0)  # it may have ended before
        _finish(process, exits)
    last = _start(log_dir, flags, 0, resume=bool(kills))
    _finish(last, (0,))
    return _outcome(log_dir)


def _same(a: dict, b: dict) -> bool:
    import numpy as np
    return len(a["variables"]) == len(b["variables"]) and all(
        x.shape == y.shape and np.array_equal(x, y)
        for x, y in zip(a["variables"], b["variables"]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kill_after", default="",
                        help="comma-separated epochs: one scenario each, "
                             "killed after that epoch's checkpoint")
    parser.add_argument("--random_kills", type=int, default=0,
                        help="one scenario of this many kills in a row at "
                             "random moments")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the random kill moments")
    parser.add_argument("--child_kill_after", type=int, default=None,
                        help=argparse.SUPPRESS)
    parser.add_argument("flags", nargs="*", help="the recipe's flags")
    args = parser.parse_args()
    if args.child_kill_after is not None:
        _child(args.child_kill_after, args.flags)
        return 0
    if any(f.startswith(("--log_dir", "--resume")) for f in args.flags):
        parser.error("give the recipe's flags without --log_dir and "
                     "--resume: each scenario gets its own folder")
    kill_after = [int(k) for k in args.kill_after.split(",") if k]
    with tempfile.TemporaryDirectory() as work:
        start = time.perf_counter()
        rows = {"uninterrupted": _scenario(os.path.join(work, "u"),
                                           args.flags, [])}
        seconds = time.perf_counter() - start
        print(f"uninterrupted: {seconds:.0f} s", flush=True)
        for epoch in kill_after:
            rows[f"killed after epoch {epoch}"] = _scenario(
                os.path.join(work, f"k{epoch}"), args.flags, [epoch])
        if args.random_kills:
            moments = random.Random(args.seed)
            delays = [moments.uniform(0.0, seconds)
                      for _ in range(args.random_kills)]
            name = (f"{args.random_kills} random kills (at "
                    + ", ".join(f"{d:.1f}" for d in delays) + " s)")
            rows[name] = _scenario(os.path.join(work, "random"), args.flags,
                                   delays)
    reference = rows["uninterrupted"]
    epochs = sorted(reference["val"])
    print("| run | " + " | ".join(f"epoch {e} val" for e in epochs)
          + " | final top-1 | final params | bit-identical |")
    print("|---" * (len(epochs) + 4) + "|")
    for name, row in rows.items():
        cells = [f"{row['val'].get(e, float('nan')):.4f}" for e in epochs]
        print(f"| {name} | " + " | ".join(cells)
              + f" | {row['accuracy']:.4f} | {row['params']:,} | "
              + ("yes" if _same(row, reference) else "**no**") + " |")
    return 0 if all(_same(row, reference) for row in rows.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
