"""Med-SA against plain SAM, peft's LoRA and full fine-tuning, measured side by side in one run.

For each image size (ViT-B at 256 and 1024 by default) it prints one table with a row per method:

- ``sam``: plain SAM (forward only, nothing trainable);
- ``medsa``: Med-SA with every default (r = 64), adapters initialised randomly (a trained adapter's cost);
- ``medsa+ckpt``: the same with activation checkpointing of the frozen image encoder
  (``model.gradient_checkpointing_enable()``);
- ``lora``: peft LoRA, r = 16 (alpha 16) on the encoder's ``qkv`` and the decoder attentions' ``q_proj`` / ``v_proj``;
- ``full``: full fine-tuning of SAM.

Columns: forward time (``torch.no_grad``, batch 1; interleaved repeats, median), train-step time (forward, backward,
AdamW step; median), peak memory of the training steps, peak memory of the whole training process, and trainable
parameters. Ratios: forward Med-SA / SAM (target <= 1.04) and LoRA / SAM, each the median of the per-repeat ratios
(each repeat times the variants back to back, in a rotating order) with a distribution-free 95% interval of that
median, since single timings on a shared CPU scatter by several percent; train step Med-SA / LoRA (target <= 1.0),
and the time cost of checkpointing (medsa+ckpt / medsa step); whole-process peak with checkpointing at 1024 (target
<= 4.7 GB).

Memory: on CUDA, ``torch.cuda.max_memory_allocated`` during the steps minus the allocation before them (steps) and
in all (process). On CPU each training variant runs in its own subprocess, in turn (rounds interleave the variants);
a thread samples the resident set size every millisecond during the steps: the peak minus the RSS before the first
step is what the steps allocated; the whole process's peak is the kernel's high-water mark (``VmHWM``).

Usage:
    python benchmarks/bench_overhead.py                      # ViT-B 256 and 1024, every part
    python benchmarks/bench_overhead.py --quick              # ViT-B 256 only, fewer repeats (smoke test)
    python benchmarks/bench_overhead.py --sizes 1024 --variants medsa medsa+ckpt --parts training
    python benchmarks/bench_overhead.py --device cuda --dtype bfloat16
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import threading
import time

import torch
from peft import LoraConfig, get_peft_model
from transformers import SamConfig, SamModel

import peft_medsa

torch.set_flush_denormal(True)


VARIANTS = ("sam", "medsa", "medsa+ckpt", "lora", "full")
TRAINED = ("medsa", "medsa+ckpt", "lora", "full")
LORA_TARGETS = r".*vision_encoder\.layers\.\d+\.attn\.qkv|.*mask_decoder\.transformer\..*\.(q_proj|v_proj)"


def build(image_size: int, variant: str, r: int, seed: int = 0) -> torch.nn.Module:
    """ViT-B SAM (random weights, std 0.02) at ``image_size``, with the adapters of ``variant``."""
    torch.manual_seed(seed)
    sam = SamModel(
        SamConfig(
            vision_config=dict(image_size=image_size, initializer_range=0.02),
            prompt_encoder_config=dict(image_size=image_size),
        )
    )
    if variant.startswith("medsa"):
        sam = get_peft_model(sam, peft_medsa.MedSAConfig(r=r, init_weights=False))
        if variant == "medsa+ckpt":
            sam.gradient_checkpointing_enable()
    elif variant == "lora":
        # init_lora_weights=False: random B too, so that LoRA computes what a trained LoRA computes
        config = LoraConfig(r=16, lora_alpha=16, target_modules=LORA_TARGETS, init_lora_weights=False)
        sam = get_peft_model(sam, config)
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


def bench_inference(image_size: int, r: int, repeats: int, device: str, dtype: torch.dtype,
                    variants: list[str]) -> dict[str, list[float]]:
    """Forward seconds per variant and repeat (``medsa+ckpt`` and ``full`` forward as ``medsa`` and ``sam``).

    Each repeat times every variant once, back to back, in an order rotated from one repeat to the next, so that a
    slow second of the machine hits the variants of one repeat alike: `paired_ratio` divides within repeats."""
    names = [v for v in ("sam", "medsa", "lora") if v in variants or v == "sam"]
    models = {v: build(image_size, v, r).to(device, dtype).eval() for v in names}
    x = inputs(image_size, 1, device, dtype)
    times: dict[str, list[float]] = {v: [] for v in names}
    with torch.no_grad():
        for model in models.values():  # warm-up
            model(**x)
        for repeat in range(repeats):
            shift = repeat % len(names)
            for name in names[shift:] + names[:shift]:
                times[name].append(timed(lambda m=models[name]: m(**x), device))
    return times


def median_interval(values: list[float], level: float = 0.95) -> tuple[float, float, float]:
    """Median of ``values`` and a distribution-free confidence interval for it (order statistics: the interval
    ``[x_(j), x_(n+1-j)]`` with the largest ``j`` whose binomial(n, 1/2) coverage is at least ``level``)."""
    data, n = sorted(values), len(values)
    j = 0
    for k in range(1, n // 2 + 1):  # coverage of [x_(k), x_(n+1-k)] = 1 - 2 P(Bin(n, 1/2) < k)
        if 1 - 2 * sum(math.comb(n, i) for i in range(k)) / 2**n >= level:
            j = k
    low, high = (data[j - 1], data[n - j]) if j else (data[0], data[-1])
    return statistics.median(data), low, high


def paired_ratio(times: dict[str, list[float]], variant: str, reference: str = "sam") -> str:
    """``variant / reference`` forward time: median of the per-repeat ratios with its 95% interval."""
    ratios = [a / b for a, b in zip(times[variant], times[reference])]
    mid, low, high = median_interval(ratios)
    of_medians = statistics.median(times[variant]) / statistics.median(times[reference])
    return (
        f"{mid:.3f} (95% interval of the median {low:.3f}-{high:.3f}, {len(ratios)} paired repeats; "
        f"ratio of the medians {of_medians:.3f})"
    )


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


def process_peak_rss() -> int:
    """The kernel's high-water mark of this process's resident set size (bytes)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def train_step_stats(image_size: int, variant: str, r: int, steps: int, device: str, dtype: torch.dtype) -> dict:
    """Times ``steps`` optimiser steps (after one warm-up) and measures the step's peak memory."""
    model = build(image_size, variant, r).to(device, dtype).train()
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
        process_peak = torch.cuda.max_memory_allocated()
    else:
        with RssPeak() as rss:
            step()
            times = [timed(step, device) for _ in range(steps)]
        peak = rss.peak - rss.before
        process_peak = process_peak_rss()
    return {"variant": variant, "step_s": statistics.median(times), "peak_bytes": peak,
            "process_peak_bytes": process_peak, "trainable": sum(p.numel() for p in params)}


