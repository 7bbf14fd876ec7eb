"""The training loop on the tiny SAM: losses, inputs, LR schedule, clicks, outputs, checkpoints and bad input."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from peft import PeftModel

import peft_medsa.training.checkpoints as checkpoints_module
import peft_medsa.training.loop as loop_module
from peft_medsa.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from peft_medsa.inference.predictor import preprocess_image
from peft_medsa.training import (
    CheckpointMismatchError,
    MedSATrainer,
    NonFiniteLossError,
    TrainingConfig,
    dice_bce_loss,
    latest_checkpoint,
    model_input_size,
    prepare_sample,
)
from test_training_utils import tiny_peft_model, toy_samples, trainable_state

from conftest import tiny_inputs, tiny_sam, tiny_sam_config

pytestmark = pytest.mark.usefixtures("fresh_accelerate")


def config(tmp_path: Path, **overrides) -> TrainingConfig:
    values = dict(output_dir=str(tmp_path / "run"), max_steps=4, batch_size=2, gradient_accumulation_steps=2,
                  learning_rate=5e-3, lr_scheduler="cosine", warmup_steps=1, save_every=2, eval_every=2,
                  max_corrective_clicks=2, initial_clicks=2, show_progress=False, seed=1)
    values.update(overrides)
    return TrainingConfig(**values)


def folder_digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


# -- losses and inputs ----------------------------------------------------------------------------------------------
def test_dice_bce_matches_reference():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 8, 8, generator=g)
    target = (torch.rand(3, 8, 8, generator=g) > 0.5).float()
    p = torch.sigmoid(logits).numpy().reshape(3, -1)
    t = target.numpy().reshape(3, -1)
    dice = ((2 * (p * t).sum(1) + 1) / (p.sum(1) + t.sum(1) + 1)).mean()
    bce = -(t * np.log(p) + (1 - t) * np.log(1 - p)).mean()
    assert dice_bce_loss(logits, target).item() == pytest.approx((1 - dice) + bce, rel=1e-5)
    perfect = dice_bce_loss(torch.where(target > 0, 50.0, -50.0), target)
    assert perfect.item() < 1e-6
    with pytest.raises(ValueError, match=r"logits have shape \(3, 8, 8\) but target \(3, 4, 4\)"):
        dice_bce_loss(logits, target[:, :4, :4])


@pytest.mark.parametrize("shape", [(48, 40), (100, 70)])
def test_prepare_sample_matches_evaluation_geometry(shape):
    sample = toy_samples(1, shape=shape)[0]
    pixels, mask, (h, w) = prepare_sample(sample, 64, "imagenet")
    reference = preprocess_image(sample["image"], 64, "imagenet", IMAGENET_MEAN, IMAGENET_STD)[0][0]  # the predictor
    torch.testing.assert_close(pixels, reference, rtol=0, atol=1e-5)
    assert (h, w) == (64, round(64 * shape[1] / shape[0]))
    assert mask.shape == (64, 64) and not mask[:, w:].any()
    nearest = F.interpolate(torch.from_numpy(sample["mask"])[None, None].float(), size=(h, w), mode="nearest-exact")
    np.testing.assert_array_equal(mask[:h, :w], nearest[0, 0].numpy() > 0)
    minmax, _, _ = prepare_sample(sample, 64, "minmax")
    assert minmax[:, :h, :w].min() == 0 and minmax[:, :h, :w].max() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="does not match mask shape"):
        prepare_sample({**sample, "mask": sample["mask"][:10]}, 64, "imagenet")


def test_model_input_size_prefers_prompt_encoder():
    from transformers import SamConfig, SamModel

    assert model_input_size(tiny_peft_model()) == 64
    lite = tiny_sam_config()
    lite = SamConfig(vision_config=lite.vision_config.to_dict(),
                     mask_decoder_config=lite.mask_decoder_config.to_dict(),
                     prompt_encoder_config=dict(hidden_size=32, image_size=256, patch_size=4))
    assert model_input_size(SamModel(lite)) == 256


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match=r"normalization='zscore'; expected one of \('auto', 'imagenet', 'minmax'\)"):
        TrainingConfig(normalization="zscore")
    with pytest.raises(ValueError, match="gradient_accumulation_steps must be a positive integer, got 0"):
        TrainingConfig(gradient_accumulation_steps=0)
    with pytest.raises(ValueError, match="resume=True and overwrite=True"):
        TrainingConfig(resume=True, overwrite=True)



def test_normalization_name_auto_and_deprecated_spelling(tmp_path):
    """One name with the predictors (``normalization``); ``"auto"`` follows the model; the old ``normalize``
    still works with a FutureWarning, and a run stored with it is not taken for a different config."""
    from peft_medsa.model_input import default_normalization

    trainer = MedSATrainer(tiny_peft_model(), toy_samples(2), config(tmp_path))
    assert trainer.config.normalization == "auto"
    assert trainer.normalization == default_normalization(trainer.model) == "imagenet"
    with pytest.warns(FutureWarning, match="use normalization="):
        old = TrainingConfig(normalize="minmax")
    assert old.normalization == "minmax" and old.normalize is None
    stored = {**TrainingConfig(normalization="minmax").to_dict(), "normalize": "minmax"}
    del stored["normalization"]
    assert TrainingConfig(normalization="minmax").differences(stored) == {}
    assert "normalization" in TrainingConfig(normalization="imagenet").differences(stored)

# -- one full run, shared by several checks ---------------------------------------------------------------------------
@pytest.fixture
def recorded_run(tmp_path, monkeypatch):
    """A 4-step run (2 micro-batches per step) that records the prompts of every gradient pass."""
    prompts_seen, inside = [], []
    original, simulate = loop_module.collate_prompts, MedSATrainer._simulate_clicks

    def recording(prompts, device=None):
        if not inside:  # the gradient pass, not a click-simulation round
            prompts_seen.append([(p.points.copy(), p.labels.copy()) for p in prompts])
        return original(prompts, device)

    def flagged(self, *args, **kwargs):
        inside.append(True)
        try:
            return simulate(self, *args, **kwargs)
        finally:
            inside.pop()

    monkeypatch.setattr(loop_module, "collate_prompts", recording)
    monkeypatch.setattr(MedSATrainer, "_simulate_clicks", flagged)
    model = tiny_peft_model()
    data, val = toy_samples(8), toy_samples(3, seed=9)
    cfg = config(tmp_path)
    trainer = MedSATrainer(model, data, cfg, eval_data=val, card_info={"task": "toy boxes", "datasets": ["toy"]})
    result = trainer.train()
    return trainer, result, cfg, data, prompts_seen


def test_run_schedule_clicks_order_and_outputs(recorded_run):
    from transformers import get_scheduler

    trainer, result, cfg, data, prompts_seen = recorded_run
    out = Path(cfg.output_dir)
    # the LR really steps: logged LRs equal transformers' cosine schedule with warm-up, once per optimizer step
    reference = get_scheduler("cosine", torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=cfg.learning_rate),
                              num_warmup_steps=1, num_training_steps=cfg.max_steps)
    expected = []
    for _ in range(cfg.max_steps):
        expected.append(reference.get_last_lr()[0])
        reference.optimizer.step()
        reference.step()
    train_rows = [r for r in result.metrics if "loss" in r]
    assert [r["lr"] for r in train_rows] == pytest.approx(expected)
    assert len(set(r["lr"] for r in train_rows)) == cfg.max_steps
    # gradient accumulation: 2 micro-batches per step; each epoch visits every sample once (8 samples = 2 steps)
    assert len(trainer.case_ids_seen) == cfg.max_steps * 2
    for epoch in range(2):
        ids = sum(trainer.case_ids_seen[epoch * 4 : epoch * 4 + 4], [])
        assert sorted(ids) == sorted(s["case_id"] for s in data)
    # iterative clicks: after the start clicks, corrective clicks lie in the error region; labels follow the mask
    by_id = {s["case_id"]: prepare_sample(s, 64, "imagenet")[1] for s in data}
    assert len(prompts_seen) == len(trainer.case_ids_seen)
    assert max(len(points) for batch in prompts_seen for points, _ in batch) > 2
    assert min(labels.min() for batch in prompts_seen for _, labels in batch) == 0  # some false-positive clicks
    for batch, ids in zip(prompts_seen, trainer.case_ids_seen):
        for (points, labels), case_id in zip(batch, ids):
            x, y = points.astype(int).T
            np.testing.assert_array_equal(labels, by_id[case_id][y, x].astype(int))
    # only adapters moved; SAM stayed frozen
    base = tiny_sam().state_dict()
    for name, tensor in trainer.model.get_base_model().state_dict().items():
        if "medsa_" not in name:
            torch.testing.assert_close(tensor, base[name.replace(".base_layer", "")], rtol=0, atol=0)
    assert any(t.abs().max() > 0 for n, t in trainable_state(trainer.model).items() if ".up." in n)
    # outputs: log, CSV, PNG, best / final adapters with cards
    assert (out / "metrics.csv").read_text().splitlines()[0].split(",")[0] == "step"
    assert (out / "training_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    val_dice = [r["val_dice"] for r in result.metrics if "val_dice" in r]
    assert len(val_dice) == 2 and result.best_dice == pytest.approx(max(val_dice))
    for folder in (result.final_dir, result.best_dir):
        assert (folder / "adapter_config.json").is_file()
        assert "library_name: peft" in (folder / "README.md").read_text()
    assert "| average |" in (result.best_dir / "README.md").read_text()
    loaded = PeftModel.from_pretrained(tiny_sam(), str(result.final_dir))
    with torch.no_grad():
        a = loaded(**tiny_inputs()).pred_masks
        b = trainer.model(**tiny_inputs()).pred_masks
    torch.testing.assert_close(a, b, rtol=0, atol=1e-7)
    # checkpoints: latest = last, adapter-only weights
    latest = latest_checkpoint(out)
    assert latest.name == "step-00000004"
    from safetensors import safe_open

    with safe_open(str(latest / "model.safetensors"), "pt") as handle:
        keys = set(handle.keys())
    assert keys == set(trainable_state(trainer.model)) and all("medsa_" in k for k in keys)


# -- bad input -------------------------------------------------------------------------------------------------------
def test_existing_output_dir_refused_and_untouched(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match=r"exists and is not empty; pass resume=True .* or overwrite=True"):
        MedSATrainer(tiny_peft_model(), toy_samples(4), config(tmp_path)).train()
    assert folder_digest(out) == {"notes.txt": hashlib.sha256(b"keep me").hexdigest()}


def test_resume_from_other_config_refused(tmp_path):
    MedSATrainer(tiny_peft_model(), toy_samples(4), config(tmp_path, max_steps=2, eval_every=0)).train()
    out = tmp_path / "run"
    before = folder_digest(out)
    with pytest.raises(CheckpointMismatchError) as info:
        cfg = config(tmp_path, max_steps=2, eval_every=0, learning_rate=1e-3, resume=True)
        MedSATrainer(tiny_peft_model(r=8), toy_samples(4), cfg).train()
    message = str(info.value)
    assert "training_config.learning_rate: checkpoint 0.005 vs now 0.001" in message
    assert "peft_config[default].r: checkpoint 4 vs now 8" in message
    assert folder_digest(out) == before


def test_nan_loss_stops_with_step_and_case_ids(tmp_path, monkeypatch):
    class Crash(RuntimeError):
        pass

    def crash_at_3(trainer, step):
        if step == 3:
            raise Crash

    cfg = config(tmp_path, eval_every=0)
    with pytest.raises(Crash):
        MedSATrainer(tiny_peft_model(), toy_samples(8), cfg, callbacks=[crash_at_3]).train()
    out = tmp_path / "run"
    before = folder_digest(out / "checkpoints")
    bad = toy_samples(8)  # NaN pixels are refused before the model; a diverging loss is simulated instead
    monkeypatch.setattr(loop_module, "dice_bce_loss", lambda logits, target: logits.sum() * float("nan"))
    with pytest.raises(NonFiniteLossError, match=r"non-finite training loss .* at step 3 \(micro-batch 1 of 2\); "
                                                  r"case ids of this process's batch: \['case0_\d\d', 'case0_\d\d'\]"):
        MedSATrainer(tiny_peft_model(), bad, config(tmp_path, eval_every=0, resume=True)).train()
    assert folder_digest(out / "checkpoints") == before
    assert not (out / "final").exists()


def test_crash_during_save_keeps_previous_checkpoint(tmp_path, monkeypatch):
    """A save that dies after writing part of its temporary folder leaves `latest` on the previous good one."""
    original = checkpoints_module._write_json

    def dies_at_step_4(path, data):
        if data["step"] == 4:
            raise OSError("simulated crash in the middle of a checkpoint save")
        original(path, data)

    monkeypatch.setattr(checkpoints_module, "_write_json", dies_at_step_4)
    cfg = config(tmp_path, eval_every=0)
    with pytest.raises(OSError, match="simulated crash"):
        MedSATrainer(tiny_peft_model(), toy_samples(8), cfg).train()
    folder = tmp_path / "run" / "checkpoints"
    partial = folder / ".tmp-step-00000004"
    assert (partial / "model.safetensors").is_file() and not (partial / "trainer_state.json").exists()
    assert latest_checkpoint(tmp_path / "run").name == "step-00000002"
    monkeypatch.setattr(checkpoints_module, "_write_json", original)
    resumed = MedSATrainer(tiny_peft_model(), toy_samples(8), config(tmp_path, eval_every=0, resume=True))
    resumed.train()
    assert len(resumed.case_ids_seen) == 2 * 2  # steps 3 and 4 only: it resumed from step 2
    assert not partial.exists() and latest_checkpoint(tmp_path / "run").name == "step-00000004"
    uninterrupted = MedSATrainer(tiny_peft_model(), toy_samples(8), config(tmp_path / "b", eval_every=0))
    uninterrupted.train()
    a, b = trainable_state(resumed.model), trainable_state(uninterrupted.model)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_empty_masks_only_refused():
    sample = toy_samples(1)[0]
    sample["mask"] = np.zeros_like(sample["mask"])
    with pytest.raises(ValueError, match="no sample with a non-empty mask"):
        MedSATrainer(tiny_peft_model(), [sample], TrainingConfig(output_dir="unused"))


def test_datasets_dataset_input(tmp_path):
    import datasets

    data = datasets.Dataset.from_list([{"image": s["image"].tolist(), "mask": s["mask"].tolist(),
                                        "case_id": s["case_id"]} for s in toy_samples(4)])
    cfg = config(tmp_path, max_steps=1, gradient_accumulation_steps=1, save_every=0, eval_every=0)
    trainer = MedSATrainer(tiny_peft_model(), data, cfg)
    result = trainer.train()
    assert result.steps == 1 and len(trainer.case_ids_seen[0]) == 2
    assert math.isfinite(result.metrics[0]["loss"])
    assert json.loads((tmp_path / "run" / "training_config.json").read_text())["max_steps"] == 1


def test_start_boxes_cover_the_iou_range():
    from peft_medsa.prompts import box_iou, tight_box
    from peft_medsa.training.inputs import start_prompts

    mask = np.zeros((64, 64), bool)
    mask[10:40, 20:50] = True
    ious = []
    for seed in range(60):
        (prompt,) = start_prompts([mask], np.random.default_rng(seed), 3, 1.0, 0.5, box_iou_max=1.0)
        ious.append(box_iou(prompt.box, tight_box(mask)))
    assert min(ious) >= 0.5 - 1e-3 and max(ious) <= 1.0 and min(ious) < 0.6 and max(ious) > 0.95
    fixed = [box_iou(start_prompts([mask], np.random.default_rng(s), 3, 1.0, 0.6)[0].box, tight_box(mask))
             for s in range(5)]
    assert np.allclose(fixed, 0.6, atol=1e-3)  # without a range: always box_iou
    with pytest.raises(ValueError, match="box_iou_max"):
        TrainingConfig(box_iou=0.7, box_iou_max=0.6)
