"""Exact resume: a run killed with SIGKILL and resumed ends with the same adapter weights as an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from peft_medsa.training import MedSATrainer, TrainingConfig, latest_checkpoint
from test_training_utils import tiny_peft_model, toy_samples, trainable_state

HELPER = Path(__file__).with_name("test_training_utils.py")


def run_in_process(output_dir: Path, resume: bool) -> MedSATrainer:
    """The helper script's run (same config), in this process with one thread."""
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        config = TrainingConfig(
            output_dir=str(output_dir), max_steps=6, batch_size=2, gradient_accumulation_steps=2,
            learning_rate=5e-3, warmup_steps=1, save_every=2, max_corrective_clicks=2, initial_clicks=3,
            resume=resume, show_progress=False, seed=3,
        )
        trainer = MedSATrainer(tiny_peft_model(), toy_samples(12), config)
        trainer.train()
    finally:
        torch.set_num_threads(threads)
        AcceleratorState._reset_state(True)
    return trainer


@pytest.mark.slow
def test_sigkill_then_resume_is_bitwise_identical(tmp_path):
    killed = tmp_path / "killed"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    proc = subprocess.run([sys.executable, str(HELPER), str(killed), "--kill-at", "5"], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert latest_checkpoint(killed).name == "step-00000004"
    logged = [json.loads(line)["step"] for line in (killed / "metrics.jsonl").read_text().splitlines()]
    assert logged == [1, 2, 3, 4, 5] and not (killed / "final").exists()

    resumed = run_in_process(killed, resume=True)
    assert len(resumed.case_ids_seen) == 2 * 2  # steps 5 and 6 only
    reference = run_in_process(tmp_path / "uninterrupted", resume=False)
    assert resumed.case_ids_seen == reference.case_ids_seen[-4:]  # same data order after the resume
    a, b = trainable_state(resumed.model), trainable_state(reference.model)
    assert a.keys() == b.keys() and len(a) > 0
    differing = [k for k in a if not torch.equal(a[k], b[k])]
    assert differing == []
    rows = [json.loads(line) for line in (killed / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6]  # the killed run's step 5 row was replaced
    ref_rows = [json.loads(line) for line in (tmp_path / "uninterrupted" / "metrics.jsonl").read_text().splitlines()]
    assert [r["loss"] for r in rows] == [r["loss"] for r in ref_rows]