def bench_training(image_size: int, r: int, steps: int, rounds: int, device: str, dtype: torch.dtype,
                   variants: list[str]) -> dict[str, dict]:
    """Median step seconds and memory per trained variant; ``rounds`` interleave the variants."""
    results: dict[str, list[dict]] = {v: [] for v in variants if v in TRAINED}
    for _ in range(rounds):
        for variant in results:
            if device.startswith("cuda"):
                results[variant].append(train_step_stats(image_size, variant, r, steps, device, dtype))
                torch.cuda.empty_cache()
            else:  # a fresh process each, so that its RSS measures this variant alone
                cmd = [sys.executable, __file__, "--_train-child", variant, "--image-size", str(image_size),
                       "--r", str(r), "--steps", str(steps), "--dtype", str(dtype).removeprefix("torch."),
                       "--threads", str(torch.get_num_threads())]
                out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
                results[variant].append(json.loads(out.strip().splitlines()[-1]))
    return {
        v: {key: statistics.median(x[key] for x in rs) for key in ("step_s", "peak_bytes", "process_peak_bytes")}
        | {"trainable": rs[0]["trainable"]}
        for v, rs in results.items()
    }


def report(size: int, times: dict[str, list[float]], training: dict[str, dict], variants: list[str]) -> str:
    """The table of one size and its ratios, as printed (``times``: forward seconds per variant and repeat)."""
    gb = 1e9
    forward = {v: statistics.median(t) for v, t in times.items()}
    lines = [f"ViT-B {size}:", "| method | forward s | train step s | step peak GB | process peak GB | trainable |",
             "|---|---:|---:|---:|---:|---:|"]
    for v in variants:
        fwd = forward.get({"medsa+ckpt": "medsa", "full": "sam"}.get(v, v))
        t = training.get(v)
        cells = [f"{fwd:.3f}" if fwd is not None else "-"]
        cells += [f"{t['step_s']:.3f}", f"{t['peak_bytes'] / gb:.2f}", f"{t['process_peak_bytes'] / gb:.2f}",
                  f"{t['trainable'] / 1e6:.2f}M"] if t else ["-", "-", "-", "0" if v == "sam" else "-"]
        lines.append(f"| {v} | " + " | ".join(cells) + " |")
    if "medsa" in times and "sam" in times:
        lines.append(f"forward Med-SA / SAM: {paired_ratio(times, 'medsa')} (target <= 1.04)")
    if "lora" in times and "sam" in times:
        lines.append(f"forward LoRA / SAM: {paired_ratio(times, 'lora')}")
    if "medsa" in training and "lora" in training:
        ratio = training["medsa"]["step_s"] / training["lora"]["step_s"]
        lines.append(f"train step Med-SA / LoRA: {ratio:.3f} (target <= 1.0)")
    if "medsa" in training and "full" in training:
        lines.append(f"train step Med-SA / full: {training['medsa']['step_s'] / training['full']['step_s']:.3f}; "
                     f"step memory {training['medsa']['peak_bytes'] / training['full']['peak_bytes']:.3f}")
    if "medsa" in training and "medsa+ckpt" in training:
        ckpt, plain = training["medsa+ckpt"], training["medsa"]
        lines.append(f"checkpointing: step time x{ckpt['step_s'] / plain['step_s']:.3f}, process peak "
                     f"{ckpt['process_peak_bytes'] / gb:.2f} GB vs {plain['process_peak_bytes'] / gb:.2f} GB"
                     + (" (target <= 4.7 GB at 1024)" if size == 1024 else ""))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="ViT-B 256 only, fewer repeats")
    parser.add_argument("--r", type=int, default=64)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--parts", nargs="+", choices=["inference", "training"], default=["inference", "training"])
    parser.add_argument("--sizes", nargs="+", type=int, default=None, help="image sizes (default 256 1024)")
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    parser.add_argument("--repeats", type=int, default=None, help="forward repeats (default 21 at 256, 7 at 1024)")
    parser.add_argument("--steps", type=int, default=None, help="timed steps per process (default 3 at 256, 1)")
    parser.add_argument("--rounds", type=int, default=None, help="processes per variant (default 2 at 256, 1)")
    parser.add_argument("--image-size", type=int, default=256, help=argparse.SUPPRESS)
    parser.add_argument("--_train-child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    dtype = getattr(torch, args.dtype)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args._train_child:
        steps = args.steps or 1
        print(json.dumps(train_step_stats(args.image_size, args._train_child, args.r, steps, args.device, dtype)))
        return
    print(f"device={args.device} dtype={args.dtype} threads={torch.get_num_threads()} r={args.r} "
          f"torch={torch.__version__} variants={args.variants}")
    sizes = args.sizes or ([256] if args.quick else [256, 1024])
    for size in sizes:
        small = size <= 256
        times = {}
        if "inference" in args.parts:
            repeats = args.repeats or (2 if args.quick else (21 if small else 7))
            times = bench_inference(size, args.r, repeats, args.device, dtype, args.variants)
        training = {}
        if "training" in args.parts:
            steps = args.steps or (1 if args.quick or not small else 3)
            rounds = args.rounds or (1 if args.quick or not small else 2)
            training = bench_training(size, args.r, steps, rounds, args.device, dtype, args.variants)
        print(report(size, times, training, args.variants), flush=True)


if __name__ == "__main__":
    main()
