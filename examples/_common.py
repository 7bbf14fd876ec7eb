"""Shared command-line plumbing of the example training scripts (a thin layer over `peft_medsa.training`)."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch


def base_parser(description: str) -> argparse.ArgumentParser:
    """The flags every example accepts."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--model", required=True,
                        help="local folder or Hub id of a SamModel or LiteMedSAM (e.g. facebook/sam-vit-base)")
    parser.add_argument("--data-dir", required=True, help="root of the benchmark's official layout")
    parser.add_argument("--output-dir", required=True, help="run folder (refused if it exists, unless --resume)")
    parser.add_argument("--max-steps", type=int, default=1000, help="optimizer steps")
    parser.add_argument("--batch-size", type=int, default=2, help="images per micro-batch and process")
    parser.add_argument("--grad-accum", type=int, default=1, help="micro-batches per optimizer step")
    parser.add_argument("--lr", type=float, default=1e-4, help="peak AdamW learning rate")
    parser.add_argument("--rank", type=int, default=64, help="adapter bottleneck width r (paper: 64)")
    parser.add_argument("--normalization", "--normalize", choices=["auto", "imagenet", "minmax"], default="auto",
                        help="input normalisation; auto: minmax for LiteMedSAM, imagenet for ViT SAM")
    parser.add_argument("--eval-setting", default="1pt", help="validation prompts: 1pt, 3pt, bbox0.5, bbox0.75, bbox")
    parser.add_argument("--eval-every", type=int, default=0, help="validate every N steps (0: at the end)")
    parser.add_argument("--save-every", type=int, default=100, help="checkpoint every N steps (0: never)")
    parser.add_argument("--box-probability", type=float, default=0.0, help="share of micro-batches started by a box")
    parser.add_argument("--val-fraction", type=float, default=0.1,
                        help="cases moved to validation when the layout has no validation split")
    parser.add_argument("--cache-dir", default=None, help="datasets cache for the prepared Arrow files")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cpu", action="store_true", help="force CPU")
    parser.add_argument("--no-progress", action="store_true", help="no tqdm progress bar")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--resume", action="store_true", help="continue the run in --output-dir")
    group.add_argument("--overwrite", action="store_true", help="delete --output-dir first")
    return parser


def load_model(name_or_path: str) -> torch.nn.Module:
    """A SamModel or LiteMedSAM from a local folder or the Hub."""
    from transformers import AutoModel

    import peft_medsa.backbones  # noqa: F401  (registers LiteMedSAM with the Auto classes)

    return AutoModel.from_pretrained(name_or_path)


def load_splits(benchmark: str, args: argparse.Namespace, **builder_kwargs: Any):
    """``(train, validation)`` 2D datasets of a benchmark (3D sets as slices); layout errors pass through."""
    from peft_medsa.data.builders import load_benchmark

    view = {"view": "slice"} if benchmark in ("btcv", "brats2021") else {}
    splits = load_benchmark(benchmark, args.data_dir, cache_dir=args.cache_dir, **view, **builder_kwargs)
    if "validation" not in splits and args.val_fraction > 0:
        splits = load_benchmark(benchmark, args.data_dir, cache_dir=args.cache_dir, val_fraction=args.val_fraction,
                                **view, **builder_kwargs)
    return splits["train"], splits.get("validation")


def train_adapter(
    args: argparse.Namespace,
    model: torch.nn.Module,
    train_data: Sequence,
    eval_data: Sequence | None,
    output_dir: Path,
    card_info: dict[str, Any],
):
    """Wraps ``model`` with fresh Med-SA adapters and trains them into ``output_dir``; returns the result."""
    from peft import get_peft_model

    from peft_medsa import MedSAConfig
    from peft_medsa.training import MedSATrainer, TrainingConfig

    config = TrainingConfig(
        output_dir=str(output_dir), max_steps=args.max_steps, batch_size=args.batch_size,
        gradient_accumulation_steps=args.grad_accum, learning_rate=args.lr, save_every=args.save_every,
        eval_every=args.eval_every, eval_setting=args.eval_setting, box_probability=args.box_probability,
        normalization=args.normalization, seed=args.seed, cpu=args.cpu,
        resume=args.resume, overwrite=args.overwrite, show_progress=not args.no_progress,
    )
    peft_model = get_peft_model(model, MedSAConfig(r=args.rank))
    info = {"base_model": args.model, **card_info}
    result = MedSATrainer(peft_model, train_data, config, eval_data=eval_data, card_info=info).train()
    summary = {"output_dir": str(output_dir), "steps": result.steps, "best_dice": result.best_dice,
               "final_adapter": str(result.final_dir)}
    print(json.dumps(summary))
    return result


def main_single(benchmark: str, description: str, card: dict[str, Any], argv: Sequence[str] | None = None,
                builder_flags: dict[str, dict[str, Any]] | None = None) -> None:
    """One adapter for all targets of a benchmark (the 2D sets and BraTS).

    Args:
        builder_flags: ``{"--year": argparse kwargs}``: extra flags whose values are passed to the builder under the
            flag's name (``year=...``) when given.
    """
    from peft_medsa.data.labels import get_labels
    from peft_medsa.training import TargetSamples

    parser = base_parser(description)
    spec = get_labels(benchmark)
    parser.add_argument("--targets", nargs="+", default=None, choices=list(spec.targets()),
                        help="targets to train on (default: all)")
    for flag, kwargs in (builder_flags or {}).items():
        parser.add_argument(flag, **kwargs)
    args = parser.parse_args(argv)
    builder_kwargs = {}
    for flag in builder_flags or {}:
        value = getattr(args, flag.lstrip("-").replace("-", "_"))
        if value is not None:
            builder_kwargs[flag.lstrip("-").replace("-", "_")] = tuple(value) if isinstance(value, list) else value
    train_split, val_split = load_splits(benchmark, args, **builder_kwargs)
    model = load_model(args.model)
    train_data = TargetSamples(train_split, spec, args.targets)
    eval_data = TargetSamples(val_split, spec, args.targets) if val_split is not None else None
    train_adapter(args, model, train_data, eval_data, Path(args.output_dir), card)
