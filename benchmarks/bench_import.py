"""Start-up cost, side by side: ``import peft`` vs ``import peft_medsa``, and ``peft-medsa predict`` with a missing
``--image`` (it must fail before loading torch, peft or transformers).

Each measurement is a fresh interpreter (wall time of the whole process, from spawn to exit), interleaved
``peft`` / ``peft_medsa`` / CLI in every round; medians over the rounds. Targets: ``import peft_medsa`` <= 2x
``import peft``; the CLI call <= 1.5 s.

Usage:
    python benchmarks/bench_import.py --rounds 5
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SRC = str(Path(__file__).resolve().parents[1] / "src")


def wall(cmd: list[str], expect: int) -> float:
    env = dict(os.environ, PYTHONPATH=SRC + os.pathsep + os.environ.get("PYTHONPATH", ""))
    start = time.perf_counter()
    result = subprocess.run(cmd, capture_output=True, text=True, env=env)
    elapsed = time.perf_counter() - start
    if result.returncode != expect:
        raise RuntimeError(f"{cmd} exited {result.returncode}: {result.stderr[-500:]}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    missing = str(Path(tempfile.gettempdir()) / "peft-medsa-bench-missing.png")
    commands = {
        "import peft": ([sys.executable, "-c", "import peft"], 0),
        "import peft_medsa": ([sys.executable, "-c", "import peft_medsa"], 0),
        "import python only": ([sys.executable, "-c", "pass"], 0),
        "peft-medsa predict, missing --image": (
            [sys.executable, "-m", "peft_medsa.cli", "predict", "--model", "lite-medsam", "--image", missing,
             "--out", "mask.png"],
            2,
        ),
    }
    times: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(args.rounds):
        for name, (cmd, expect) in commands.items():
            times[name].append(wall(cmd, expect))
    median = {name: statistics.median(t) for name, t in times.items()}
    for name, value in median.items():
        print(f"{name:40s} median {value:.3f} s  (all: {', '.join(f'{t:.2f}' for t in times[name])})")
    print(f"import peft_medsa / import peft: {median['import peft_medsa'] / median['import peft']:.3f} (target <= 2)")
    print(f"peft-medsa predict, missing --image: {median['peft-medsa predict, missing --image']:.3f} s "
          "(target <= 1.5 s)")


if __name__ == "__main__":
    main()
