"""Training Med-SA adapters (with or without SD-Trans) on volume slices, reusing the frozen part of the encoder.

The adapters of `real_volumes.py` sit in the last TinyViT stage (``encoder_layers=[8, 9]``, the stage's two attention
blocks; Table 7b of the paper: the deeper blocks matter most) and in the mask decoder. Everything before that stage is
frozen and identical for every method, so its output is computed once per slice (`TrunkCache`) and reused by training
and by evaluation (`CachedSliceEmbeddings`, a :class:`~peft_medsa.inference.slice_embeddings.SliceEmbeddings` that
runs only the last stage and the neck). This is exact: the cached features are what the full encoder computes there.

A training step draws one target and ``chunk`` consecutive slices that all hold it (one volume of ``chunk`` slices);
Med-SA + SD-Trans sees them as a volume (``num_slices=chunk``), Med-SA 2D as ``chunk`` separate images; the same
seed draws the same chunks and prompts for both. Prompts per slice, in model input pixels: half the steps a box of
IoU 0.75 with the tight box, half one positive click. Loss: Dice + BCE on the low-resolution logits (256 x 256 =
LiteMedSAM's input size). AdamW, learning rate 1e-3, no schedule.
"""

from __future__ import annotations

import numpy as np
import torch
from peft import get_peft_model

from peft_medsa import MedSAConfig
from peft_medsa.backbones import convert_lite_medsam
from peft_medsa.data.transforms import model_pixels, resize_longest_and_pad
from peft_medsa.inference.slice_embeddings import SliceEmbeddings, num_slices_context, uses_num_slices
from peft_medsa.prompts import collate_prompts
from peft_medsa.training.inputs import start_prompts
from peft_medsa.training.losses import dice_bce_loss

LAST_STAGE_BLOCKS = [8, 9]
INPUT_SIZE = 256


def make_model(sd_trans: bool, rank: int = 16):
    """LiteMedSAM with Med-SA adapters in the last TinyViT stage and the decoder (+ SD-Trans on that stage)."""
    config = MedSAConfig(r=rank, encoder_layers=LAST_STAGE_BLOCKS, sd_trans=sd_trans)
    return get_peft_model(convert_lite_medsam(), config)


def _encoder(model):
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return base.vision_encoder


class TrunkCache:
    """Output of TinyViT's patch embedding and first three stages, per slice of each case (frozen, shared)."""

    def __init__(self, backbone) -> None:
        self.encoder = _encoder(backbone).eval()
        self.features: dict[str, torch.Tensor] = {}

    @torch.no_grad()
    def get(self, case_id: str, slices: np.ndarray) -> torch.Tensor:
        if case_id not in self.features:
            out = []
            for start in range(0, len(slices), 8):
                pixels = torch.cat([model_pixels(s, INPUT_SIZE, "minmax")[0] for s in slices[start : start + 8]])
                hidden = self.encoder.patch_embed(pixels.contiguous(memory_format=torch.channels_last))
                for stage in self.encoder.layers[:-1]:
                    hidden = stage(hidden)
                out.append(hidden)
            self.features[case_id] = torch.cat(out)
        return self.features[case_id]


def head(model, features: torch.Tensor) -> torch.Tensor:
    """Last TinyViT stage + neck of ``model`` on cached features: ``(n, ...)`` -> ``(n, 256, 64, 64)`` embeddings; the
    ``n`` slices form one volume for SD-Trans."""
    encoder = _encoder(model)
    if uses_num_slices(model):
        with num_slices_context(model, len(features), len(features)):
            return encoder.neck(encoder.layers[-1](features))
    return encoder.neck(encoder.layers[-1](features))


def cached_embeddings_class(model, features: torch.Tensor):
    """A `SliceEmbeddings` subclass whose ``encode`` runs `head` on the cached features of one case."""

    class CachedSliceEmbeddings(SliceEmbeddings):
        @torch.no_grad()
        def encode(self, start: int, stop: int) -> torch.Tensor:
            return head(model, features[start:stop])

    return CachedSliceEmbeddings


def chunks_with_target(mask: np.ndarray, chunk: int) -> list[int]:
    """Start slices of the runs of ``chunk`` consecutive slices that all hold the target."""
    present = mask.reshape(len(mask), -1).any(1)
    return [s for s in range(len(mask) - chunk + 1) if present[s : s + chunk].all()]


def train_adapter(
    model, cases, cache: TrunkCache, targets: list[str], *, steps: int, chunk: int = 4, seed: int = 0, lr: float = 1e-3
) -> list[float]:
    """Trains ``model``'s adapters for ``steps`` steps (module docstring); returns the loss per step."""
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    pool = [(c, t, s) for c in cases for t in targets for s in chunks_with_target(c.targets[t], chunk)]
    if not pool:
        raise ValueError(f"no run of {chunk} slices holds a target among {targets}")
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr)
    model.train()
    _encoder(model).eval()  # TinyViT BatchNorm stays frozen
    losses = []
    for _ in range(steps):
        case, target, start = pool[int(rng.integers(len(pool)))]
        features = cache.get(case.case_id, case.slices)[start : start + chunk]
        masks = [
            resize_longest_and_pad(m.astype(np.uint8), INPUT_SIZE, is_mask=True)[0].astype(bool)
            for m in case.targets[target][start : start + chunk]
        ]
        prompts = start_prompts(masks, rng, initial_clicks=1, box_probability=0.5, box_iou=0.75)
        embeddings = head(model, features)
        outputs = model(image_embeddings=embeddings, multimask_output=False, **collate_prompts(prompts))
        logits = outputs.pred_masks[:, 0, 0]
        loss = dice_bce_loss(logits, torch.from_numpy(np.stack(masks)).float())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(float(loss))
    model.eval()
    return losses
