"""Med-SA overhead against plain SAM, measured side by side in one run.

Prints two ratios (issue: core tuner benchmark):

- inference: Med-SA forward / SAM forward (same weights, same inputs, interleaved repeats, median of each);
- training: step with only adapters trainable / full fine-tuning step (time), and their peak-memory ratio.

Memory: on CUDA, ``torch.cuda.max_memory_allocated`` during the steps minus what was allocated before them; on
CPU, each training variant runs in its own subprocess where a thread samples the resident set size (RSS, from
/proc/self/statm) every millisecond during the steps: the peak minus the RSS before the first step is what the
steps allocated (activations kept for backward, gradients, optimiser state).

Usage:
    python benchmarks/bench_overhead.py                      # ViT-B 1024 inference, ViT-B 256 and 1024 training
    python benchmarks/bench_overhead.py --quick              # ViT-B 256 only, fewer repeats (smoke test)
    python benchmarks/bench_overhead.py --device cuda --dtype bfloat16
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time

import torch
from peft import get_peft_model
from transformers import SamConfig, SamModel

import peft_medsa

torch.set_flush_denormal(True)


def build(image_size: int, medsa: bool, r: int, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    sam = SamModel(
        SamConfig(
            vision_config=dict(image_size=image_size, initializer_range=0.02),
            prompt_encoder_config=dict(image_size=image_size),
        )
    )
    if medsa:
        sam = get_peft_model(sam, peft_medsa.MedSAConfig(r=r, init_weights=False))
    return sam


def inputs(image_size: int, batch: int, device: str, dtype: torch.dtype) -> dict:
    g = torch.Generator().manual_seed(0)
    s = image_size
    return {
        "pixel_values": torch.randn(batch, 3, s, s, generator=g).to(device, dtype),
        "input_boxes": torch.tensor([[[0.1 * s, 0.2 * s, 0.6 * s, 0.7 * s]]] * batch, device=device),
        "multimask_output": False,
    }


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn, device: str) -> float:
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def bench_inference(image_size: int, r: int, repeats: int, device: str, dtype: torch.dtype) -> dict:
    base = build(image_size, False, r).to(device, dtype).eval()
    medsa = build(image_size, True, r).to(device, dtype).eval()
    x = inputs(image_size, 1, device, dtype)
    times = {"sam": [], "medsa": []}
    with torch.no_grad():
        base(**x), medsa(**x)  # warm-up
        for _ in range(repeats):
            for name, model in (("sam", base), ("medsa", medsa)):
                times[name].append(timed(lambda m=model: m(**x), device))
    sam_t, med_t = statistics.median(times["sam"]), statistics.median(times["medsa"])
    return {"image_size": image_size, "r": r, "repeats": repeats, "sam_s": sam_t, "medsa_s": med_t,
            "ratio": med_t / sam_t}


class RssPeak:
    """Samples this process's resident set size in a thread; ``peak`` is the largest sample (bytes)."""

    def __init__(self, interval: float = 0.001) -> None:
        self.interval, self.peak, self._stop = interval, 0, threading.Event()
        self._page = os.sysconf("SC_PAGE_SIZE")

    def rss(self) -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * self._page

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.rss())
            time.sleep(self.interval)

    def __enter__(self) -> RssPeak:
        self.before = self.peak = self.rss()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.rss())


def train_step_stats(image_size: int, variant: str, r: int, steps: int, device: str, dtype: torch.dtype) -> dict:
    """Times ``steps`` optimiser steps (after one warm-up) and measures the step's peak memory."""
    model = build(image_size, variant == "medsa", r).to(device, dtype).train()
    params = [p for p in model.parameters() if p.requires_grad]
    optim = torch.optim.AdamW(params, lr=1e-4)
    x = inputs(image_size, 1, device, dtype)

    def step() -> None:
        out = model(**x)
        loss = out.pred_masks.float().sigmoid().mean()
        loss.backward()
        optim.step()
        optim.zero_grad(set_to_none=True)

    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
        mem_before = torch.cuda.memory_allocated()
        step()
        times = [timed(step, device) for _ in range(steps)]
        peak = torch.cuda.max_memory_allocated() - mem_before
    else:
        with RssPeak() as rss:
            step()
            times = [timed(step, device) for _ in range(steps)]
        peak = rss.peak - rss.before
    return {"variant": variant, "step_s": statistics.median(times), "peak_bytes": peak,
            "trainable": sum(p.numel() for p in params)}


