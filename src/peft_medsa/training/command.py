"""``peft-medsa train``: Med-SA adapters for a user's own folder of images and masks, in one command.

    peft-medsa train --data DIR --out ADAPTER_DIR [--model lite-medsam|HUB_ID|DIR] [--steps N] [--target NAME]

``DIR`` has the layouts of the ``folder`` builder (:mod:`peft_medsa.data.builders.folder`): ``images/`` + ``masks/``
paired by file stem, 2D images or NIfTI volumes (``labels/`` accepted), optionally inside ``train/`` and
``validation/``. Without a validation split, every ``round(1 / val_fraction)``-th case (volumes whole) is held out.
Volumes train and validate slice by slice.

The recipe (adapter placement, rank, learning rate, steps, training prompts) comes from
:func:`peft_medsa.training.recipes.default_recipe` for the model; flags override parts of it. The run folder
(checkpoints, metrics, training curve) is ``ADAPTER_DIR.run/``; ``ADAPTER_DIR`` receives the adapter of the best
validation Dice (or the final one without validation data) with a model card whose Evaluation section holds the
validation metrics measured on that adapter. The same runs under ``accelerate launch examples/train_folder.py``.
The flags are defined in :func:`peft_medsa.cli.add_train_arguments` (the command line imports nothing heavy).
"""

from __future__ import annotations

import argparse
import os
import shutil
from pathlib import Path
from typing import Any

CARD_SETTINGS = ("1pt", "3pt", "bbox0.75", "bbox")
"""Prompt settings measured on the validation cases for the model card."""


def _check_arguments(args: argparse.Namespace) -> tuple[Path, Path, Path]:
    from ..inference.commands import UserError

    data, out = Path(args.data), Path(args.out)
    run = out.with_name(out.name + ".run")
    if not data.is_dir():
        raise UserError(f"--data {data}: not a folder; expected images/ + masks/ (or train/ and validation/)")
    for path, flag in ((out, "--out"), (run, "run folder")):
        if path.exists() and not args.overwrite:
            raise UserError(f"{flag} {path} exists; pass --overwrite to replace it")
    if out.resolve() == data.resolve() or data.resolve() in out.resolve().parents:
        raise UserError(f"--out {out} lies inside --data {data}; write the adapter elsewhere")
    if args.steps is not None and args.steps < 1:
        raise UserError(f"--steps {args.steps}: expected at least 1")
    if not 0.0 < args.val_fraction < 1.0:
        raise UserError(f"--val-fraction {args.val_fraction}: expected a number in (0, 1)")
    if args.repeats < 1:
        raise UserError(f"--repeats {args.repeats}: expected at least 1")
    return data, out, run


def load_folder_splits(args: argparse.Namespace):
    """``(train, validation, spec)``: the folder's 2D samples (volumes as slices) and its label spec."""
    from ..data.builders import load_benchmark
    from ..data.labels import spec_for_label_names
    from ..inference.commands import UserError, _builder_options

    options = _builder_options(args.option)
    splits = load_benchmark("folder", args.data, split=None, cache_dir=args.cache_dir, **options)
    if "validation" not in splits:
        splits = load_benchmark("folder", args.data, split=None, cache_dir=args.cache_dir,
                                val_fraction=args.val_fraction, **options)
    if "train" not in splits or len(splits["train"]) == 0:
        raise UserError(f"--data {args.data}: no training cases found (splits: {sorted(splits)})")
    train = splits["train"]
    return train, splits.get("validation"), spec_for_label_names(train[0]["label_names"])


def _card_evaluation(model: Any, eval_data: Any, repeats: int, seed: int) -> str:
    """Markdown of the validation metrics of ``model`` for :data:`CARD_SETTINGS` (mean ± std over repeats)."""
    from ..evaluation import evaluate_model
    from ..inference.predictor import MedSAPredictor, cached_predict_fn

    predict = cached_predict_fn(MedSAPredictor(model))
    lines = [f"Validation cases: {len(eval_data)} (held out from training); prompts repeated {repeats}x.", "",
             "| prompt | target | Dice (%) | IoU (%) | HD95 |", "|---|---|---:|---:|---:|"]
    for setting in CARD_SETTINGS:
        result = evaluate_model(predict, eval_data, setting, repeats=repeats, seed=seed, show_progress=False)
        rows = result.summary()
        for row in rows[:-1] if len(rows) == 2 else rows:  # one target: its row equals the average row
            lines.append(f"| {setting} | {row['class']} | {100 * row['dice_mean']:.1f} ± {100 * row['dice_std']:.1f} "
                         f"| {100 * row['iou_mean']:.1f} ± {100 * row['iou_std']:.1f} | {row['hd95_mean']:.1f} |")
    return "\n".join(lines) + "\n"


