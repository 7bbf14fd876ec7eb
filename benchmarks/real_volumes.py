"""Real-volume benchmark: does SD-Trans beat 2D Med-SA on 3D Dice with the same prompts, most of all sparse ones?

Data (``_real_volume_sets.py``, read in place from ``../shared/data``; prints ``SKIPPED`` and exits 0 when the data or
the LiteMedSAM weights are absent): three BraTS 2015 cases (FLAIR + T1c; whole tumour WT and tumour core TC; leave one
case out, three folds), BraTS 2021 case 01646 (FLAIR; edema; lower half of its slices train, upper half test) and one
TotalSegmentator CT (spleen, kidneys, liver; slices 0-13 train, 16-29 test).

Methods, all on LiteMedSAM (``_volume_training.py``): ``zero-shot``; ``medsa-2d``: Med-SA adapters (r = 16) in the last
TinyViT stage and the decoder, slices segmented one by one; ``medsa-sdtrans``: the same adapters plus SD-Trans on that
stage, slices embedded together in chunks of 8 with an overlap of 2 (`VolumePredictor`). One adapter per set holds all
its targets (for BraTS one adapter for WT and TC). Both trained methods see the same chunks and prompts.

Prompt settings per test volume and target (``peft_medsa.inference.volume_prompts``), prompts per volume reported:
``box``: BBox 0.75 on every slice holding the target; ``click``: one positive click per such slice; ``sparse-k``
(k = 5, 10): the BBox 0.75 of every k-th such slice only, the others filled by propagation (previous mask's box,
`VolumePredictor.predict(propagate=True)`; for SD-Trans the embeddings also carry the depth context). Each setting is
repeated with ``--prompt-seeds`` seeds. Metrics: 3D Dice and HD95 in mm (thinned volume's spacing) on the whole kept
volume, false positives on slices without the target included.

Outputs (``--out``, default ``outputs/real_volumes``): ``results.md``, ``per_case.csv``, ``run.json``, montage PNGs
``montage_<set>_<case>.png`` (rows: ground truth, zero-shot, 2D, SD-Trans with the box setting; columns: slices) and
predicted NIfTI ``pred_<set>_<case>_<method>.nii.gz`` (labels 1.. per target, with the thinned volume's affine).

Usage:
    python benchmarks/real_volumes.py                 # full run
    python benchmarks/real_volumes.py --quick         # smoke run: BraTS fold 1, WT, box and sparse-5, 1 step,
                                                      # every 12th slice
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _real_volume_sets import DEFAULT_DATA_ROOT, VolumeCase, brats2015_folds, brats2021_set, ct_set, data_available

METHODS = ("zero-shot", "medsa-2d", "medsa-sdtrans")
LABELS = {"zero-shot": "LiteMedSAM zero-shot", "medsa-2d": "Med-SA 2D", "medsa-sdtrans": "Med-SA + SD-Trans"}


def settings(sparse: list[int]) -> list[str]:
    return ["box", "click"] + [f"sparse-{k}" for k in sparse]


def volume_prompts(target: np.ndarray, setting: str, seed: int):
    from peft_medsa.inference.volume_prompts import every_kth, prompts_from_mask

    if setting == "click":
        return prompts_from_mask(target, "1pt", seed), False
    prompts = prompts_from_mask(target, "bbox0.75", seed)
    if setting == "box":
        return prompts, False
    k = int(setting.split("-")[1])
    return every_kth(prompts, k, offset=seed), True


def evaluate_case(predictor, case: VolumeCase, targets: list[str], setting_names: list[str], seeds: int):
    """Rows of metrics for one test case and one method; also the box-setting masks of seed 0 (for outputs)."""
    from peft_medsa.metrics import compute_dice, compute_hd95

    rows, kept = [], {}
    for target_name in targets:
        target = case.targets[target_name]
        if not target.any():
            continue
        for setting in setting_names:
            for seed in range(seeds):
                prompts, propagate = volume_prompts(target, setting, seed)
                pred = predictor.predict(prompts, propagate=propagate)
                rows.append(
                    {
                        "target": target_name,
                        "setting": setting,
                        "seed": seed,
                        "prompted_slices": len(prompts),
                        "target_slices": int(target.reshape(len(target), -1).any(1).sum()),
                        "dice": compute_dice(pred, target),
                        "hd95_mm": compute_hd95(pred, target, spacing=case.spacing),
                    }
                )
                if setting == "box" and seed == 0:
                    kept[target_name] = pred
    return rows, kept


def montage(path: Path, case: VolumeCase, predictions: dict[str, dict[str, np.ndarray]], target: str) -> None:
    from peft_medsa.inference.overlay import draw_overlay, save_png

    present = np.flatnonzero(case.targets[target].reshape(len(case.slices), -1).any(1))
    columns = present[np.linspace(0, len(present) - 1, min(5, len(present))).round().astype(int)]
    rows = [[draw_overlay(case.slices[z], case.targets[target][z]) for z in columns]]
    for method in METHODS:
        if method in predictions:
            rows.append([draw_overlay(case.slices[z], predictions[method][target][z]) for z in columns])
    save_png(np.concatenate([np.concatenate(r, axis=1) for r in rows], axis=0), path)


def save_prediction(path: Path, case: VolumeCase, masks: dict[str, np.ndarray], targets: list[str]) -> None:
    from peft_medsa.data.io import Volume
    from peft_medsa.inference.volume_io import LoadedVolume, save_label_volume

    labels = np.zeros(case.slices.shape[:3], dtype=np.uint8)
    for k, name in enumerate(targets):
        if name in masks:
            labels[masks[name]] = k + 1
    reference = LoadedVolume(Volume(labels, case.affine, case.spacing, path), None, "array")
    save_label_volume(path, labels, reference)


def summarize(rows: list[dict]) -> list[dict]:
    """Mean ± std over test cases x targets (per seed mean first, then over seeds for the spread of prompts)."""
    out = []
    keys = sorted(
        {(r["set"], r["method"], r["setting"]) for r in rows}, key=lambda k: (k[0], k[2], METHODS.index(k[1]))
    )
    for key in keys:
        group = [r for r in rows if (r["set"], r["method"], r["setting"]) == key]
        dice = np.asarray([r["dice"] for r in group], dtype=float)
        hd = np.asarray([r["hd95_mm"] for r in group], dtype=float)
        out.append(
            {
                "set": key[0],
                "method": key[1],
                "setting": key[2],
                "n": len(group),
                "prompts": float(np.mean([r["prompted_slices"] for r in group])),
                "target_slices": float(np.mean([r["target_slices"] for r in group])),
                "dice_mean": float(np.nanmean(dice)),
                "dice_std": float(np.nanstd(dice)),
                "hd95_median": float(np.median(hd)),
                "hd95_inf": int(np.isinf(hd).sum()),
            }
        )
    return out


def markdown(summary: list[dict], info: dict) -> str:
    lines = [
        f"Run of {info['started']}: {info['wall_min']:.1f} min wall time, {info['threads']} torch threads; training "
        f"{info['steps']} steps x {info['chunk']} slices per adapter, 1 training seed; prompt seeds "
        f"{info['prompt_seeds']}.",
        "",
        "| set | setting | method | n | prompts / volume | target slices | 3D Dice (%) | HD95 (mm), median | empty |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in summary:
        lines.append(
            f"| {row['set']} | {row['setting']} | {LABELS[row['method']]} | {row['n']} | {row['prompts']:.1f} | "
            f"{row['target_slices']:.1f} | {100 * row['dice_mean']:.1f} ± {100 * row['dice_std']:.1f} | "
            f"{row['hd95_median']:.1f} | {row['hd95_inf']} |"
        )
    return "\n".join(lines) + "\n"


def write_results(args, rows: list[dict], started: str, t0: float, timings: dict) -> str:
    """Writes ``per_case.csv``, ``results.md`` and ``run.json`` (after every fold, so a cut run keeps its results)."""
    summary = summarize(rows)
    info = {
        "started": started,
        "wall_min": (time.time() - t0) / 60,
        "threads": args.threads,
        "steps": args.steps,
        "chunk": args.chunk,
        "prompt_seeds": args.prompt_seeds,
        **timings,
        "quick": args.quick,
        "brats_stride": args.brats_stride,
        "brats2021_stride": args.brats2021_stride,
    }
    with (args.out / "per_case.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    text = markdown(summary, info)
    (args.out / "results.md").write_text(text)
    (args.out / "run.json").write_text(json.dumps({"info": info, "summary": summary}, indent=1))
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", type=Path, default=DEFAULT_DATA_ROOT)
    parser.add_argument("--out", type=Path, default=Path("outputs/real_volumes"))
    parser.add_argument("--sets", nargs="+", default=["brats2015", "brats2021", "ct"])
    parser.add_argument("--steps", type=int, default=10, help="training steps per adapter")
    parser.add_argument("--chunk", type=int, default=4, help="slices per training step (one SD-Trans volume)")
    parser.add_argument("--prompt-seeds", type=int, default=1)
    parser.add_argument("--sparse", type=int, nargs="+", default=[5, 10])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--brats-stride", type=int, default=6, help="keep every n-th BraTS 2015 slice (1 mm)")
    parser.add_argument("--brats2021-stride", type=int, default=2, help="keep every n-th BraTS 2021 slice (1.5 mm)")
    parser.add_argument("--quick", action="store_true", help="smoke run: BraTS fold 1, WT, 1 step, every 12th slice")
    args = parser.parse_args(argv)
    missing = data_available(args.data_root)
    if missing:
        print(f"SKIPPED: {missing} not found (the real volumes of ../shared/data)")
        return 0
    try:
        from peft_medsa.backbones.lite_medsam import find_lite_medsam_checkpoint

        find_lite_medsam_checkpoint()
    except (FileNotFoundError, ImportError) as err:
        print(f"SKIPPED: LiteMedSAM weights not found ({err})")
        return 0
    from _volume_training import TrunkCache, cached_embeddings_class, make_model, train_adapter

    from peft_medsa.backbones import convert_lite_medsam
    from peft_medsa.inference import VolumePredictor

    torch.set_num_threads(args.threads)
    started, t0 = time.strftime("%Y-%m-%d %H:%M"), time.time()
    if args.quick:
        args.sets, args.steps, args.chunk, args.sparse = ["brats2015"], 1, 2, [5]
    folds = []
    if "brats2015" in args.sets:
        folds += brats2015_folds(
            args.data_root, stride=12 if args.quick else args.brats_stride, folds=1 if args.quick else 3
        )
    if "brats2021" in args.sets:
        folds.append(brats2021_set(args.data_root, stride=args.brats2021_stride))
    if "ct" in args.sets:
        folds.append(ct_set(args.data_root))
    if args.quick:
        folds[0].target_names = ["WT"]
    args.out.mkdir(parents=True, exist_ok=True)
    zero_shot = convert_lite_medsam().eval()
    cache = TrunkCache(zero_shot)
    rows, timings = [], {"train_s": 0.0, "eval_s": 0.0}
    setting_names = ["box", "sparse-5"] if args.quick else settings(args.sparse)
    for fold in folds:
        models = {"zero-shot": zero_shot}
        for method, sd_trans in (("medsa-2d", False), ("medsa-sdtrans", True)):
            start = time.time()
            model = make_model(sd_trans)
            losses = train_adapter(model, fold.train, cache, fold.target_names, steps=args.steps, chunk=args.chunk)
            timings["train_s"] += time.time() - start
            print(f"[{fold.name} | {fold.fold}] {method}: loss {losses[0]:.3f} -> {losses[-1]:.3f}", flush=True)
            models[method] = model
        for case in fold.test:
            start = time.time()
            features = cache.get(case.case_id, case.slices)
            kept = {}
            for method, model in models.items():
                predictor = VolumePredictor(model, chunk_size=8, overlap=2)
                predictor.set_volume(
                    case.slices,
                    affine=case.affine,
                    source=case.case_id,
                    embeddings_cls=cached_embeddings_class(model, features),
                )
                case_rows, kept[method] = evaluate_case(
                    predictor, case, fold.target_names, setting_names, args.prompt_seeds
                )
                for row in case_rows:
                    rows.append({"set": fold.name, "fold": fold.fold, "case": case.case_id, "method": method, **row})
                save_prediction(
                    args.out / f"pred_{fold.name}_{case.case_id}_{method}.nii.gz",
                    case,
                    kept[method],
                    fold.target_names,
                )
                mean = np.nanmean([r["dice"] for r in case_rows if r["setting"] == "box"])
                print(f"  {case.case_id} {method}: box Dice {100 * mean:.1f}", flush=True)
            montage(args.out / f"montage_{fold.name}_{case.case_id}.png", case, kept, fold.target_names[0])
            timings["eval_s"] += time.time() - start
        write_results(args, rows, started, t0, timings)
    print(write_results(args, rows, started, t0, timings))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
