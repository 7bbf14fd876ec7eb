"""Real-volume benchmark: does SD-Trans beat 2D Med-SA on 3D Dice with the same prompts, most of all sparse ones?

Data (``_real_volume_sets.py``, read in place from ``../shared/data``; prints ``SKIPPED`` and exits 0 when the data or
the LiteMedSAM weights are absent): three BraTS 2015 cases (FLAIR + T1c; whole tumour WT and tumour core TC; leave one
case out, three folds), BraTS 2021 case 01646 (FLAIR; edema; lower half of its slices train, upper half test) and one
TotalSegmentator CT (spleen, kidneys, liver; slices 0-13 train, 16-29 test).

Methods, all on LiteMedSAM (``_volume_training.py``): ``zero-shot``; ``medsa-2d``: Med-SA adapters (r = 16) in the last
TinyViT stage and the decoder, slices segmented one by one; ``medsa-sdtrans``: the same adapters plus SD-Trans on that
stage, slices embedded together in chunks of 8 with an overlap of 2 (`VolumePredictor`). One adapter per set holds all
its targets (for BraTS one adapter for WT and TC); ``medsa-sdtrans-per-target`` (sets with several targets, i.e.
BraTS 2015): one SD-Trans adapter per target, each trained with as many steps as the joint one. The trained methods of
one training seed see the same chunks and prompts; ``--train-seeds N`` repeats training with seeds 0..N-1 (adapter
initialisation and data order; zero-shot does not depend on it and is evaluated once).

Prompt settings per test volume and target (``peft_medsa.inference.volume_prompts``), prompts per volume reported:
``box``: BBox 0.75 on every slice holding the target; ``click``: one positive click per such slice; ``sparse-k``
(k = 5, 10): the BBox 0.75 of every k-th such slice only, the others filled by propagation (previous mask's box,
`VolumePredictor.predict(propagate=True)`; for SD-Trans the embeddings also carry the depth context). Each setting is
repeated with ``--prompt-seeds`` seeds. Metrics: 3D Dice and HD95 in mm (thinned volume's spacing) on the whole kept
volume, false positives on slices without the target included.

Outputs (``--out``, default ``outputs/real_volumes``): ``results.md`` (the table pools training seeds, prompt seeds,
cases and targets; a second table gives SD-Trans minus 2D and per-target minus joint per training seed),
``per_case.csv``, ``run.json``, montage PNGs ``montage_<set>_<case>.png`` (rows: ground truth, then each method with
the box setting; columns: slices; training seed 0) and predicted NIfTI ``pred_<set>_<case>_<method>.nii.gz`` (labels
1.. per target, with the thinned volume's affine; training seed 0).

Usage:
    python benchmarks/real_volumes.py                 # full run: 1 training seed, 5 prompt seeds
    python benchmarks/real_volumes.py --train-seeds 3 # the claim's run: 3 training seeds
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

METHODS = ("zero-shot", "medsa-2d", "medsa-sdtrans", "medsa-sdtrans-per-target")
LABELS = {
    "zero-shot": "LiteMedSAM zero-shot",
    "medsa-2d": "Med-SA 2D",
    "medsa-sdtrans": "Med-SA + SD-Trans",
    "medsa-sdtrans-per-target": "Med-SA + SD-Trans, one adapter per target",
}
# (name, minuend, subtrahend) of the paired differences reported per training seed
DIFFERENCES = (
    ("SD-Trans - 2D", "medsa-sdtrans", "medsa-2d"),
    ("per target - joint", "medsa-sdtrans-per-target", "medsa-sdtrans"),
)


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
    """Per (set, method, setting): mean ± std of 3D Dice over all rows (training seeds x prompt seeds x test cases x
    targets), the median HD95 and the number of empty predictions (HD95 infinite)."""
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


def paired_differences(rows: list[dict]) -> list[dict]:
    """Per (set, setting) and each of `DIFFERENCES`: the mean Dice difference over the rows both methods share (same
    training seed, prompt seed, case and target, hence the same prompts), first per training seed, then the mean, the
    smallest and the largest over training seeds and how many seeds favour the minuend."""
    index = {
        (r["set"], r["setting"], r["method"], r["train_seed"], r["seed"], r["case"], r["target"]): r for r in rows
    }
    out = []
    for name, plus, minus in DIFFERENCES:
        for set_name, setting in sorted({(r["set"], r["setting"]) for r in rows if r["method"] == plus}):
            per_seed: dict[int, list[float]] = {}
            for key, row in index.items():
                if key[:3] != (set_name, setting, plus):
                    continue
                other = index.get((set_name, setting, minus, *key[3:]))
                if other is not None:
                    per_seed.setdefault(key[3], []).append(row["dice"] - other["dice"])
            if not per_seed:
                continue
            means = np.asarray([np.nanmean(v) for _, v in sorted(per_seed.items())])
            out.append(
                {
                    "difference": name,
                    "set": set_name,
                    "setting": setting,
                    "train_seeds": len(means),
                    "pairs_per_seed": len(next(iter(per_seed.values()))),
                    "mean": float(means.mean()),
                    "min": float(means.min()),
                    "max": float(means.max()),
                    "seeds_positive": int((means > 0).sum()),
                    "per_seed": [float(m) for m in means],
                }
            )
    return out


def markdown(summary: list[dict], differences: list[dict], info: dict) -> str:
    lines = [
        f"Run of {info['started']}: {info['wall_min']:.1f} min wall time, {info['threads']} torch threads; training "
        f"{info['steps']} steps x {info['chunk']} slices per adapter, {info['train_seeds']} training seed(s); prompt "
        f"seeds {info['prompt_seeds']}.",
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
    lines += [
        "",
        "Paired differences, 3D Dice points (same prompts); mean over training seeds [smallest, largest seed mean], "
        "seeds > 0:",
        "",
        "| difference | set | setting | pairs per seed | mean | seed range | seeds > 0 |",
        "|---|---|---|---:|---:|---|---:|",
    ]
    for row in differences:
        lines.append(
            f"| {row['difference']} | {row['set']} | {row['setting']} | {row['pairs_per_seed']} | "
            f"{100 * row['mean']:+.1f} | [{100 * row['min']:+.1f}, {100 * row['max']:+.1f}] | "
            f"{row['seeds_positive']} / {row['train_seeds']} |"
        )
    return "\n".join(lines) + "\n"


def write_results(args, rows: list[dict], started: str, t0: float, timings: dict) -> str:
    """Writes ``per_case.csv``, ``results.md`` and ``run.json`` (after every fold, so a cut run keeps its results)."""
    summary, differences = summarize(rows), paired_differences(rows)
    info = {
        "started": started,
        "wall_min": (time.time() - t0) / 60,
        "threads": args.threads,
        "steps": args.steps,
        "chunk": args.chunk,
        "train_seeds": args.train_seeds,
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
    text = markdown(summary, differences, info)
    (args.out / "results.md").write_text(text)
    (args.out / "run.json").write_text(
        json.dumps({"info": info, "summary": summary, "differences": differences}, indent=1)
    )
    return text


def train_methods(fold, cache, args, seed: int, per_target: bool) -> dict[str, dict[str, torch.nn.Module]]:
    """The trained methods of one fold and training seed: method -> target -> model (a joint adapter serves every
    target)."""
    from _volume_training import make_model, train_adapter

    methods = {}
    jobs = [("medsa-2d", False, fold.target_names), ("medsa-sdtrans", True, fold.target_names)]
    if per_target:
        jobs += [("medsa-sdtrans-per-target", True, [t]) for t in fold.target_names]
    for method, sd_trans, targets in jobs:
        torch.manual_seed(seed)  # the adapters' initialisation
        model = make_model(sd_trans)
        losses = train_adapter(model, fold.train, cache, targets, steps=args.steps, chunk=args.chunk, seed=seed)
        label = method if len(targets) == len(fold.target_names) else f"{method} ({targets[0]})"
        half = max(len(losses) // 2, 1)  # single steps differ by target and prompt kind: compare halves
        print(
            f"[{fold.name} | {fold.fold} | seed {seed}] {label}: mean loss, first {half} steps "
            f"{np.mean(losses[:half]):.3f}, last {half} steps {np.mean(losses[-half:]):.3f}",
            flush=True,
        )
        for target in targets:
            methods.setdefault(method, {})[target] = model
    return methods


def evaluate_method(case, features, per_target_models: dict[str, torch.nn.Module], setting_names, prompt_seeds):
    """Rows and box-setting masks of one method on one test case; each target with its model (one predictor per
    distinct model, so a joint adapter embeds the volume once)."""
    from _volume_training import cached_embeddings_class

    from peft_medsa.inference import VolumePredictor

    rows, kept = [], {}
    models = {id(m): m for m in per_target_models.values()}
    for key, model in models.items():
        targets = [t for t, m in per_target_models.items() if id(m) == key]
        predictor = VolumePredictor(model, chunk_size=8, overlap=2)
        predictor.set_volume(
            case.slices,
            affine=case.affine,
            source=case.case_id,
            embeddings_cls=cached_embeddings_class(model, features),
        )
        model_rows, model_kept = evaluate_case(predictor, case, targets, setting_names, prompt_seeds)
        rows += model_rows
        kept.update(model_kept)
    return rows, kept


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", type=Path, default=DEFAULT_DATA_ROOT)
    parser.add_argument("--out", type=Path, default=Path("outputs/real_volumes"))
    parser.add_argument("--sets", nargs="+", default=["brats2015", "brats2021", "ct"])
    parser.add_argument("--steps", type=int, default=10, help="training steps per adapter")
    parser.add_argument("--chunk", type=int, default=4, help="slices per training step (one SD-Trans volume)")
    parser.add_argument("--train-seeds", type=int, default=1, help="training seeds 0..N-1 (init and data order)")
    parser.add_argument("--prompt-seeds", type=int, default=5, help="prompt seeds 0..N-1 (box jitter, clicks)")
    parser.add_argument("--sparse", type=int, nargs="+", default=[5, 10])
    parser.add_argument("--no-per-target", action="store_true", help="skip one-adapter-per-target (BraTS 2015)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--brats-stride", type=int, default=6, help="keep every n-th BraTS 2015 slice (1 mm)")
    parser.add_argument("--brats2021-stride", type=int, default=2, help="keep every n-th BraTS 2021 slice (1.5 mm)")
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: BraTS fold 1, 1 step, every 12th slice, 1 prompt seed"
    )
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
    from _volume_training import TrunkCache

    from peft_medsa.backbones import convert_lite_medsam

    torch.set_num_threads(args.threads)
    started, t0 = time.strftime("%Y-%m-%d %H:%M"), time.time()
    if args.quick:
        args.sets, args.steps, args.chunk, args.sparse, args.prompt_seeds = ["brats2015"], 1, 2, [5], 1
    folds = []
    if "brats2015" in args.sets:
        folds += brats2015_folds(
            args.data_root, stride=12 if args.quick else args.brats_stride, folds=1 if args.quick else 3
        )
    if "brats2021" in args.sets:
        folds.append(brats2021_set(args.data_root, stride=args.brats2021_stride))
    if "ct" in args.sets:
        folds.append(ct_set(args.data_root))
    args.out.mkdir(parents=True, exist_ok=True)
    zero_shot = convert_lite_medsam().eval()
    cache = TrunkCache(zero_shot)
    rows, timings = [], {"train_s": 0.0, "eval_s": 0.0, "per_train_seed_s": []}
    setting_names = ["box", "sparse-5"] if args.quick else settings(args.sparse)
    for seed in range(args.train_seeds):
        seed_start = time.time()
        for fold in folds:
            start = time.time()
            per_target = not args.no_per_target and fold.name == "brats2015"
            methods = train_methods(fold, cache, args, seed, per_target)
            if seed == 0:
                methods = {"zero-shot": dict.fromkeys(fold.target_names, zero_shot), **methods}
            timings["train_s"] += time.time() - start
            for case in fold.test:
                start = time.time()
                features = cache.get(case.case_id, case.slices)
                kept = {}
                for method, models in methods.items():
                    case_rows, kept[method] = evaluate_method(case, features, models, setting_names, args.prompt_seeds)
                    for row in case_rows:
                        rows.append(
                            {
                                "set": fold.name,
                                "fold": fold.fold,
                                "case": case.case_id,
                                "method": method,
                                "train_seed": seed if method != "zero-shot" else "",
                                **row,
                            }
                        )
                    if seed == 0:
                        save_prediction(
                            args.out / f"pred_{fold.name}_{case.case_id}_{method}.nii.gz",
                            case,
                            kept[method],
                            fold.target_names,
                        )
                    mean = np.nanmean([r["dice"] for r in case_rows if r["setting"] == "box"])
                    print(f"  {case.case_id} {method}: box Dice {100 * mean:.1f}", flush=True)
                if seed == 0:
                    montage(args.out / f"montage_{fold.name}_{case.case_id}.png", case, kept, fold.target_names[0])
                timings["eval_s"] += time.time() - start
            write_results(args, rows, started, t0, timings)
        timings["per_train_seed_s"].append(time.time() - seed_start)
    print(write_results(args, rows, started, t0, timings))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
