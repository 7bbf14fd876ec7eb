"""FSDP on CPU, 2 processes: `accelerate launch` with examples/accelerate_configs/fsdp.yaml (FSDP2 applied by the
trainer, since accelerate does not shard on CPU) gives the adapter of a 1-process run with the same global batch,
and resumes exactly after a SIGKILL. Every launch runs under a timeout, so a hang fails the test."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from dist_launch import CONFIGS, LAUNCH_TIMEOUT, SCRIPT, cpu_env, free_port, run, tool
from peft_medsa.training import MedSATrainer, TrainingConfig, latest_checkpoint
from test_training_utils import tiny_peft_model, toy_samples

STEPS = 4
TOLERANCE = 1e-3
"""Largest allowed absolute difference of an adapter tensor (values up to 0.5) from the 1-process run. Batches,
prompts and losses are the same (losses to 1e-6); float32 sums are taken in another order (2 ranks x 2 images
reduced across ranks against one batch of 4), and AdamW, which divides by the root of the squared gradients,
turns that 1e-8 noise on near-zero gradients into up to 3e-4 after 4 steps (measured; DDP and FSDP agree with
each other to 3e-8)."""


def single_process_run(output_dir: Path, batch_size: int = 4) -> Path:
    """The helper script's run in this process, with one process holding the whole global batch."""
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        config = TrainingConfig(
            output_dir=str(output_dir), max_steps=STEPS, batch_size=batch_size, gradient_accumulation_steps=2,
            learning_rate=5e-3, warmup_steps=1, save_every=2, max_corrective_clicks=2, initial_clicks=3,
            show_progress=False, seed=3,
        )
        MedSATrainer(tiny_peft_model(), toy_samples(12), config).train()
    finally:
        torch.set_num_threads(threads)
        AcceleratorState._reset_state(True)
        GradientState._reset_state()
    return output_dir


def losses(run_dir: Path) -> list[float]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [row["loss"] for row in rows if "loss" in row]


def assert_same_adapter(run_dir: Path, reference_dir: Path) -> None:
    """``run_dir/final`` holds the adapter of ``reference_dir/final`` (within TOLERANCE), with the same losses."""
    reference = load_file(str(reference_dir / "final" / "adapter_model.safetensors"))
    weights = load_file(str(run_dir / "final" / "adapter_model.safetensors"))
    assert weights.keys() == reference.keys() and len(weights) > 0
    worst = max((weights[k] - reference[k]).abs().max().item() for k in weights)
    assert worst <= TOLERANCE, f"adapter differs from the 1-process run by {worst}"
    assert any(weights[k].abs().max() > 0 for k in weights if ".up." in k)  # it trained
    assert losses(run_dir) == pytest.approx(losses(reference_dir), abs=1e-6)  # same batches and prompts


def launch_fsdp(out: Path, *args: str) -> tuple[int, str]:
    cmd = [tool("accelerate"), "launch", "--config_file", str(CONFIGS / "fsdp.yaml"), "--num_processes", "2",
           "--mixed_precision", "no", "--main_process_port", str(free_port()), str(SCRIPT), str(out),
           "--max-steps", str(STEPS), "--save-every", "2", *args]
    return run(cmd, cpu_env(), timeout=LAUNCH_TIMEOUT)


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """The 1-process run with the global batch (4 images) in one process."""
    return single_process_run(tmp_path_factory.mktemp("single") / "run")


def test_fsdp_yaml_is_the_tested_fsdp2_config():
    config = yaml.safe_load((CONFIGS / "fsdp.yaml").read_text())
    assert config["distributed_type"] == "FSDP" and config["fsdp_config"]["fsdp_version"] == 2
    assert "SamVisionLayer" in config["fsdp_config"]["fsdp_transformer_layer_cls_to_wrap"]


@pytest.fixture(scope="module")
def fsdp_run(tmp_path_factory) -> Path:
    """An uninterrupted FSDP run of 2 processes (with validation every 2 steps)."""
    out = tmp_path_factory.mktemp("fsdp") / "run"
    code, log = launch_fsdp(out, "--eval")
    assert code == 0, log[-4000:]
    return out


@pytest.mark.slow
@pytest.mark.distributed
def test_fsdp_two_processes_equal_one_process(fsdp_run, reference):
    out = fsdp_run
    assert_same_adapter(out, reference)
    # validation ran on the sharded model (all ranks), logged once per validation, and saved a best adapter
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "val_dice" in r] == [2, 4]
    assert all(0.0 <= r["val_dice"] <= 1.0 for r in rows if "val_dice" in r)
    best = json.loads((out / "best" / "val_metrics.json").read_text())
    assert load_file(str(out / "best" / "adapter_model.safetensors")).keys() == load_file(
        str(reference / "final" / "adapter_model.safetensors")).keys() and best["step"] in (2, 4)
    # each rank read only its half of every global batch; together they cover each epoch once
    ids = [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [len(i) for i in ids] == [STEPS * 2, STEPS * 2]
    first_epoch = sum(ids[0][:3], []) + sum(ids[1][:3], [])
    assert sorted(first_epoch) == [f"case0_{i:02d}" for i in range(12)]
    # checkpoints hold the gathered adapter tensors, written once, and both ranks' RNG states
    checkpoint = latest_checkpoint(out)
    assert checkpoint.name == f"step-{STEPS:08d}"
    state = json.loads((checkpoint / "trainer_state.json").read_text())
    assert state["sharding"] == "fsdp2" and state["world_size"] == 2
    saved = load_file(str(checkpoint / "sharded_trainable.safetensors"))
    assert sorted(saved) == state["trainable_keys"]
    assert {p.name for p in checkpoint.glob("random_states_*.pkl")} == {"random_states_0.pkl", "random_states_1.pkl"}


@pytest.mark.slow
@pytest.mark.distributed
def test_fsdp_sigkill_then_resume(tmp_path, reference, fsdp_run):
    out = tmp_path / "killed"
    code, log = launch_fsdp(out, "--kill-at", "3", "--kill-rank", "0")
    assert code != 0 and "SIGKILL" in log, log[-3000:]
    assert latest_checkpoint(out).name == "step-00000002" and not (out / "final").exists()
    code, log = launch_fsdp(out, "--resume")
    assert code == 0, log[-4000:]
    assert_same_adapter(out, reference)
    # exact resume: the same adapter and losses as the uninterrupted FSDP run (same reduction order, so bitwise)
    resumed = load_file(str(out / "final" / "adapter_model.safetensors"))
    uninterrupted = load_file(str(fsdp_run / "final" / "adapter_model.safetensors"))
    assert resumed.keys() == uninterrupted.keys()
    assert [k for k in resumed if not torch.equal(resumed[k], uninterrupted[k])] == []
    assert losses(out) == losses(fsdp_run)
    assert len(losses(out)) == STEPS  # the killed run's step 3 row was replaced
    assert len(json.loads((out / "rank0.json").read_text())) == 2 * 2  # the resumed run did steps 3 and 4 only