def run_train(args: argparse.Namespace) -> str:
    """``peft-medsa train`` (module docstring); returns the summary printed at the end."""
    import torch
    from peft import PeftModel, get_peft_model

    from ..hub.cards import write_model_card
    from ..inference.commands import UserError, load_model
    from ..model_input import resolve_normalization
    from . import MedSATrainer, TargetSamples
    from .recipes import default_recipe

    data, out, run = _check_arguments(args)
    train_split, val_split, spec = load_folder_splits(args)
    available = list(spec.targets())
    unknown = [t for t in args.target or [] if t not in available]
    if unknown:
        raise UserError(f"--target {unknown[0]!r}: not a target of {data}; available: {available}")
    train_data = TargetSamples(train_split, spec, args.target)
    eval_data = TargetSamples(val_split, spec, args.target) if val_split is not None else None
    if len(train_data) == 0:
        raise UserError(f"--data {data}: no training image holds the target(s) {args.target or available}")
    if eval_data is not None and len(eval_data) == 0:
        eval_data = None
    base = load_model(args.model, device="cpu")
    try:
        recipe = default_recipe(base, steps=args.steps, learning_rate=args.lr, rank=args.rank,
                                preset=args.preset)
    except ValueError as error:
        raise UserError(f"--preset: {error}") from None
    torch.manual_seed(args.seed)
    model = get_peft_model(base, recipe.peft_config)
    eval_every = args.eval_every if args.eval_every is not None else max(recipe.training["max_steps"] // 4, 1)
    config = recipe.training_config(
        output_dir=str(run), eval_every=eval_every if eval_data is not None else 0, seed=args.seed,
        overwrite=args.overwrite, cpu=args.cpu, show_progress=not getattr(args, "quiet", False),
        mask_shape=None if getattr(args, "mask_shape", "auto") == "none" else getattr(args, "mask_shape", "auto"),
    )
    targets = ", ".join(args.target or available)
    base_model = "LiteMedSAM" if args.model == "lite-medsam" else args.model
    card = {"task": f"{targets} segmentation", "base_model": base_model,
            "prompts": recipe.training_text, "normalization": resolve_normalization(model, config.normalization),
            "training_data": f"{len(train_data)} training images (folder `{data.name}`), "
                             f"{0 if eval_data is None else len(eval_data)} validation images"}
    result = MedSATrainer(model, train_data, config, eval_data=eval_data, card_info=card).train()
    from accelerate import PartialState

    if not PartialState().is_main_process:  # under accelerate launch the main process exports the adapter
        return ""
    chosen = result.best_dir or result.final_dir
    tmp = out.with_name(f".tmp-{out.name}")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(chosen, tmp)
    metrics = None
    if eval_data is not None:
        exported = PeftModel.from_pretrained(load_model(args.model, device="cpu"), str(tmp)).eval()
        metrics = _card_evaluation(exported, eval_data, args.repeats, args.seed)
        state = (chosen / "val_metrics.json").read_text() if (chosen / "val_metrics.json").is_file() else ""
        metrics = f"Adapter selected by validation Dice ({state.strip() or 'final step'}).\n\n" + metrics
        write_model_card(tmp, peft_model=exported, metrics_markdown=metrics, training_steps=result.steps, **card)
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
    lines = [f"trained {result.steps} steps on {len(train_data)} images; adapter: {out} (run folder: {run})"]
    shape = getattr(model.peft_config[model.active_adapter], "mask_shape", None)
    if shape == "ellipse":
        lines.append("mask shape: ellipse (the training masks are drawn as ellipses; the predictor fits one to each "
                     "predicted mask; --mask-shape none at prediction for the mask as predicted)")
    if metrics:
        lines.append(metrics)
    return "\n".join(lines)


__all__ = ["load_folder_splits", "run_train"]
