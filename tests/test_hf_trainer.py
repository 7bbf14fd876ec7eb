"""transformers.Trainer, with the small compute_loss override shown in the README, trains a Med-SA PeftModel and
saves an adapter-only folder."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from peft import PeftModel, get_peft_model
from safetensors.torch import load_file
from transformers import Trainer, TrainingArguments

from peft_medsa import MedSAConfig

from conftest import tiny_inputs, tiny_sam


class SamSegmentationTrainer(Trainer):
    """Binary cross-entropy of SAM's low-resolution mask logits against the mask (the README's example)."""

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        masks = inputs.pop("labels")  # (B, H, W) in {0, 1}
        outputs = model(**inputs, multimask_output=False)
        logits = outputs.pred_masks[:, 0, 0]  # (B, h, w), h = w = H / 4
        target = F.interpolate(masks[:, None].float(), size=logits.shape[-2:], mode="nearest")[:, 0]
        loss = F.binary_cross_entropy_with_logits(logits, target)
        return (loss, outputs) if return_outputs else loss


def toy_dataset(n: int = 4) -> list[dict[str, torch.Tensor]]:
    inputs = tiny_inputs(batch=n)
    data = []
    for i in range(n):
        x0, y0, x1, y1 = inputs["input_boxes"][i, 0].long().tolist()
        mask = torch.zeros(64, 64)
        mask[y0:y1, x0:x1] = 1.0
        data.append({"pixel_values": inputs["pixel_values"][i], "input_boxes": inputs["input_boxes"][i],
                     "labels": mask})
    return data


def test_transformers_trainer_trains_and_saves_adapter_only(tmp_path, fresh_accelerate):
    model = get_peft_model(tiny_sam(), MedSAConfig(r=4))
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    args = TrainingArguments(
        output_dir=str(tmp_path / "run"), max_steps=3, per_device_train_batch_size=2, learning_rate=1e-2,
        use_cpu=True, report_to=[], save_strategy="no", logging_steps=1, remove_unused_columns=False,
        label_names=["labels"], disable_tqdm=True,
    )
    trainer = SamSegmentationTrainer(model=model, args=args, train_dataset=toy_dataset())
    result = trainer.train()
    assert result.global_step == 3 and torch.isfinite(torch.tensor(result.training_loss))
    changed = [n for n, p in model.named_parameters() if p.requires_grad and not torch.equal(p, before[n])]
    assert changed and all(".medsa_" in n for n in changed)
    assert all(not p.requires_grad for n, p in model.named_parameters() if ".medsa_" not in n)

    trainer.save_model(str(tmp_path / "adapter"))
    files = {p.name for p in (tmp_path / "adapter").iterdir()}
    assert {"adapter_model.safetensors", "adapter_config.json"} <= files and "model.safetensors" not in files
    saved = load_file(tmp_path / "adapter" / "adapter_model.safetensors")
    assert saved and all(".medsa_" in k for k in saved)
    assert sum(v.numel() for v in saved.values()) == sum(before[n].numel() for n in before)

    x = tiny_inputs()
    loaded = PeftModel.from_pretrained(tiny_sam(), tmp_path / "adapter").eval()
    with torch.no_grad():
        expected = model.eval()(**x).pred_masks
        got = loaded(**x).pred_masks
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-9)
