"""Box fit: validation Dice of box prompts with the predicted masks made to span the box when their extent agrees
with it (:mod:`peft_medsa.box_fit`), against the masks as predicted and the ellipse inscribed in the tight box.

For every set and every saved adapter ``--adapters/<set>-s<seed>`` (as ``mask_shape.py`` saves them; zero-shot
LiteMedSAM too), each box setting (``bbox0.5``, ``bbox0.75``, the tight box ``bbox``; 5 prompt seeds) is predicted
once, and every prediction is scored as predicted, stretched to the box, fitted by the ellipse (``mask_shape``) and
by the ellipse scaled to the box, together with the IoU of its bounding box with the prompt box. The table then
applies each fit only where that IoU reaches a threshold, for a range of thresholds, so that one run shows which
threshold helps tight boxes without hurting loose ones. Per-prediction records go to ``--out`` as JSON lines.

Usage:
    python benchmarks/box_fit.py --sets origa_disc origa_cup ddti isic --seeds 0 1 2 --adapters outputs/adapters \
        --out outputs/box_fit.jsonl
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _real_data_sets import (  # noqa: E402
    DATASETS,
    add_set_arguments,
    append_json_lines,
    load_split,
    ready,
    saved_models,
)
from learning_curves import ellipse_dice  # noqa: E402

from peft_medsa.box_fit import ellipse_to_box, extent_agreement, stretch_to_box  # noqa: E402
from peft_medsa.mask_shape import fit_ellipse  # noqa: E402

BOX_SETTINGS = ("bbox0.5", "bbox0.75", "bbox")
FITS = ("stretch", "ellipse", "ellipse-box")
THRESHOLDS = (0.0, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95, 1.01)


def _dice(prediction: np.ndarray, truth: np.ndarray) -> float:
    from peft_medsa.metrics import compute_dice

    return float(compute_dice(prediction, truth))


def records_of(model, samples: list[dict], repeats: int) -> list[dict]:
    """One record per prediction: ``setting``, ``agreement`` and the Dice of each way of drawing the mask."""
    from peft_medsa.evaluation import evaluate_model
    from peft_medsa.inference.predictor import MedSAPredictor

    predictor = MedSAPredictor(model, mask_shape=None, box_prior=None)
    out = []
    model.eval()
    for sample in samples:
        predictor.set_image(sample["image"])
        truth, case = np.asarray(sample["mask"]) > 0, sample.get("case_id")
        for setting in BOX_SETTINGS:
            def predict(image, prompt, setting=setting, case=case, truth=truth):
                mask = predictor.predict(box=prompt.box)[0][0]
                out.append({"case": case, "setting": setting,
                            "agreement": extent_agreement(mask, prompt.box), "raw": _dice(mask, truth),
                            "stretch": _dice(stretch_to_box(mask, prompt.box), truth),
                            "ellipse": _dice(fit_ellipse(mask), truth),
                            "ellipse-box": _dice(ellipse_to_box(mask, prompt.box), truth)})
                return mask

            evaluate_model(predict, [sample], setting, repeats=repeats, seed=0, show_progress=False)
    return out


def table(records: list[dict]) -> str:
    """Markdown: per set, model and fit, mean Dice (%) of each box setting with the fit applied from each
    threshold (``as predicted`` first; 1.01 never applies it)."""
    lines = ["| set | model | fit | threshold | " + " | ".join(BOX_SETTINGS) + " |", "|---|---|---|---|---|---|---|"]
    keys = sorted({(r["set"], r["model"]) for r in records})
    for name, model in keys:
        mine = [r for r in records if (r["set"], r["model"]) == (name, model)]
        raw = [np.mean([100 * r["raw"] for r in mine if r["setting"] == s]) for s in BOX_SETTINGS]
        lines.append(f"| {name} | {model} | as predicted | - | " + " | ".join(f"{v:.1f}" for v in raw) + " |")
        for fit in FITS:
            for threshold in THRESHOLDS[:-1]:
                cells = []
                for s in BOX_SETTINGS:
                    chosen = [r[fit] if r["agreement"] >= threshold else r["raw"] for r in mine if r["setting"] == s]
                    applied = np.mean([r["agreement"] >= threshold for r in mine if r["setting"] == s])
                    cells.append(f"{100 * np.mean(chosen):.1f} ({100 * applied:.0f}%)")
                lines.append(f"| {name} | {model} | {fit} | {threshold} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_set_arguments(parser)
    parser.add_argument("--adapters", type=Path, required=True, help="folder of saved adapters <set>-s<seed>")
    parser.add_argument("--zero-shot", action="store_true", help="also score zero-shot LiteMedSAM")
    parser.add_argument("--out", type=Path, default=None, help="JSON lines of every prediction's record")
    args = parser.parse_args(argv)
    if not ready(args):
        return 0
    records: list[dict] = []
    for name in args.sets:
        _, val = load_split(DATASETS[name], args.data_root)
        print(json.dumps({"set": name, "validation_images": len(val),
                          "ellipse_in_tight_box": round(ellipse_dice(val), 2)}), flush=True)
        for label, model in saved_models(args.adapters, name, args.seeds, zero_shot=args.zero_shot):
            mine = [{"set": name, "model": label, **r} for r in records_of(model, val, args.repeats)]
            records += mine
            append_json_lines(args.out, mine)
            print(json.dumps({"set": name, "model": label, "n": len(mine)}), flush=True)
    print(table(records))
    return 0


if __name__ == "__main__":
    sys.exit(main())
