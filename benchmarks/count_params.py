"""Trainable parameters of Med-SA on SAM ViT-B and ViT-H at r = 1, 16, 32, 64, 256 (README table, paper Table 7a).

Models are built on the meta device, so no weights are allocated and the script runs in seconds.

    python benchmarks/count_params.py
"""

from __future__ import annotations

import torch
from peft import get_peft_model
from transformers import SamConfig, SamModel

import peft_medsa

SIZES = {
    "ViT-B": {},
    "ViT-H": dict(hidden_size=1280, num_hidden_layers=32, num_attention_heads=16, global_attn_indexes=[7, 15, 23, 31]),
}
PAPER_VIT_H = {1: 1.58, 16: 4.33, 32: 7.19, 64: 13.10, 256: 48.67}


def trainable(vision: dict, **config) -> tuple[int, int]:
    with torch.device("meta"):
        model = get_peft_model(SamModel(SamConfig(vision_config=vision)), peft_medsa.MedSAConfig(**config))
    n, total = model.get_nb_trainable_parameters()
    return n, total - n


def main() -> None:
    print("| r | model | defaults | prompt_conditioning='none' | paper (ViT-H) |")
    for r in PAPER_VIT_H:
        for name, vision in SIZES.items():
            cells = []
            for conditioning in ("hyper", "none"):
                n, frozen = trainable(vision, r=r, prompt_conditioning=conditioning)
                cells.append(f"{n / 1e6:.2f}M ({100 * n / frozen:.2f}%)")
            paper = f"{PAPER_VIT_H[r]:.2f}M" if name == "ViT-H" else ""
            print(f"| {r} | {name} | {cells[0]} | {cells[1]} | {paper} |")


if __name__ == "__main__":
    main()
