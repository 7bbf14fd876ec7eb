"""One image-encoder forward per training micro-batch against the reference path, side by side in one run.

``MedSATrainer`` simulates the corrective clicks of a micro-batch (0 to ``max_corrective_clicks`` of them, drawn per
micro-batch) on the current model's prediction. The reference path (``trainer.one_encoder_forward = False``) runs a
separate gradient-free image-encoder forward for them and then the training forward; the default path runs the
encoder once, with gradients, and simulates the clicks on its detached embeddings. Both train the same weights
(``tests/test_training_one_encoder_forward.py``); this script measures what the second forward cost.

Setting: LiteMedSAM, the ISIC training split of ``real_data.py`` (14 images), the models of ``learning_curves.py``
(``medsa``: the default recipe, its prompts and frozen-prefix cache; ``full``: every parameter, no cache), CPU, batch
2. Each round trains both variants from the same start (same seed: same batches, prompts and clicks), in an order
that alternates between rounds. Printed per method: seconds per step of each variant (median over rounds) over the
whole run (frozen-prefix cache filling included) and over the steps after ``--skip``, and the median of the
per-round ratios one-forward / reference.

Usage:
    python benchmarks/bench_train_step.py                          # medsa 30 steps, full 8 steps, 3 rounds
    python benchmarks/bench_train_step.py --methods full --rounds 2
    python benchmarks/bench_train_step.py --quick                  # smoke run (4 images, 3 steps, 1 round)
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _real_data_sets import DATASETS, DEFAULT_DATA_ROOT, load_split  # noqa: E402
from learning_curves import build, run_config  # noqa: E402

STEPS = {"medsa": 30, "full": 8}
VARIANTS = ("one forward", "reference")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--methods", nargs="+", choices=sorted(STEPS), default=list(STEPS))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--skip", type=int, default=10, help="steps left out of the steady-state time")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--data-root", type=Path, default=DEFAULT_DATA_ROOT)
    parser.add_argument("--quick", action="store_true")
    return parser.parse_args(argv)


def time_training(method: str, one_forward: bool, train, steps: int, skip: int) -> tuple[float, float]:
    """``(seconds per step over the whole run, seconds per step after step skip)`` of one training."""
    from peft_medsa.training import MedSATrainer

    model, training = build(method, seed=0)
    marks: dict[int, float] = {}
    with tempfile.TemporaryDirectory(prefix="bench_step_") as tmp:
        trainer = MedSATrainer(model, train, run_config(training, tmp, steps, seed=0),
                               callbacks=[lambda _trainer, step: marks.__setitem__(step, time.perf_counter())])
        trainer.one_encoder_forward = one_forward
        start = time.perf_counter()
        trainer.train()
    whole = (marks[steps] - start) / steps
    steady = (marks[steps] - marks[skip]) / (steps - skip) if 0 < skip < steps else whole
    return whole, steady


def main(argv=None) -> int:
    args = parse_args(argv)
    if not args.data_root.is_dir():
        print(f"SKIPPED: real data folder {args.data_root} is absent")
        return 0
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    train, _ = load_split(DATASETS["isic"], args.data_root, *((4, 2) if args.quick else (None, None)))
    rounds = 1 if args.quick else args.rounds
    print(f"torch threads {args.threads}, {len(train)} ISIC training images, {rounds} rounds")
    for method in args.methods:
        steps = 3 if args.quick else STEPS[method]
        skip = 1 if args.quick else min(args.skip, steps // 2)
        times: dict[str, list[tuple[float, float]]] = {v: [] for v in VARIANTS}
        for r in range(rounds):
            order = VARIANTS if r % 2 == 0 else VARIANTS[::-1]
            for variant in order:
                times[variant].append(time_training(method, variant == "one forward", train, steps, skip))
                print(f"  {method} round {r} {variant}: {times[variant][-1][0]:.2f} s/step "
                      f"(after step {skip}: {times[variant][-1][1]:.2f})", flush=True)
        print(f"{method} ({steps} steps):")
        for variant in VARIANTS:
            whole = statistics.median(t[0] for t in times[variant])
            steady = statistics.median(t[1] for t in times[variant])
            print(f"  {variant:11s}  {whole:6.2f} s/step   after step {skip}: {steady:6.2f} s/step")
        for k, what in ((0, "whole run"), (1, f"after step {skip}")):
            ratios = [a[k] / b[k] for a, b in zip(times["one forward"], times["reference"])]
            print(f"  one forward / reference ({what}): {statistics.median(ratios):.3f} "
                  f"(rounds: {', '.join(f'{x:.3f}' for x in ratios)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
