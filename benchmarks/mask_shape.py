"""Masks drawn as ellipses: validation Dice of the default recipe's adapters with the masks as predicted and with the
ellipse fitted to each (:mod:`peft_medsa.mask_shape`), on the real 2D sets of ``real_data.py``.

For every set it prints how well the training masks agree with their own fitted ellipses (the trainer's
``mask_shape="auto"`` rule: ``"ellipse"`` from a median Dice of 0.98) and the shape the trainer recorded; then, for
zero-shot LiteMedSAM and for each training seed of the default recipe (``LITE_MEDSAM``, 200 steps, trained as
``learning_curves.py`` trains ``medsa``), the validation Dice of every prompt setting (5 prompt seeds) both ways. The
two columns come from the same predictions: the fit is applied to each predicted mask.

Adapters are saved to (and, when present, loaded from) ``--adapters/<set>-s<seed>``, so a second look costs only
the evaluation.

Usage:
    python benchmarks/mask_shape.py --sets origa_disc origa_cup --seeds 0 1 2 --adapters outputs/mask_shape
    python benchmarks/mask_shape.py --preset optic-disc-cup --adapters outputs/mask_shape_preset   # the preset's
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _real_data_sets import DATASETS, add_set_arguments, load_split, ready  # noqa: E402
from learning_curves import SETTINGS, build, parse_overrides, run_config  # noqa: E402

from peft_medsa.mask_shape import ellipse_agreement, fit_ellipse, mask_shape_of_data  # noqa: E402
from peft_medsa.training.recipes import LITE_MEDSAM_PRESETS  # noqa: E402

SHAPES = ("as predicted", "ellipse")


def evaluate(model, samples: list[dict], repeats: int) -> dict[str, dict[str, float]]:
    """``{shape: {setting: mean Dice %}}`` of the masks as predicted and of their fitted ellipses (each image
    embedded once; the same prompts and predictions for both)."""
    from peft_medsa.evaluation import evaluate_model
    from peft_medsa.inference.predictor import MedSAPredictor

    predictor = MedSAPredictor(model, mask_shape=None)
    records = {shape: {s: [] for s in SETTINGS} for shape in SHAPES}
    model.eval()
    for sample in samples:
        predictor.set_image(sample["image"])
        for setting in SETTINGS:
            pairs: list[tuple[np.ndarray, np.ndarray]] = []  # (predicted, fitted) of each call, in order

            def predict(image, prompt, pairs=pairs):
                points = prompt.points if prompt.num_points else None
                labels = prompt.labels if prompt.num_points else None
                mask = predictor.predict(point_coords=points, point_labels=labels, box=prompt.box)[0][0]
                pairs.append((mask, fit_ellipse(mask)))
                return mask

            result = evaluate_model(predict, [sample], setting, repeats=repeats, seed=0, show_progress=False)
            truth = np.asarray(sample["mask"]) > 0
            raw = [_dice(mask, truth) for mask, _ in pairs]
            if not np.allclose(raw, [r["dice"] for r in result.records]):  # the pairs are the records' predictions
                raise RuntimeError(f"{sample.get('case_id')}, {setting}: predictions and records out of step")
            records["as predicted"][setting].extend(raw)
            records["ellipse"][setting].extend(_dice(fitted, truth) for _, fitted in pairs)
    return {shape: {s: 100 * float(np.mean(v)) for s, v in per.items()} for shape, per in records.items()}


def _dice(prediction: np.ndarray, truth: np.ndarray) -> float:
    from peft_medsa.metrics import compute_dice

    return float(compute_dice(prediction, truth))


def adapter(name: str, seed: int, train: list[dict], folder: Path | None, preset: str | None = None,
            adapter_changes: dict | None = None, steps: int | None = None):
    """The default recipe's adapter of ``name`` and ``seed`` (changed by ``preset``, a name of
    ``LITE_MEDSAM_PRESETS``, by ``adapter_changes``, MedSAConfig fields, and by ``steps``): loaded from
    ``folder/<name>-s<seed>`` when there, else trained (the recipe's 200 steps unless ``steps``; one CPU thread as set
    by the caller) and saved there. Returns ``(model, train seconds or None, recorded mask_shape)``."""
    from peft import PeftModel

    from peft_medsa.backbones import convert_lite_medsam
    from peft_medsa.training import MedSATrainer

    path = folder / f"{name}-s{seed}" if folder else None
    if path is not None and (path / "adapter_config.json").is_file():
        model = PeftModel.from_pretrained(convert_lite_medsam(), str(path))
        return model, None, model.peft_config["default"].mask_shape
    model, training = build("medsa", seed, preset=preset, adapter=adapter_changes)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="mask_shape_") as tmp:  # run_config caps the warm-up at steps // 4
        MedSATrainer(model, train, run_config(training, tmp, steps or training["max_steps"], seed)).train()
    seconds = time.perf_counter() - start
    if path is not None:
        model.save_pretrained(str(path))
    return model, seconds, model.peft_config["default"].mask_shape


def table(results: list[dict]) -> str:
    """Markdown: per set and model, mean ± std over training seeds of each setting, as predicted -> ellipse."""
    lines = ["| set | model (seeds) | " + " | ".join(SETTINGS) + " |", "|---|---|" + "---|" * len(SETTINGS)]
    for name in sorted({r["set"] for r in results}):
        for model in sorted({r["model"] for r in results if r["set"] == name}, key=lambda m: m != "zero-shot"):
            mine = [r for r in results if (r["set"], r["model"]) == (name, model)]
            if not mine:
                continue
            cells = []
            for setting in SETTINGS:
                raw = [r["as predicted"][setting] for r in mine]
                fit = [r["ellipse"][setting] for r in mine]
                bold = "**" if np.mean(fit) >= np.mean(raw) else ""
                cells.append(f"{np.mean(raw):.1f} -> {bold}{np.mean(fit):.1f}{bold} (±{np.std(fit):.1f})")
            seeds = ",".join(str(r["seed"]) for r in mine)
            lines.append(f"| {name} | {model} ({seeds}) | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_set_arguments(parser)
    parser.add_argument("--adapters", type=Path, default=None, help="folder of the adapters (saved, or reused)")
    parser.add_argument("--preset", choices=sorted(LITE_MEDSAM_PRESETS), default=None,
                        help="train with a named LiteMedSAM preset instead of the default (use its own --adapters)")
    parser.add_argument("--adapter", nargs="+", default=[], metavar="KEY=VALUE",
                        help="MedSAConfig changes of the trained adapters, as learning_curves.py --adapter, e.g. "
                        "'encoder_layers=[6,7,8,9]' (use their own --adapters)")
    parser.add_argument("--steps", type=int, default=None, help="optimizer steps (default: the recipe's)")
    args = parser.parse_args(argv)
    changes = parse_overrides(args.adapter, config="adapter")
    if not ready(args):
        return 0
    from peft_medsa.backbones import convert_lite_medsam

    results = []
    for name in args.sets:
        train, val = load_split(DATASETS[name], args.data_root)
        agreement = [ellipse_agreement(np.asarray(s["mask"]) > 0) for s in train]
        print(json.dumps({"set": name, "train_mask_agreement_median": round(float(np.nanmedian(agreement)), 4),
                          "min": round(float(np.nanmin(agreement)), 4), "auto_shape": mask_shape_of_data(train)}),
              flush=True)
        zero = evaluate(convert_lite_medsam(), val, args.repeats)
        results.append({"set": name, "model": "zero-shot", "seed": 0, **zero})
        print(json.dumps(results[-1]), flush=True)
        for seed in args.seeds:
            model, seconds, recorded = adapter(name, seed, train, args.adapters, args.preset, changes,
                                               args.steps)
            label = " ".join(["medsa", *([args.preset] if args.preset else []), *args.adapter,
                              *([f"{args.steps} steps"] if args.steps else [])])
            results.append({"set": name, "model": label, "seed": seed, "train_s": seconds,
                            "recorded_shape": recorded, **evaluate(model, val, args.repeats)})
            print(json.dumps(results[-1]), flush=True)
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
