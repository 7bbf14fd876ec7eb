"""SD-Trans cost: image-encoder forward on a volume of D slices with the depth branch, against the same slices
without it, in one run (interleaved repeats, median of each, denormals flushed); and peak memory of whole-volume
segmentation, bounded by the chunk size.

Variants timed on the same random ViT-B weights and the same slices:
- ``sam``: the plain encoder;
- ``medsa``: Med-SA 2D adapters (attn + MLP, r = 64), called without ``num_slices``;
- ``sdtrans``: the same adapters plus SD-Trans (add fusion), called with ``num_slices=D``.

Memory (CPU): ``segment_volume`` runs in a subprocess per setting while a thread samples the resident set size every
millisecond; the figure is the peak minus the RSS just before the call.

Usage:
    python benchmarks/bench_sdtrans.py            # ViT-B 256, D = 32; memory: depths 8 / 16, chunks 2 / 4
    python benchmarks/bench_sdtrans.py --quick    # ViT-B 256, D = 4, one repeat; memory on small volumes
    python benchmarks/bench_sdtrans.py --full     # also ViT-B 1024 with D = 4 (about 6 s per slice forward on 2 cores)
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

import torch
from peft import get_peft_model
from transformers import SamConfig, SamModel

import peft_medsa

torch.set_flush_denormal(True)


def build(image_size: int, variant: str, r: int = 64) -> torch.nn.Module:
    torch.manual_seed(0)
    sam = SamModel(
        SamConfig(
            vision_config=dict(image_size=image_size, initializer_range=0.02),
            prompt_encoder_config=dict(image_size=image_size),
        )
    ).eval()
    if variant == "sam":
        return sam
    config = peft_medsa.MedSAConfig(r=r, init_weights=False, decoder_adapters=False, sd_trans=variant == "sdtrans")
    return get_peft_model(sam, config).eval()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


@torch.no_grad()
def encode(model: torch.nn.Module, variant: str, pixel_values: torch.Tensor) -> float:
    sync(pixel_values.device)
    start = time.perf_counter()
    if variant == "sam":
        model.vision_encoder(pixel_values=pixel_values)
    else:
        tuner = model.base_model
        extra = {"num_slices": pixel_values.shape[0]} if variant == "sdtrans" else {}
        with tuner._enable_peft_forward_hooks(pixel_values=pixel_values, **extra):
            tuner.model.vision_encoder(pixel_values=pixel_values)
    sync(pixel_values.device)
    return time.perf_counter() - start


def time_encoders(image_size: int, depth: int, repeats: int, device: str = "cpu") -> dict:
    models = {v: build(image_size, v).to(device) for v in ("sam", "medsa", "sdtrans")}
    pixel_values = torch.randn(depth, 3, image_size, image_size, generator=torch.Generator().manual_seed(0))
    pixel_values = pixel_values.to(device)
    for variant, model in models.items():  # warm-up
        encode(model, variant, pixel_values[:2])
    times: dict[str, list[float]] = {v: [] for v in models}
    for _ in range(repeats):
        for variant, model in models.items():
            times[variant].append(encode(model, variant, pixel_values))
    median = {v: statistics.median(t) for v, t in times.items()}
    return {
        "device": torch.cuda.get_device_name() if device == "cuda" else f"cpu, {torch.get_num_threads()} threads",
        "image_size": image_size,
        "slices": depth,
        "repeats": repeats,
        "seconds": {v: round(t, 3) for v, t in median.items()},
        "sdtrans_over_medsa": round(median["sdtrans"] / median["medsa"], 3),
        "sdtrans_over_sam": round(median["sdtrans"] / median["sam"], 3),
    }


MEMORY_CHILD = r"""
import json, sys, threading, time
import numpy as np, torch
sys.path.insert(0, {bench_dir!r})
from bench_sdtrans import build
from peft_medsa.inference import box3d_prompts, segment_volume
torch.set_flush_denormal(True)
image_size, depth, chunk = {image_size}, {depth}, {chunk}
model = build(image_size, "sdtrans")
volume = np.random.default_rng(0).normal(size=(depth, image_size, image_size)).astype(np.float32)
box = [0.2 * image_size, 0.2 * image_size, 0, 0.7 * image_size, 0.8 * image_size, depth - 1]
prompts = box3d_prompts(box, volume.shape)  # the 2D box on every slice
segment_volume(model, volume[:2], {{0: prompts[0], 1: prompts[1]}}, chunk_size=2, overlap=0)  # warm-up
page = __import__("os").sysconf("SC_PAGE_SIZE")
def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * page
peak, running = [0], [True]
def sample():
    while running[0]:
        peak[0] = max(peak[0], rss()); time.sleep(0.001)
before = rss(); thread = threading.Thread(target=sample); thread.start()
start = time.perf_counter()
segment_volume(model, volume, prompts, chunk_size=chunk, overlap=min(2, chunk - 1))
seconds = time.perf_counter() - start
running[0] = False; thread.join()
print(json.dumps(dict(peak_mib=round((max(peak[0], rss()) - before) / 2**20, 1), seconds=round(seconds, 2))))
"""


def peak_memory(image_size: int, depth: int, chunk: int) -> dict:
    code = MEMORY_CHILD.format(bench_dir=sys.path[0], image_size=image_size, depth=depth, chunk=chunk)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return {"image_size": image_size, "depth": depth, "chunk_size": chunk, **json.loads(out.strip().splitlines()[-1])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small run: D = 4, one repeat, small volumes")
    parser.add_argument("--full", action="store_true", help="also ViT-B 1024 with D = 4")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu", help="device of the encoder timings (memory runs stay on CPU)")
    parser.add_argument("--depth-1024", type=int, default=4, help="slices of the ViT-B 1024 run (--full)")
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--skip-timing", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    runs = [(256, 4, 1)] if args.quick else [(256, 32, 3)]
    if args.full:
        runs.append((1024, args.depth_1024, 2))
    for image_size, depth, repeats in [] if args.skip_timing else runs:
        print(json.dumps({"encoder_forward": time_encoders(image_size, depth, repeats, args.device)}), flush=True)
    if args.skip_memory:
        return
    memory = [(256, 4, 2), (256, 8, 2)] if args.quick else [(256, 8, 2), (256, 16, 2), (256, 16, 4)]
    for image_size, depth, chunk in memory:
        print(json.dumps({"segment_volume_memory": peak_memory(image_size, depth, chunk)}), flush=True)


if __name__ == "__main__":
    main()
