"""Training memory and speed against dataset size: the trainer streams its data from disk.

For each size N (default 200, 2,000 and 20,000 cases), a subprocess writes N small cases (64 x 64 PNG image with a
rectangle mask) into a temporary folder in the ``folder`` layout and prepares it with the ``folder`` builder
(``datasets`` Arrow files on disk). Then another subprocess trains Med-SA adapters of a tiny random SAM (64 px) for
``--steps`` optimizer steps on that dataset (batch 2, prefetch 2, one thread) and reports:

- its peak resident set size (``ru_maxrss``: the whole training process, imports included), and
- steps per second between the end of step 1 and the end of the last step (start-up and the mask scan excluded).

The training runs of all sizes are interleaved and repeated (``--repeats``); a size's figures are the largest peak
RSS and the best steps per second of its repeats (the least disturbed by other work on a shared machine). The
preparing process's peak RSS is reported too (the builder writes the Arrow files case by case).

Claims: the peak RSS at the largest size is at most 1.2x the one at the smallest, and steps per second do not fall
with the size (largest >= 0.9x smallest, to allow for timing noise on a shared machine).

Usage:
    python benchmarks/bench_data_scale.py                      # 200, 2,000, 20,000 cases, 50 steps
    python benchmarks/bench_data_scale.py --sizes 50 200 --steps 5      # a quick check
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve()
REPO = HERE.parents[1]


def write_cases(root: Path, n: int, size: int = 64, seed: int = 0) -> None:
    """``n`` cases ``images/case_XXXXX.png`` (RGB noise with a brighter rectangle) + ``masks/`` (0/255 rectangle)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i in range(n):
        image = rng.integers(0, 120, (size, size, 3), dtype=np.uint8)
        mask = np.zeros((size, size), dtype=np.uint8)
        y, x = rng.integers(2, size // 2, 2)
        h, w = rng.integers(6, size // 2, 2)
        mask[y : y + h, x : x + w] = 255
        image[mask > 0] += 100
        Image.fromarray(image).save(root / "images" / f"case_{i:05d}.png")
        Image.fromarray(mask).save(root / "masks" / f"case_{i:05d}.png")


def prepare(root: Path, n: int) -> dict:
    """Writes and builds the dataset of ``n`` cases (run in its own process)."""
    from peft_medsa.data.builders import load_benchmark

    began = time.perf_counter()
    write_cases(root / "data", n)
    written = time.perf_counter()
    data = load_benchmark("folder", root / "data", split="train", cache_dir=root / "cache")
    return {"cases": len(data), "write_s": written - began, "build_s": time.perf_counter() - written,
            "prepare_peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def train(root: Path, steps: int, prefetch: int) -> dict:
    """Trains on the prepared dataset (run in its own process) and reports peak RSS and steps per second."""
    import torch
    from peft import get_peft_model

    import peft_medsa
    from peft_medsa.data.builders import load_benchmark
    from peft_medsa.training import MedSATrainer, TrainingConfig

    sys.path.insert(0, str(REPO / "tests"))
    from conftest import tiny_sam

    torch.set_num_threads(1)
    torch.set_flush_denormal(True)
    data = load_benchmark("folder", root / "data", split="train", cache_dir=root / "cache")
    model = get_peft_model(tiny_sam(), peft_medsa.MedSAConfig(r=4))
    config = TrainingConfig(output_dir=str(root / "run"), max_steps=steps, batch_size=2, learning_rate=1e-3,
                            save_every=0, max_corrective_clicks=1, mixed_precision="no", prefetch=prefetch,
                            show_progress=False, overwrite=True, cpu=True)
    times: dict[int, float] = {}
    began = time.perf_counter()
    clock = [lambda _, step: times.setdefault(step, time.perf_counter())]
    trainer = MedSATrainer(model, data, config, callbacks=clock)
    trainer.train()
    seen = {case for batch in trainer.case_ids_seen for case in batch}
    return {
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "steps_per_s": (steps - 1) / (times[steps] - times[1]),
        "total_s": time.perf_counter() - began,
        "distinct_cases_trained": len(seen),
    }


def child(args: list[str]) -> dict:
    result = subprocess.run([sys.executable, str(HERE), *args], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{args[0]} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[200, 2000, 20000])
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--prefetch", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2, help="interleaved training runs per size")
    parser.add_argument("--json", default=None, help="also write the rows to this JSON file")
    parser.add_argument("--_prepare", nargs=2, metavar=("ROOT", "N"), help=argparse.SUPPRESS)
    parser.add_argument("--_train", metavar="ROOT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._prepare:
        print(json.dumps(prepare(Path(args._prepare[0]), int(args._prepare[1]))))
        return
    if args._train:
        print(json.dumps(train(Path(args._train), args.steps, args.prefetch)))
        return
    rows = []
    with tempfile.TemporaryDirectory(prefix="medsa-scale-") as tmp:
        roots = {n: Path(tmp) / f"n{n}" for n in args.sizes}
        built = {}
        for n, root in roots.items():
            root.mkdir()
            built[n] = child(["--_prepare", str(root), str(n)])
            print(f"{n:>6} cases written and built in {built[n]['write_s'] + built[n]['build_s']:.1f} s "
                  f"(peak RSS {built[n]['prepare_peak_rss_mb']:.0f} MB)", flush=True)
        runs: dict[int, list[dict]] = {n: [] for n in args.sizes}
        for _ in range(args.repeats):
            for n, root in roots.items():
                runs[n].append(child(["--_train", str(root), "--steps", str(args.steps), "--prefetch",
                                      str(args.prefetch)]))
    for n in args.sizes:
        row = {"cases": n, **built[n], "peak_rss_mb": max(r["peak_rss_mb"] for r in runs[n]),
               "steps_per_s": max(r["steps_per_s"] for r in runs[n]),
               "steps_per_s_runs": [r["steps_per_s"] for r in runs[n]],
               "distinct_cases_trained": runs[n][0]["distinct_cases_trained"]}
        rows.append(row)
        print(f"{n:>6} cases: peak RSS {row['peak_rss_mb']:.0f} MB, {row['steps_per_s']:.2f} steps/s (runs: "
              + ", ".join(f"{v:.2f}" for v in row["steps_per_s_runs"])
              + f"; {args.steps} steps, {row['distinct_cases_trained']} distinct cases)", flush=True)
    small, large = rows[0], rows[-1]
    rss, speed = large["peak_rss_mb"] / small["peak_rss_mb"], large["steps_per_s"] / small["steps_per_s"]
    print(f"peak RSS {large['cases']} / {small['cases']} cases: {rss:.3f} (claim <= 1.2: "
          f"{'met' if rss <= 1.2 else 'MISSED'}); steps/s ratio {speed:.3f} (claim >= 0.9: "
          f"{'met' if speed >= 0.9 else 'MISSED'})")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
