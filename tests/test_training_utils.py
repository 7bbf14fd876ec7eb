"""Helpers of the training tests: toy 2D samples and a training script run in subprocesses (kill/resume, DDP).

Run as a script: ``python tests/test_training_utils.py OUT [--max-steps N] [--kill-at STEP] [--resume]``. Under
``torchrun`` each rank writes ``rank<r>.json`` (case ids per micro-batch) and, without FSDP, ``rank<r>.safetensors``
(adapter weights) into OUT. ``--kill-rank``, ``--seed-of-rank`` and ``--r-of-rank`` make one rank misbehave (the
distributed failure tests).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))


def toy_samples(n: int, seed: int = 0, shape: tuple[int, int] = (48, 40)) -> list[dict]:
    """``n`` samples: noise images (uint8, ``shape`` + (3,)) with a bright rectangle that is the mask."""
    rng = np.random.default_rng(seed)
    samples = []
    for i in range(n):
        image = rng.integers(0, 120, (*shape, 3), dtype=np.uint8)
        mask = np.zeros(shape, dtype=np.uint8)
        y, x = rng.integers(4, shape[0] // 2, 2)
        mask[y : y + 14, x : x + 12] = 1
        image[mask > 0] += 120
        samples.append({"image": image, "mask": mask, "case_id": f"case{seed}_{i:02d}", "spacing": (1.0, 1.0)})
    return samples


def tiny_peft_model(r: int = 4, seed: int = 0):
    """A Med-SA PeftModel on the tiny SAM of conftest."""
    from peft import get_peft_model

    import peft_medsa

    from conftest import tiny_sam

    return get_peft_model(tiny_sam(seed), peft_medsa.MedSAConfig(r=r))


def trainable_state(model) -> dict[str, torch.Tensor]:
    """The trainable tensors of a (possibly wrapped) PeftModel, cloned, keyed without wrapper prefixes."""
    return {n.removeprefix("module."): p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def main() -> None:
    from safetensors.torch import save_file

    from peft_medsa.training import MedSATrainer, TrainingConfig

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("output_dir")
    parser.add_argument("--max-steps", type=int, default=6)
    parser.add_argument("--save-every", type=int, default=2)
    parser.add_argument("--kill-at", type=int, default=0, help="SIGKILL this process after this step")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--dump", action="store_true", help="write case ids and adapter weights per rank")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--eval", action="store_true", help="validate on 3 toy samples every 2 steps")
    parser.add_argument("--hang-at", type=int, default=0, help="--kill-rank (or every rank) hangs after this step")
    parser.add_argument("--collective-timeout", type=int, default=300)
    parser.add_argument("--kill-rank", type=int, default=None, help="only this rank kills itself at --kill-at")
    parser.add_argument("--seed-of-rank", type=int, nargs=2, default=None, metavar=("RANK", "SEED"))
    parser.add_argument("--r-of-rank", type=int, nargs=2, default=None, metavar=("RANK", "R"))
    args = parser.parse_args()
    rank = int(os.environ.get("RANK", "0"))
    torch.set_num_threads(1)
    torch.set_flush_denormal(True)
    config = TrainingConfig(
        output_dir=args.output_dir, max_steps=args.max_steps, batch_size=args.batch_size,
        gradient_accumulation_steps=2,
        learning_rate=5e-3, warmup_steps=1, save_every=args.save_every, max_corrective_clicks=2, initial_clicks=3,
        resume=args.resume, show_progress=False, collective_timeout=args.collective_timeout,
        eval_every=2 if args.eval else 0,
        seed=args.seed_of_rank[1] if args.seed_of_rank and args.seed_of_rank[0] == rank else 3,
    )
    r = args.r_of_rank[1] if args.r_of_rank and args.r_of_rank[0] == rank else 4

    def kill(trainer, step):
        if step == args.kill_at and args.kill_rank in (None, rank):
            os.kill(os.getpid(), signal.SIGKILL)
        if step == args.hang_at and args.kill_rank in (None, rank):
            time.sleep(3600)

    eval_data = toy_samples(3, seed=9) if args.eval else None
    trainer = MedSATrainer(tiny_peft_model(r=r), toy_samples(12), config, eval_data=eval_data, callbacks=[kill])
    trainer.train()
    out = Path(args.output_dir)
    (out / f"rank{rank}.json").write_text(json.dumps(trainer.case_ids_seen))
    if args.dump and not trainer.sharded:
        save_file({k: v.contiguous() for k, v in trainable_state(trainer.model).items()},
                  str(out / f"rank{rank}.safetensors"))


if __name__ == "__main__":
    main()
