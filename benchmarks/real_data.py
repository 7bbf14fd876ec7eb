"""Real-data benchmark of the real pretrained backbone: LiteMedSAM zero-shot, Med-SA adapters, decoder-only and full
fine-tuning on four small real 2D sets, evaluated with the Med-SA paper's prompt protocol.

Data (``../shared/data`` from the repository root, read in place; ``_real_data_sets.py``): ISIC 2016 skin lesions
(``isic``), DDTI thyroid nodules (``ddti``), ORIGA optic disc (``origa_disc``) and optic cup (``origa_cup``, the same
20 fundus images), 20 image / mask pairs each. Fixed split: pairs sorted by image file name, every 3rd (positions 2,
5, 8, ..., 0-based) to validation: 14 training, 6 validation cases per set. Images are kept at their original size;
the predictor maps them to LiteMedSAM's 256 px input, so Dice, IoU and HD95 (pixels) are in ORIGINAL image pixels.

Methods (one LiteMedSAM checkpoint, ``peft_medsa.backbones.convert_lite_medsam``, 9.79M parameters):

- ``zero-shot``: LiteMedSAM as released.
- ``medsa``: Med-SA adapters, ``MedSAConfig`` defaults (encoder attn + MLP adapters, decoder adapters, HyP-Adpt) but
  ``r=16`` (``--rank``): the default ``r=64`` gives 2.33M trainable parameters, 24% of this 9.8M backbone (the
  HyP-Adpt weight generators grow with r^2); r=16 gives 0.21M (2.1%), the paper's share (13M of 636M).
- ``decoder``: the mask decoder trained, the image and prompt encoders frozen (4.06M parameters).
- ``full``: every parameter trained (9.79M); TinyViT's BatchNorm stays in eval mode (running statistics frozen).

All three train with the library loop (``peft_medsa.training.MedSATrainer``) on the same training cases, the same
number of steps, batch size 2 and seed 0, hence the same batches and start prompts. peft refuses a PeftModel without
any adapter, so ``decoder`` and ``full`` carry one frozen, zero-initialised (hence identity: its up-projection is 0)
Med-SA adapter on the first TinyViT attention block; ``decoder`` trains ``modules_to_save=["mask_decoder"]``,
``full`` sets ``requires_grad`` on all base parameters. Training prompts cover the evaluation settings: half the
micro-batches start from a box of IoU 0.6 with the tight box (between BBox 0.5 and BBox 0.75), the other half from 1
to 3 random positive clicks; then 0 to 2 corrective clicks in the largest error region of the current prediction.
Learning rates (AdamW, cosine schedule, no warm-up; a-priori choices, not tuned on these sets): Med-SA 1e-3 (zero-
initialised adapters must move within 20 steps), decoder 1e-4, full 5e-5 (all 9.8M weights move). The final weights
are evaluated (no model selection on the validation cases).

Evaluation: prompt settings 1-point, 3-points, BBox 0.5, BBox 0.75, each repeated with seeds 0-4
(``peft_medsa.evaluation.evaluate_model``; mean and std over repeats). Each validation image is embedded once per
model (``MedSAPredictor.set_image``); the 4 settings x 5 repeats reuse that embedding and cost decoder calls only.

Output (``--out``, default ``outputs/real_data``, git-ignored): ``results.md`` (Dice overview and all metrics),
``summary.csv``, per-case CSVs ``<dataset>/<method>/<setting>.csv``, training logs
``<dataset>/<method>/train_metrics.csv`` and ``run.json`` (options, timings, trainable parameters).

Budget: the full run is sized for 20 minutes on an idle 2-core CPU: 20 steps per trained method, estimated at about
16 minutes from the per-piece costs of ``COST_SECONDS`` (training about 75% of it). The estimate is printed at the
start; measured per-piece costs and the full-run projection at this machine's speed are printed at the end.

Usage:
    python benchmarks/real_data.py                  # full: 4 sets x (zero-shot + 3 trained methods), 5 seeds
    python benchmarks/real_data.py --quick          # smoke run: ISIC, 4 train / 2 val images, 2 steps, 1 seed
    python benchmarks/real_data.py --datasets isic ddti --steps 10 --out outputs/real_data_small
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from peft import get_peft_model
from tqdm.auto import tqdm

from peft_medsa import MedSAConfig
from peft_medsa.backbones import convert_lite_medsam, find_lite_medsam_checkpoint
from peft_medsa.evaluation import EvaluationResult, evaluate_model
from peft_medsa.inference.predictor import MedSAPredictor
from peft_medsa.prompts import Prompt
from peft_medsa.training import MedSATrainer, TrainingConfig

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the _real_data_* helpers next to this script

from _real_data_report import METHOD_LABELS, MethodResult, overview_table, write_outputs  # noqa: E402
from _real_data_sets import DATASETS, DEFAULT_DATA_ROOT, load_split  # noqa: E402

SETTINGS = ("1pt", "3pt", "bbox0.5", "bbox0.75")
TRAINED_METHODS = ("medsa", "decoder", "full")
METHODS = ("zero-shot", *TRAINED_METHODS)
DEFAULT_STEPS = 20
DEFAULT_RANK = 16
DEFAULT_LEARNING_RATES = {"medsa": 1e-3, "decoder": 1e-4, "full": 5e-5}
BATCH_SIZE = 2
TRAIN_PROMPTS = {"initial_clicks": 3, "max_corrective_clicks": 2, "box_probability": 0.5, "box_iou": 0.6}
"""Training prompts: 1-3 start clicks or (half the micro-batches) a box of IoU 0.6, then 0-2 corrective clicks."""
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "outputs" / "real_data"
QUICK = {"dataset": "isic", "max_train": 4, "max_validation": 2, "steps": 2, "repeats": 1}

COST_SECONDS = {
    "load": 3.0,
    "train_run": 1.5,
    "step_medsa": 2.9,
    "step_decoder": 1.6,
    "step_full": 4.2,
    "embed": 0.65,
    "prompt": 0.08,
}
"""Wall seconds of each piece on a quiet 2-core CPU, measured in ``--quick --steps 4`` runs: ``train_run`` per
training run (set-up, saving), ``step_<method>`` per optimizer step (batch 2, corrective clicks included; Med-SA r=16
and r=64 cost the same), ``embed`` per validation image and model, ``prompt`` per decoded prompt with its metrics."""


def clock() -> np.ndarray:
    """``[wall seconds, CPU seconds / torch threads]``. The second discounts the time this process waited for a core
    on a shared machine, but still grows under contention (shared caches, spinning OpenMP threads)."""
    return np.array([time.perf_counter(), time.process_time() / torch.get_num_threads()])


@dataclass
class Timings:
    """Measured ``[wall, CPU / threads]`` seconds of the pieces, for the projection of the full run."""

    steps: dict[str, list[np.ndarray]] = field(default_factory=dict)
    """method -> durations of the optimizer steps after the first of each run."""
    runs: dict[str, list[tuple[int, np.ndarray]]] = field(default_factory=dict)
    """method -> [(steps, duration)] of each whole training run (set-up, first step and saving included)."""
    embeds: list[np.ndarray] = field(default_factory=list)
    """Duration of each image embedding (``set_image``) of the evaluations."""
    decodes: list[tuple[int, np.ndarray]] = field(default_factory=list)
    """[(prompts, duration)] per evaluated image: decoder calls, upsampling and metrics."""

    def step_seconds(self, method: str) -> np.ndarray:
        """Mean duration of a steady optimizer step of ``method`` (whole runs / steps when none was measured)."""
        if self.steps.get(method):
            return np.mean(self.steps[method], axis=0)
        runs = self.runs.get(method, [])
        return sum(d for _, d in runs) / max(sum(s for s, _ in runs), 1) if runs else np.full(2, math.nan)

    def run_seconds(self, method: str, steps: int) -> np.ndarray:
        """Projected duration of a training run of ``steps`` steps: measured run overhead + steps x step time."""
        runs = self.runs.get(method, [])
        if not runs:
            return np.full(2, math.nan)
        per_step = self.step_seconds(method)
        overhead = np.mean([d - s * per_step for s, d in runs], axis=0)
        return np.maximum(overhead, 0.0) + steps * per_step

    def eval_seconds(self, images: int, prompts: int) -> np.ndarray:
        """Projected duration of an evaluation of ``images`` images and ``prompts`` prompts in all."""
        if not self.embeds or not self.decodes:
            return np.full(2, math.nan)
        per_prompt = sum(d for _, d in self.decodes) / max(sum(n for n, _ in self.decodes), 1)
        return images * np.mean(self.embeds, axis=0) + prompts * per_prompt


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: one set (isic), 4 train / 2 val images, "
                        "2 steps, 1 repeat (explicit --datasets / --steps / --repeats still win)")
    parser.add_argument("--datasets", nargs="+", choices=sorted(DATASETS), help="sets to run (default: all four)")
    parser.add_argument("--steps", type=int, help=f"optimizer steps per trained method (default {DEFAULT_STEPS})")
    parser.add_argument("--repeats", type=int, help="prompt repeats (seeds) per setting (default 5)")
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS), help="methods to run")
    parser.add_argument("--rank", type=int, default=DEFAULT_RANK, help="Med-SA adapter width r (default 16)")
    for method in TRAINED_METHODS:
        parser.add_argument(f"--lr-{method}", type=float, default=DEFAULT_LEARNING_RATES[method],
                            help=f"learning rate of {METHOD_LABELS[method]} (default %(default)g)")
    parser.add_argument("--data-root", type=Path, default=DEFAULT_DATA_ROOT, help="folder of the real data sets")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder (default outputs/real_data)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="device (default cpu)")
    args = parser.parse_args(argv)
    args.datasets = args.datasets or ([QUICK["dataset"]] if args.quick else list(DATASETS))
    args.steps = args.steps or (QUICK["steps"] if args.quick else DEFAULT_STEPS)
    args.repeats = args.repeats or (QUICK["repeats"] if args.quick else 5)
    args.max_train = QUICK["max_train"] if args.quick else None
    args.max_validation = QUICK["max_validation"] if args.quick else None
    if args.steps < 1 or args.repeats < 1 or args.rank < 1:
        parser.error("--steps, --repeats and --rank must be positive")
    return args


# -- models -----------------------------------------------------------------------------------------------------------
def _identity_adapter_model(base: torch.nn.Module, modules_to_save: list[str] | None) -> torch.nn.Module:
    """A PeftModel whose only adapter is one frozen, zero-initialised (identity) Med-SA adapter (peft needs one)."""
    config = MedSAConfig(r=1, encoder_layers=[0], encoder_positions=["attn"], decoder_adapters=False,
                         modules_to_save=modules_to_save)
    model = get_peft_model(copy.deepcopy(base), config)
    prefix = model.base_model.prefix
    for name, param in model.named_parameters():
        if prefix in name:
            if name.endswith("up.weight") and param.abs().max() > 0:
                raise RuntimeError(f"{name} is not zero: the placeholder adapter would change the model")
            param.requires_grad_(False)
    return model


def build_model(method: str, base: torch.nn.Module, rank: int) -> torch.nn.Module:
    """The model of ``method`` on a copy of ``base`` (``zero-shot``: ``base`` itself)."""
    if method == "zero-shot":
        return base
    if method == "medsa":
        return get_peft_model(copy.deepcopy(base), MedSAConfig(r=rank))
    if method == "decoder":
        return _identity_adapter_model(base, ["mask_decoder"])
    if method == "full":
        model = _identity_adapter_model(base, None)
        prefix = model.base_model.prefix
        for name, param in model.named_parameters():
            param.requires_grad_(prefix not in name)
        return model
    raise ValueError(f"unknown method {method!r}; expected one of {METHODS}")


def trainable_count(model: torch.nn.Module, method: str) -> int:
    """Parameters the training updates (0 for zero-shot)."""
    if method == "zero-shot":
        return 0
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


# -- training ---------------------------------------------------------------------------------------------------------
def training_config(method: str, args: argparse.Namespace, output_dir: Path) -> TrainingConfig:
    """The :class:`TrainingConfig` of ``method``: shared by all methods except the learning rate."""
    return TrainingConfig(
        output_dir=str(output_dir), max_steps=args.steps, batch_size=BATCH_SIZE,
        learning_rate=getattr(args, f"lr_{method}"), lr_scheduler="cosine", normalization="minmax",
        mixed_precision="no", seed=0, cpu=args.device == "cpu", **TRAIN_PROMPTS,
    )


def train_model(model: torch.nn.Module, method: str, samples: list[dict], args: argparse.Namespace,
                log_dir: Path, timings: Timings) -> float:
    """Trains ``model`` in place with the library loop; returns the wall time (s). The loss log goes to ``log_dir``;
    the run and its steps are timed into ``timings``."""
    marks: list[np.ndarray] = []
    with tempfile.TemporaryDirectory(prefix="real_data_") as tmp:
        config = training_config(method, args, Path(tmp) / "run")
        start = clock()
        MedSATrainer(model, samples, config, callbacks=[lambda trainer, step: marks.append(clock())]).train()
        duration = clock() - start
        log_dir.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(Path(config.output_dir) / "metrics.csv", log_dir / "train_metrics.csv")
    timings.runs.setdefault(method, []).append((args.steps, duration))
    timings.steps.setdefault(method, []).extend(b - a for a, b in zip(marks, marks[1:]))
    return float(duration[0])


# -- evaluation -------------------------------------------------------------------------------------------------------
def evaluate_cached(model: torch.nn.Module, samples: list[dict], repeats: int, device: str, desc: str,
                    timings: Timings) -> dict[str, EvaluationResult]:
    """Every prompt setting on ``samples``, each image embedded once (:class:`MedSAPredictor`), prompts decoded;
    embeddings and decoding are timed into ``timings``.

    Returns:
        Setting -> :class:`EvaluationResult` with the records that ``evaluate_model(..., repeats, seed=0)`` gives on
        all samples at once (prompt generators are seeded per case, not by sample order).
    """
    predictor = MedSAPredictor(model, device=device, mask_shape=None)  # as predicted, whatever the adapter records

    def predict(image: np.ndarray, prompt: Prompt) -> np.ndarray:  # the image is the one set below
        points = prompt.points if prompt.num_points else None
        labels = prompt.labels if prompt.num_points else None
        masks, _, _ = predictor.predict(point_coords=points, point_labels=labels, box=prompt.box)
        return masks[0]

    results = {s: EvaluationResult(setting=s, seeds=list(range(repeats))) for s in SETTINGS}
    for sample in tqdm(samples, desc=desc, leave=False):
        start = clock()
        predictor.set_image(sample["image"])
        embedded = clock()
        for setting in SETTINGS:
            one = evaluate_model(predict, [sample], setting, repeats=repeats, seed=0, show_progress=False)
            results[setting].records.extend(one.records)
        timings.embeds.append(embedded - start)
        timings.decodes.append((len(SETTINGS) * repeats, clock() - embedded))
    return results


# -- the run ----------------------------------------------------------------------------------------------------------
def estimate_seconds(n_train_steps: int, datasets: Sequence[str], methods: Sequence[str], n_validation: int,
                     repeats: int, costs: dict[str, float] = COST_SECONDS) -> float:
    """A-priori wall time of a run on an idle 2-core CPU from the per-piece ``costs``."""
    per_model_eval = n_validation * (costs["embed"] + len(SETTINGS) * repeats * costs["prompt"])
    per_dataset = len(methods) * per_model_eval + sum(
        costs["train_run"] + n_train_steps * costs[f"step_{m}"] for m in methods if m in TRAINED_METHODS
    )
    return costs["load"] + len(datasets) * per_dataset


def project_full_run(timings: Timings, steps: int = DEFAULT_STEPS, n_datasets: int = 4, n_validation: int = 6,
                     repeats: int = 5) -> np.ndarray:
    """``[wall, CPU / threads]`` seconds of the full run at the speed measured here (NaN if a piece is missing)."""
    prompts = n_validation * len(SETTINGS) * repeats
    per_dataset = len(METHODS) * timings.eval_seconds(n_validation, prompts)
    per_dataset = per_dataset + sum(timings.run_seconds(m, steps) for m in TRAINED_METHODS)
    return n_datasets * per_dataset


def run_dataset(name: str, base: torch.nn.Module, args: argparse.Namespace, timings: Timings,
                bar: tqdm) -> list[MethodResult]:
    """Zero-shot and trained methods on one dataset."""
    train, validation = load_split(DATASETS[name], args.data_root, args.max_train, args.max_validation)
    tqdm.write(f"[{name}] {DATASETS[name].target}: {len(train)} training, {len(validation)} validation cases")
    results, backbone_params = [], sum(p.numel() for p in base.parameters())
    for method in args.methods:
        bar.set_postfix_str(f"{name} / {method}")
        model = build_model(method, base, args.rank)
        result = MethodResult(name, method, trainable_count(model, method), backbone_params)
        if method in TRAINED_METHODS:
            tqdm.write(f"[{name}] training {METHOD_LABELS[method]} ({result.trainable_params:,} parameters), "
                       f"{args.steps} steps")
            result.train_seconds = train_model(model, method, train, args, args.out / name / method, timings)
            result.train_steps = args.steps
        start = clock()
        result.evaluations = evaluate_cached(model, validation, args.repeats, args.device, f"evaluate {name}/{method}",
                                             timings)
        tqdm.write(f"[{name}] {METHOD_LABELS[method]}: {result.trainable_params:,} trainable, trained "
                   f"{result.train_seconds:.0f} s, evaluated {(clock() - start)[0]:.0f} s")
        results.append(result)
        bar.update(1)
        del model
    return results


def check_inputs(args: argparse.Namespace) -> str | None:
    """Why the benchmark cannot run (data or weights absent), or ``None``."""
    if not args.data_root.is_dir():
        return f"real data folder {args.data_root} is absent (it ships with the project's CI, not with a clone)"
    missing = [n for n in args.datasets if not (args.data_root / DATASETS[n].folder).is_dir()]
    if missing:
        return f"data sets {missing} are absent from {args.data_root}"
    try:
        find_lite_medsam_checkpoint()
    except FileNotFoundError as error:
        return str(error)
    return None


def header(args: argparse.Namespace, elapsed: float) -> str:
    """The description above the tables of ``results.md``."""
    lrs = ", ".join(f"{m} {getattr(args, f'lr_{m}'):g}" for m in TRAINED_METHODS)
    return (
        "# Real-data benchmark: LiteMedSAM zero-shot vs Med-SA vs decoder-only vs full fine-tuning\n\n"
        f"Validation cases (every 3rd of the sorted pairs), prompts repeated {args.repeats}x (mean ± std over "
        f"repeats). Training: {args.steps} steps, batch {BATCH_SIZE}, learning rates {lrs}, Med-SA r={args.rank}, "
        f"prompts {TRAIN_PROMPTS}. Device {args.device}, torch threads {torch.get_num_threads()}, "
        f"{platform.processor() or platform.machine()}; total wall time {elapsed / 60:.1f} min."
        + (" QUICK SMOKE RUN: numbers are meaningless." if args.quick else "")
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    reason = check_inputs(args)
    if reason is not None:
        print(f"SKIPPED real-data benchmark: {reason}")
        return 0
    torch.set_flush_denormal(True)
    n_validation = args.max_validation or 6
    estimate = estimate_seconds(args.steps, args.datasets, args.methods, n_validation, args.repeats)
    print(f"Real-data benchmark: sets {args.datasets}, methods {args.methods}, {args.steps} steps, {args.repeats} "
          f"repeats x {len(SETTINGS)} settings. Estimated wall time on an idle 2-core CPU: {estimate / 60:.1f} min")
    start = time.perf_counter()
    base = convert_lite_medsam().to(args.device).eval()
    timings, results = Timings(), []
    with tqdm(total=len(args.datasets) * len(args.methods), desc="benchmark") as bar:
        for name in args.datasets:
            results.extend(run_dataset(name, base, args, timings, bar))
    elapsed = time.perf_counter() - start
    path = write_outputs(results, SETTINGS, args.out, header(args, elapsed))
    (args.out / "run.json").write_text(json.dumps(run_record(args, timings, results, elapsed, estimate), indent=2))
    print("\n" + overview_table(results, SETTINGS))
    print(f"Wrote {path} (all metrics), summary.csv and per-case CSVs under {args.out}")
    print(timing_report(timings, elapsed, estimate))
    return 0


def run_record(args: argparse.Namespace, timings: Timings, results: list[MethodResult], elapsed: float,
               estimate: float) -> dict:
    """Options, timings and trainable parameters of the run, for ``run.json``."""
    return {
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "elapsed_seconds": elapsed,
        "estimate_seconds": estimate,
        "step_seconds_wall_and_cpu_per_thread": {m: timings.step_seconds(m).tolist() for m in timings.runs},
        "embed_seconds_wall_and_cpu_per_thread": np.mean(timings.embeds, axis=0).tolist() if timings.embeds else None,
        "eval_seconds_6_images_wall_and_cpu_per_thread": timings.eval_seconds(6, 6 * len(SETTINGS) * 5).tolist(),
        "trainable_params": {f"{r.dataset}/{r.method}": r.trainable_params for r in results},
        "train_seconds": {f"{r.dataset}/{r.method}": r.train_seconds for r in results},
    }


def timing_report(timings: Timings, elapsed: float, estimate: float) -> str:
    """Measured per-piece costs and the projection of the full run, as wall time here and CPU time / threads."""
    lines = [f"Measured total {elapsed / 60:.1f} min (a-priori estimate {estimate / 60:.1f} min)."]
    for method in timings.runs:
        wall, cpu = timings.step_seconds(method)
        lines.append(f"  {method}: {wall:.2f} s per training step here ({cpu:.2f} s CPU / thread)")
    if timings.embeds:
        wall, cpu = timings.eval_seconds(6, 6 * len(SETTINGS) * 5)
        lines.append(f"  evaluation of 6 images x {len(SETTINGS)} settings x 5 repeats: {wall:.1f} s ({cpu:.1f} s)")
    wall, cpu = project_full_run(timings)
    if np.isfinite(wall):
        lines.append(f"Projected full run ({DEFAULT_STEPS} steps, 4 sets, 5 repeats): {wall / 60:.1f} min at this "
                     f"run's speed ({cpu / 60:.1f} min from CPU time / threads). On a busy shared machine both "
                     "overstate an idle one: compare with the a-priori estimate, measured on a quiet machine.")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
