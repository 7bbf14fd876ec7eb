"""Training loses nothing and never resumes silently: options checked before step 1, ``final/`` written before the
final validation, ``resume=True`` without a checkpoint refused, truncated checkpoints refused or skipped."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest

import peft_medsa.training.loop as loop_module
from peft_medsa.training import MedSATrainer, TrainingConfig
from peft_medsa.training.checkpoint_integrity import IncompleteCheckpointError, checkpoint_problem
from test_training_utils import tiny_peft_model, toy_samples, trainable_state

pytestmark = pytest.mark.usefixtures("fresh_accelerate")


def config(tmp_path: Path, **overrides) -> TrainingConfig:
    values = dict(output_dir=str(tmp_path / "run"), max_steps=4, batch_size=2, learning_rate=5e-3, save_every=2,
                  max_corrective_clicks=0, show_progress=False, seed=1, keep_checkpoints=3)
    values.update(overrides)
    return TrainingConfig(**values)


@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        (dict(eval_setting="2boxes"), "TrainingConfig.eval_setting='2boxes' is not a validation prompt setting"),
        (dict(resume="no"), "TrainingConfig.resume must be True or False, got 'no'"),
        (dict(cpu="no"), "TrainingConfig.cpu must be True or False"),
        (dict(max_grad_norm=float("nan")), "TrainingConfig.max_grad_norm must be a finite number"),
        (dict(learning_rate=float("inf")), "TrainingConfig.learning_rate must be a finite number"),
        (dict(weight_decay=-1.0), "TrainingConfig.weight_decay must be >= 0"),
    ],
)
def test_bad_options_refused_when_the_config_is_built(tmp_path, overrides, words):
    with pytest.raises(ValueError) as info:
        config(tmp_path, **overrides)
    assert words in str(info.value)
    assert not (tmp_path / "run").exists()


def test_failing_final_validation_keeps_the_trained_adapter(tmp_path, monkeypatch):
    def broken_validation(*args, **kwargs):
        raise RuntimeError("validation exploded")

    monkeypatch.setattr(loop_module, "evaluate_model", broken_validation)
    trainer = MedSATrainer(tiny_peft_model(), toy_samples(6), config(tmp_path, max_steps=2, save_every=0),
                           eval_data=toy_samples(2))
    with pytest.raises(RuntimeError, match="validation exploded"):
        trainer.train()
    final = tmp_path / "run" / "final"
    from safetensors.torch import load_file

    saved = load_file(str(final / "adapter_model.safetensors"))
    trained = trainable_state(trainer.model)
    assert len(saved) == len(trained) > 0
    assert json.loads((final / "adapter_config.json").read_text())["peft_type"] == "MEDSA"


def test_resume_without_checkpoint_is_refused_naming_the_folder(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(IncompleteCheckpointError, match=rf"resume=True but {out} holds no checkpoint"):
        MedSATrainer(tiny_peft_model(), toy_samples(6), config(tmp_path, resume=True)).train()
    assert not out.exists()  # nothing created, no metrics.jsonl, no final/
    MedSATrainer(tiny_peft_model(), toy_samples(6), config(tmp_path, max_steps=1, save_every=0)).train()
    with pytest.raises(IncompleteCheckpointError, match="holds no checkpoint"):
        MedSATrainer(tiny_peft_model(), toy_samples(6), config(tmp_path, max_steps=2, resume=True)).train()
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1]  # no duplicated steps


@pytest.fixture
def two_checkpoints(tmp_path):
    MedSATrainer(tiny_peft_model(), toy_samples(6), config(tmp_path)).train()
    folder = tmp_path / "run" / "checkpoints"
    assert (folder / "latest").read_text().strip() == "step-00000004"
    return folder


@pytest.mark.parametrize(
    "name",
    ["random_states_0.pkl", "model.safetensors", "optimizer.bin", "custom_checkpoint_0.pkl", "trainer_state.json"],
)
def test_truncated_file_falls_back_to_the_previous_checkpoint_with_a_warning(tmp_path, two_checkpoints, name):
    target = two_checkpoints / "step-00000004" / name
    target.write_bytes(target.read_bytes()[: max(1, target.stat().st_size // 2)])
    assert name in checkpoint_problem(target.parent)
    resumed = MedSATrainer(tiny_peft_model(), toy_samples(6), config(tmp_path, resume=True))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        resumed.train()
    messages = [str(w.message) for w in caught if "is incomplete" in str(w.message)]
    assert messages and "step-00000004" in messages[0] and "step-00000002" in messages[0]
    assert len(resumed.case_ids_seen) == 2  # steps 3 and 4 again, from step 2


def test_truncated_only_checkpoint_is_refused_with_its_path(tmp_path, two_checkpoints):
    import shutil

    shutil.rmtree(two_checkpoints / "step-00000002")
    target = two_checkpoints / "step-00000004" / "random_states_0.pkl"
    target.write_bytes(target.read_bytes()[:10])
    with pytest.raises(IncompleteCheckpointError, match=r"cannot resume from .*step-00000004: random_states_0.pkl"):
        MedSATrainer(tiny_peft_model(), toy_samples(6), config(tmp_path, resume=True)).train()


def test_checkpoint_without_manifest_is_checked_by_reading_it(two_checkpoints):
    checkpoint = two_checkpoints / "step-00000004"
    (checkpoint / "manifest.json").unlink()
    assert checkpoint_problem(checkpoint) is None
    state = checkpoint / "random_states_0.pkl"
    state.write_bytes(state.read_bytes()[:20])
    assert "random_states_0.pkl cannot be read" in checkpoint_problem(checkpoint)