def bench_training(image_size: int, r: int, steps: int, rounds: int, device: str, dtype: torch.dtype) -> dict:
    results: dict[str, list[dict]] = {"medsa": [], "full": []}
    for _ in range(rounds):  # interleave the two variants
        for variant in ("medsa", "full"):
            if device.startswith("cuda"):
                results[variant].append(train_step_stats(image_size, variant, r, steps, device, dtype))
                torch.cuda.empty_cache()
            else:  # a fresh process each, so that its RSS measures this variant alone
                cmd = [sys.executable, __file__, "--_train-child", variant, "--image-size", str(image_size),
                       "--r", str(r), "--steps", str(steps), "--dtype", str(dtype).removeprefix("torch.")]
                out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
                results[variant].append(json.loads(out.strip().splitlines()[-1]))
    med = {v: statistics.median(x["step_s"] for x in rs) for v, rs in results.items()}
    mem = {v: statistics.median(x["peak_bytes"] for x in rs) for v, rs in results.items()}
    return {"image_size": image_size, "r": r, "medsa_step_s": med["medsa"], "full_step_s": med["full"],
            "time_ratio": med["medsa"] / med["full"], "medsa_peak_mb": mem["medsa"] / 2**20,
            "full_peak_mb": mem["full"] / 2**20, "memory_ratio": mem["medsa"] / mem["full"],
            "trainable_medsa": results["medsa"][0]["trainable"], "trainable_full": results["full"][0]["trainable"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="ViT-B 256 only, fewer repeats")
    parser.add_argument("--r", type=int, default=64)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--parts", nargs="+", choices=["inference", "training"], default=["inference", "training"])
    parser.add_argument("--sizes", nargs="+", type=int, default=None, help="image sizes (default 256 1024)")
    parser.add_argument("--image-size", type=int, default=256, help=argparse.SUPPRESS)
    parser.add_argument("--steps", type=int, default=3, help=argparse.SUPPRESS)
    parser.add_argument("--_train-child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    dtype = getattr(torch, args.dtype)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args._train_child:
        print(json.dumps(train_step_stats(args.image_size, args._train_child, args.r, args.steps, args.device, dtype)))
        return
    print(f"device={args.device} dtype={args.dtype} threads={torch.get_num_threads()} r={args.r} "
          f"torch={torch.__version__}")
    sizes = args.sizes or ([256] if args.quick else [256, 1024])
    for size in sizes if "inference" in args.parts else []:
        res = bench_inference(size, args.r, 3 if args.quick else (5 if size == 256 else 3), args.device, dtype)
        print(f"inference ViT-B {size}: SAM {res['sam_s']:.3f} s, Med-SA {res['medsa_s']:.3f} s, "
              f"ratio {res['ratio']:.3f} (target <= 1.04 at 1024)")
    for size in sizes if "training" in args.parts else []:
        res = bench_training(size, args.r, 2 if args.quick or size == 1024 else 3, 1 if args.quick else 2,
                             args.device, dtype)
        print(f"training ViT-B {size}: Med-SA step {res['medsa_step_s']:.3f} s vs full fine-tuning "
              f"{res['full_step_s']:.3f} s, time ratio {res['time_ratio']:.3f} (target <= 0.7); peak step memory "
              f"{res['medsa_peak_mb']:.0f} MB vs {res['full_peak_mb']:.0f} MB, ratio {res['memory_ratio']:.3f} "
              f"(target <= 0.85); trainable {res['trainable_medsa']/1e6:.2f}M vs {res['trainable_full']/1e6:.2f}M")


if __name__ == "__main__":
    main()
