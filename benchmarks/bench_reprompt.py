"""Fast interactive re-prompting with Med-SA: a new click decoded against cached image embeddings.

Claim: with HyP-Adpt only the mask decoder depends on the prompt, so after one ``get_image_embeddings`` per image a
new click costs at most 1.3x the plain SAM decoder and at most 2% of a full forward (ViT-B at 1024 px).

All three timings are measured side by side in one run, in interleaved rounds (plain decoder, Med-SA decoder, and
for the first rounds a Med-SA full forward), each round with a new random click; medians are reported. Random weights
(``initializer_range=0.02``, denormals flushed); timings do not depend on the weights' values.

    python benchmarks/bench_reprompt.py            # ViT-B 1024: 2 full forwards, 20 decoder calls
    python benchmarks/bench_reprompt.py --quick    # ViT-B 256, for a smoke run
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
from peft import get_peft_model
from transformers import SamConfig, SamModel

from peft_medsa import MedSAConfig


def timed(model, **inputs) -> float:
    """Seconds for one ``model(**inputs, multimask_output=False)`` call."""
    start = time.perf_counter()
    model(multimask_output=False, **inputs)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="ViT-B at 256 px instead of 1024 px")
    parser.add_argument("--full-repeats", type=int, default=2)
    parser.add_argument("--decoder-repeats", type=int, default=20)
    parser.add_argument("--r", type=int, default=64)
    args = parser.parse_args()

    torch.set_flush_denormal(True)
    torch.manual_seed(0)
    size = 256 if args.quick else 1024
    config = SamConfig(
        vision_config=dict(image_size=size, initializer_range=0.02),
        prompt_encoder_config=dict(image_size=size),
        initializer_range=0.02,
    )
    sam = SamModel(config).eval()
    plain = copy.deepcopy(sam)
    model = get_peft_model(sam, MedSAConfig(r=args.r, prompt_conditioning="hyper")).eval()
    pixel_values = torch.randn(1, 3, size, size)
    g = torch.Generator().manual_seed(1)

    def click():
        return {"input_points": torch.rand(1, 1, 1, 2, generator=g) * (size - 1), "input_labels": torch.ones(1, 1, 1)}

    with torch.no_grad():
        embeddings = model.get_image_embeddings(pixel_values)  # Med-SA encoder, once per image
        plain_embeddings = plain.get_image_embeddings(pixel_values)
        # warm-up, and the equality that makes caching legitimate
        prompt = click()
        full_masks = model(pixel_values=pixel_values, multimask_output=False, **prompt).pred_masks
        cached_masks = model(image_embeddings=embeddings, multimask_output=False, **prompt).pred_masks
        plain(image_embeddings=plain_embeddings, multimask_output=False, **prompt)
        max_diff = (full_masks - cached_masks).abs().max().item()

        plain_t, medsa_t, full_t = [], [], []
        for i in range(args.decoder_repeats):
            prompt = click()
            plain_t.append(timed(plain, image_embeddings=plain_embeddings, **prompt))
            medsa_t.append(timed(model, image_embeddings=embeddings, **prompt))
            if i < args.full_repeats:
                full_t.append(timed(model, pixel_values=pixel_values, **prompt))

    plain_s, medsa_s, full_s = (statistics.median(t) for t in (plain_t, medsa_t, full_t))
    ratio_plain, ratio_full = medsa_s / plain_s, medsa_s / full_s
    print(f"SAM ViT-B {size}x{size}, Med-SA r={args.r} (HyP-Adpt), torch threads {torch.get_num_threads()}")
    print(f"repeats: {args.full_repeats} full forwards, {args.decoder_repeats} decoder calls (medians, interleaved)")
    print(f"cached-embedding masks vs full forward: max |diff| = {max_diff:.2e}")
    print(f"plain SAM decoder (prompt encoder + mask decoder): {plain_s * 1e3:8.1f} ms")
    print(f"Med-SA decoder with cached embeddings:             {medsa_s * 1e3:8.1f} ms")
    print(f"Med-SA full forward:                               {full_s * 1e3:8.1f} ms")
    print(f"new click / plain decoder: {ratio_plain:.2f}x (claim <= 1.3x): {'PASS' if ratio_plain <= 1.3 else 'FAIL'}")
    print(f"new click / full forward:  {ratio_full:.2%} (claim <= 2%):   {'PASS' if ratio_full <= 0.02 else 'FAIL'}")


if __name__ == "__main__":
    main()
