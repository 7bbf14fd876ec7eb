"""GPU check: a few bf16 training steps of Med-SA on the ViT-H SAM configuration against full fine-tuning.

Random weights (no download), batch of 1024 x 1024 images with box prompts, Dice + BCE loss, AdamW. Prints per mode
the trainable parameters, the median step time after warm-up and the peak GPU memory, then one JSON line.

    python benchmarks/gpu_check.py                      # CUDA, ViT-H, bf16 (what benchmarks/gpu_check.sh runs)
    python benchmarks/gpu_check.py --device cpu --tiny  # CPU smoke test on a 2-layer, 32-wide, 64 px SAM
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import time

import torch


def sam_config(tiny: bool):
    """ViT-H SAM (hidden 1280, 32 layers, 16 heads, global attention at 7, 15, 23, 31) or a tiny one."""
    from transformers import SamConfig

    if tiny:
        vision = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, image_size=64, patch_size=8,
                      mlp_dim=64, output_channels=32, global_attn_indexes=[1], window_size=3, num_pos_feats=16)
        return SamConfig(
            vision_config={**vision, "initializer_range": 0.02},
            prompt_encoder_config=dict(hidden_size=32, image_size=64, patch_size=8),
            mask_decoder_config=dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, mlp_dim=64,
                                     iou_head_hidden_dim=32),
        )
    vision = dict(hidden_size=1280, num_hidden_layers=32, num_attention_heads=16, global_attn_indexes=[7, 15, 23, 31],
                  mlp_dim=5120, initializer_range=0.02)
    return SamConfig(vision_config=vision)


def build(mode: str, config, device: torch.device, rank: int):
    from peft import get_peft_model
    from transformers import SamModel

    import peft_medsa

    torch.manual_seed(0)
    with device:
        model = SamModel(config)
    if mode == "medsa":
        model = get_peft_model(model, peft_medsa.MedSAConfig(r=rank))
    else:
        model.requires_grad_(True)
    return model.eval()  # no dropout in SAM; eval keeps the comparison free of mode effects


def run_mode(mode: str, args, device: torch.device) -> dict:
    from peft_medsa.training import dice_bce_loss

    config = sam_config(args.tiny)
    model = build(mode, config, device, args.rank)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    size = config.vision_config.image_size
    g = torch.Generator(device="cpu").manual_seed(1)
    pixels = torch.randn(args.batch, 3, size, size, generator=g).to(device)
    boxes = torch.tensor([[[size * 0.2, size * 0.25, size * 0.7, size * 0.8]]]).repeat(args.batch, 1, 1).to(device)
    low = size // config.vision_config.patch_size * 4  # SAM's low-resolution mask side (256 for 1024 px)
    target = torch.zeros(args.batch, low, low, device=device)
    target[:, low // 4 : 3 * low // 4, low // 5 : 3 * low // 5] = 1
    use_bf16 = args.precision == "bf16"
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        torch.cuda.synchronize(device)
    times, losses = [], []
    for step in range(args.warmup + args.steps):
        start = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
            out = model(pixel_values=pixels, input_boxes=boxes, multimask_output=False)
        loss = dice_bce_loss(out.pred_masks[:, 0, 0].float(), target)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if step >= args.warmup:
            times.append(time.perf_counter() - start)
        losses.append(loss.item())
    result = {
        "mode": mode,
        "trainable_params": sum(p.numel() for p in params),
        "total_params": sum(p.numel() for p in model.parameters()),
        "step_s": statistics.median(times),
        "peak_mem_gib": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None,
        "first_loss": losses[0],
        "last_loss": losses[-1],
    }
    if not all(torch.isfinite(torch.tensor(losses))):
        raise FloatingPointError(f"{mode}: non-finite loss in {losses}")
    del model, optimizer, params, out, loss
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="cuda (default) or cpu")
    parser.add_argument("--tiny", action="store_true", help="2-layer, 32-wide, 64 px SAM instead of ViT-H")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per mode")
    parser.add_argument("--warmup", type=int, default=2, help="untimed warm-up steps per mode")
    parser.add_argument("--batch", type=int, default=1, help="images per step")
    parser.add_argument("--rank", type=int, default=None, help="Med-SA adapter width r (default 64; 4 with --tiny)")
    parser.add_argument("--precision", choices=["bf16", "fp32"], default=None,
                        help="default: bf16 on CUDA, fp32 on CPU")
    parser.add_argument("--modes", nargs="+", choices=["medsa", "full"], default=["medsa", "full"])
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda but CUDA is not available; use --device cpu --tiny for a smoke test")
    args.rank = args.rank or (4 if args.tiny else 64)
    args.precision = args.precision or ("bf16" if device.type == "cuda" else "fp32")
    torch.set_flush_denormal(True)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"device {name}; {'tiny SAM' if args.tiny else 'SAM ViT-H (random weights)'}; {args.precision}; "
          f"batch {args.batch}; Med-SA r={args.rank}; {args.steps} timed steps after {args.warmup} warm-up")
    results = [run_mode(mode, args, device) for mode in args.modes]
    print(f"{'mode':<6} {'trainable':>14} {'of total':>14} {'step (s)':>9} {'peak GiB':>9} {'loss first->last':>18}")
    for r in results:
        print(f"{r['mode']:<6} {r['trainable_params']:>14,} {r['total_params']:>14,} {r['step_s']:>9.3f} "
              f"{r['peak_mem_gib'] or float('nan'):>9.2f} {r['first_loss']:>8.4f}->{r['last_loss']:.4f}")
    print(json.dumps({"device": name, "precision": args.precision, "tiny": args.tiny, "results": results}))


if __name__ == "__main__":
    main()
