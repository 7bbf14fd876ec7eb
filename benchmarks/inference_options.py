"""Inference options: would the saved adapters score higher on validation if their masks were drawn differently?

Every prediction of the default recipe's adapters (``--adapters/<set>-s<seed>``, as ``mask_shape.py`` saves them) is
scored, from the same logits, in these ways:

- ``raw``: ``logits > 0``, what the predictor returns (with the adapter's ``mask_shape`` fit, as the predictor
  applies it: the ellipse on ORIGA);
- ``t=<x>``: ``logits > x`` for a range of logit thresholds (a negative ``x`` grows the mask);
- ``mirror``: the mean of the logits of the image and of its left-right mirror (prompts mirrored with it, the
  mirrored logits mirrored back), then ``> 0``: test-time mirroring;
- ``component``: only the connected components that hold a positive click (the largest component without one), holes
  filled;
- ``multimask`` (1-point only): SAM's three candidate masks, the one with the highest predicted IoU.

The threshold is then also chosen the honest way: for each validation image, the threshold with the best mean Dice on
the OTHER validation images of the same adapter (leave one image out) is applied to it, as a trainer would choose it
on a held-out part. Per-prediction records go to ``--out`` (JSON lines); the tables to stdout.

Usage:
    python benchmarks/inference_options.py --sets isic ddti origa_disc origa_cup --seeds 0 1 2 \
        --adapters outputs/adapters --out outputs/inference_options.jsonl
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

from peft_medsa.mask_shape import apply_mask_shape  # noqa: E402

SETTINGS = ("1pt", "3pt", "bbox0.5", "bbox0.75", "bbox")
THRESHOLDS = (-3.0, -2.0, -1.5, -1.0, -0.5, 0.0, 0.5, 1.0)
VARIANTS = ("raw", "mirror", "component", "multimask")


def clicked_components(mask: np.ndarray, points: np.ndarray | None, labels: np.ndarray | None) -> np.ndarray:
    """The connected components of ``mask`` (H, W) that hold a positive click ((x, y) pixels), or the largest one
    when none does; holes filled."""
    from scipy import ndimage

    regions, count = ndimage.label(mask)
    if count == 0:
        return mask
    keep = set()
    for (x, y), label in zip(points if points is not None else [], labels if labels is not None else []):
        region = regions[int(round(y)), int(round(x))]
        if label == 1 and region:
            keep.add(int(region))
    if not keep:
        sizes = ndimage.sum(mask, regions, range(1, count + 1))
        keep = {int(np.argmax(sizes)) + 1}
    return ndimage.binary_fill_holes(np.isin(regions, sorted(keep)))


def mirror_prompt(points, box, width: int):
    """Points ``(N, 2)`` (x, y) and an inclusive XYXY box mirrored left-right in an image ``width`` pixels wide."""
    mirrored_points = None if points is None else np.stack([width - 1 - points[:, 0], points[:, 1]], axis=1)
    mirrored_box = None if box is None else np.array([width - 1 - box[2], box[1], width - 1 - box[0], box[3]])
    return mirrored_points, mirrored_box


def records_of(model, samples: list[dict], repeats: int) -> list[dict]:
    """One record per prediction: ``case``, ``setting`` and the Dice of every way of drawing the mask."""
    from peft_medsa.evaluation import evaluate_model
    from peft_medsa.inference.predictor import MedSAPredictor
    from peft_medsa.metrics import compute_dice

    predictor = MedSAPredictor(model, box_prior=None)
    mirrored = MedSAPredictor(model, box_prior=None)
    shape = predictor.mask_shape

    def dice(mask, truth):
        return float(compute_dice(apply_mask_shape(mask[None], shape)[0], truth))

    out: list[dict] = []
    for index, sample in enumerate(samples):
        image, truth = np.asarray(sample["image"]), np.asarray(sample["mask"]) > 0
        predictor.set_image(image)
        mirrored.set_image(np.ascontiguousarray(image[:, ::-1]))
        for setting in SETTINGS:
            def predict(_, prompt, setting=setting, truth=truth, width=image.shape[1], index=index):
                points = prompt.points if prompt.points is not None and len(prompt.points) else None
                labels = prompt.labels if points is not None else None
                logits = predictor.predict(point_coords=points, point_labels=labels, box=prompt.box,
                                           return_logits=True)[0][0]
                flip_points, flip_box = mirror_prompt(points, prompt.box, width)
                flipped = mirrored.predict(point_coords=flip_points, point_labels=labels, box=flip_box,
                                           return_logits=True)[0][0][:, ::-1]
                record = {"case": index, "setting": setting, "raw": dice(logits > 0, truth),
                          "mirror": dice((logits + flipped) / 2 > 0, truth),
                          "component": dice(clicked_components(logits > 0, points, labels), truth)}
                record.update({f"t={t:g}": dice(logits > t, truth) for t in THRESHOLDS})
                if setting == "1pt":
                    candidates, scores, _ = predictor.predict(point_coords=points, point_labels=labels,
                                                              multimask_output=True, return_logits=True)
                    record["multimask"] = dice(candidates[int(np.argmax(scores))] > 0, truth)
                out.append(record)
                return logits > 0

            evaluate_model(predict, [sample], setting, repeats=repeats, seed=0, show_progress=False)
    return out


def left_one_out(records: list[dict], calibrate: tuple[str, ...] = ("1pt",)) -> dict[str, float]:
    """Mean Dice per setting when each image gets the threshold that scores best on the adapter's other images (in the
    ``calibrate`` settings); ``records`` of one adapter."""
    keys = [f"t={t:g}" for t in THRESHOLDS]
    cases = sorted({r["case"] for r in records})
    per_case = {(c, s, k): np.mean([r[k] for r in records if r["case"] == c and r["setting"] == s])
                for c in cases for s in SETTINGS for k in keys}
    chosen = {}
    for case in cases:
        others = [c for c in cases if c != case]
        chosen[case] = max(keys, key=lambda k: np.mean([per_case[(c, s, k)] for c in others for s in calibrate]))
    return {s: float(np.mean([per_case[(c, s, chosen[c])] for c in cases])) for s in SETTINGS}


def tables(records: list[dict]) -> str:
    """Markdown: per set and setting, the mean Dice (%) over adapters and prompts of every variant, and the
    leave-one-image-out threshold."""
    keys = [*VARIANTS, *(f"t={t:g}" for t in THRESHOLDS), "threshold, left out"]
    lines = ["| set | setting | " + " | ".join(keys) + " |", "|---|---|" + "---|" * len(keys)]
    for name in sorted({r["set"] for r in records}):
        mine = [r for r in records if r["set"] == name]
        held = [left_one_out([r for r in mine if r["model"] == m]) for m in sorted({r["model"] for r in mine})]
        for setting in SETTINGS:
            rows = [r for r in mine if r["setting"] == setting]
            cells = [f"{100 * np.mean([r[k] for r in rows]):.1f}" if all(k in r for r in rows) else ""
                     for k in keys[:-1]]
            cells.append(f"{100 * np.mean([h[setting] for h in held]):.1f}")
            lines.append(f"| {name} | {setting} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_set_arguments(parser)
    parser.add_argument("--adapters", type=Path, required=True, help="folder of saved adapters <set>-s<seed>")
    parser.add_argument("--out", type=Path, default=None, help="JSON lines of every prediction's record")
    args = parser.parse_args(argv)
    if not ready(args):
        return 0
    records: list[dict] = []
    for name in args.sets:
        _, val = load_split(DATASETS[name], args.data_root)
        for label, model in saved_models(args.adapters, name, args.seeds):
            mine = [{"set": name, "model": label, **r} for r in records_of(model, val, args.repeats)]
            records += mine
            append_json_lines(args.out, mine)
            raw = round(100 * np.mean([r["raw"] for r in mine if r["setting"] == "1pt"]), 2)
            print(json.dumps({"set": name, "model": label, "n": len(mine), "1pt raw": raw}), flush=True)
    print(tables(records))
    return 0


if __name__ == "__main__":
    sys.exit(main())
