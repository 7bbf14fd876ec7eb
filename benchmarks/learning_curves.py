"""Learning curves on real data: the default Med-SA recipe against full fine-tuning, decoder-only fine-tuning and
peft LoRA, Dice against optimizer steps and against training wall-clock seconds.

Data, split, backbone and evaluation are those of ``real_data.py`` (LiteMedSAM; ISIC, DDTI, ORIGA disc and cup; 14
training / 6 validation images per set; prompts 1-point, 3-points, BBox 0.5, BBox 0.75 and the tight box, each with
prompt seeds 0-4). Methods:

- ``medsa``: the default recipe for LiteMedSAM (``peft_medsa.training.recipes.LITE_MEDSAM``: its adapters, rank,
  learning rate, schedule and training prompts), trained with ``MedSATrainer`` and its frozen-prefix cache;
- ``decoder``: the mask decoder fine-tuned (lr 1e-4), encoders frozen (their embeddings cached the same way);
- ``lora``: peft LoRA, r = 16, alpha = 16, on TinyViT's attention ``qkv`` and the decoder attentions' ``q_proj`` /
  ``v_proj`` (the first recipe a peft user would try), lr 5e-4;
- ``full``: every parameter (lr 5e-5; BatchNorm statistics frozen).

The learning rates of the three comparison methods are a-priori choices (not tuned here); all methods share the
recipe's batch size, schedule shape and training prompts. Each run has a cosine schedule over its own ``max_steps``
and is evaluated at the checkpoints on the way (``--checkpoints``); ``--max-steps-expensive`` caps the methods that
back-propagate through the whole encoder (full, LoRA), whose steps cost several times more: the wall-clock curves put
them side by side at equal training time. Training wall time excludes the evaluations.

Outputs (``--out``, default ``outputs/learning_curves``): ``curves.csv`` (one row per set, method, seed, step and
setting), ``<set>.png`` (Dice against steps and against seconds, 1-point and BBox 0.75), ``summary.md`` (the mean
curves; Med-SA against each other method present at equal training time and at equal steps; each changed recipe
(``--override``, rows labelled ``--tag``) against the recipe it changes (:func:`recipe_parent`: ``medsa``, or the
tag it extends, ``medsa-1click`` for ``medsa-1click-lr2e-3``) at their last checkpoints; the current recipe
(:data:`CURRENT_DEFAULT`) against each other method, first as trained with the same prompts (:data:`CURRENT`), at
equal time where one of its checkpoints fits and at both last checkpoints with their times; tight-box Dice against
zero-shot and the ellipse in the tight box).

Usage:
    python benchmarks/learning_curves.py                       # all four sets, seed 0
    python benchmarks/learning_curves.py --sets ddti --seeds 0 1 2 --methods medsa
    python benchmarks/learning_curves.py --sets isic --methods medsa --checkpoints 300 --override box_iou_max=1.0 \\
        --tag medsa-tightbox                                  # a changed recipe, compared with the default's rows
    python benchmarks/learning_curves.py --quick               # smoke run (ISIC, 4 train / 2 val, 2 steps)
    python benchmarks/learning_curves.py --merge a/curves.csv b.log --out outputs/learning_curves   # join runs
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _real_data_sets import DATASETS, DEFAULT_DATA_ROOT, load_split  # noqa: E402

SETTINGS = ("1pt", "3pt", "bbox0.5", "bbox0.75", "bbox")
METHODS = ("medsa", "decoder", "lora", "full")
EXPENSIVE = ("lora", "full")
LEARNING_RATES = {"decoder": 1e-4, "lora": 5e-4, "full": 5e-5}
CURRENT = "-1click-hflip"
"""Label suffix of rows trained with the current ``LITE_MEDSAM`` prompts (one start click, mirroring). The ``medsa``
rows of the merged results are the recipe before it (1-3 start clicks, no mirroring); the current one was first run
as an ``--override initial_clicks=1 hflip_probability=0.5 --tag medsa-1click-hflip``. A comparison method trained with
the current prompts (``build`` gives every method the current recipe's prompts) is labelled ``full-1click-hflip`` and
so on, so that a curve never mixes prompts: new runs are labelled so by :func:`row_label` (runs made before it wrote
``"method": "full"`` and were relabelled, as ``benchmarks/README.md`` shows)."""
CURRENT_DEFAULT = "medsa" + CURRENT
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "outputs" / "learning_curves"


def row_label(method: str, tag: str | None = None) -> str:
    """The method label of a new run's rows: ``tag`` for a changed Med-SA recipe, else ``method`` + :data:`CURRENT`.

    ``build`` trains every method with the prompts of the current ``LITE_MEDSAM`` recipe, so a new run's rows are
    labelled as such (``medsa-1click-hflip``, ``full-1click-hflip``, ...) and never merge into the curves of the plain
    labels (``medsa``, ``full``, ...), which were trained with the earlier prompts (1-3 start clicks, no mirroring).
    """
    return tag if method == "medsa" and tag else method + CURRENT


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sets", nargs="+", choices=sorted(DATASETS), default=list(DATASETS))
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0], help="training seeds (adapter init, data order)")
    parser.add_argument("--checkpoints", nargs="+", type=int, default=[25, 50, 100, 200])
    parser.add_argument("--max-steps-expensive", type=int, default=50, help="step cap of full fine-tuning and LoRA")
    parser.add_argument("--repeats", type=int, default=5, help="prompt seeds per setting")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--data-root", type=Path, default=DEFAULT_DATA_ROOT)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--override", nargs="+", default=[], metavar="KEY=VALUE",
                        help="Med-SA recipe changes (TrainingConfig fields, values as Python literals), e.g. "
                        "box_iou_max=1.0 initial_clicks=1 (the steps come from --checkpoints); "
                        "the rows are labelled with --tag")
    parser.add_argument("--adapter", nargs="+", default=[], metavar="KEY=VALUE",
                        help="Med-SA adapter changes (MedSAConfig fields, values as Python literals), e.g. r=32; "
                        "the rows are labelled with --tag")
    parser.add_argument("--tag", default=None, help="method label of the Med-SA rows of an --override run")
    parser.add_argument("--quick", action="store_true", help="smoke run: ISIC, 4 train / 2 val images, 2 steps")
    parser.add_argument("--merge", nargs="+", type=Path, default=None,
                        help="join earlier runs (their curves.csv, or the JSON lines of their logs) into --out")
    args = parser.parse_args(argv)
    args.overrides = parse_overrides(args.override)
    args.adapter_overrides = parse_overrides(args.adapter, config="adapter")
    if (args.overrides or args.adapter_overrides) and not args.tag:
        parser.error("--override and --adapter need --tag (a method label such as medsa-tightbox), so that the rows "
                     "of a changed recipe are not mistaken for the default's")
    if args.quick:
        args.sets, args.checkpoints, args.repeats, args.max_steps_expensive = ["isic"], [2], 1, 2
    return args


def parse_overrides(items: list[str], config: str = "override") -> dict:
    """``["box_iou_max=1.0", "initial_clicks=1"]`` -> ``{"box_iou_max": 1.0, "initial_clicks": 1}`` (checked against
    :class:`TrainingConfig`'s fields; with ``config="adapter"``, against :class:`MedSAConfig`'s, e.g. ``["r=32"]``)."""
    import ast
    from dataclasses import fields

    from peft_medsa import MedSAConfig
    from peft_medsa.training import TrainingConfig

    if config == "adapter":
        known, reserved, what = {f.name for f in fields(MedSAConfig)}, ("peft_type", "task_type"), "MedSAConfig"
    else:
        known, reserved, what = {f.name for f in fields(TrainingConfig)}, ("max_steps", "seed", "output_dir"), None
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or key not in known or key in reserved:
            if what:
                raise SystemExit(f"--adapter {item!r}: expected KEY=VALUE with KEY a {what} field (r, encoder_layers, "
                                 f"...)")
            raise SystemExit(f"--override {item!r}: expected KEY=VALUE with KEY a TrainingConfig field "
                             f"other than max_steps (set by --checkpoints), seed (--seeds) and output_dir")
        try:
            out[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            out[key] = value
    return out


def build(method: str, seed: int, overrides: dict | None = None, adapter: dict | None = None,
          preset: str | None = None):
    """``(model, TrainingConfig kwargs)`` of ``method``; the config follows the LiteMedSAM recipe (or its named
    ``preset``, ``LITE_MEDSAM_PRESETS``), changed for Med-SA by ``overrides`` (TrainingConfig fields) and ``adapter``
    (MedSAConfig fields)."""
    import dataclasses

    from peft import LoraConfig, get_peft_model

    from peft_medsa.backbones import convert_lite_medsam
    from peft_medsa.training.recipes import default_recipe

    base = convert_lite_medsam()
    recipe = default_recipe(base, preset=preset)
    training = dict(recipe.training)
    torch.manual_seed(seed)
    if method == "medsa":
        training.update(overrides or {})
        return get_peft_model(base, dataclasses.replace(recipe.peft_config, **(adapter or {}))), training
    training["learning_rate"] = LEARNING_RATES[method]
    if method == "lora":
        target = r".*vision_encoder\..*\.attn\.qkv|.*mask_decoder\.transformer\..*\.(q_proj|v_proj)"
        return get_peft_model(base, LoraConfig(r=16, lora_alpha=16, target_modules=target)), training
    from real_data import build_model  # a frozen identity adapter makes a PeftModel of the plain backbone

    return build_model(method, base, rank=1), training


def evaluate(model, samples: list[dict], repeats: int) -> dict[str, float]:
    """Mean Dice (%) per setting; each image embedded once. The masks as every method predicts them: no adapter's
    ``mask_shape`` (an ellipse fit on ORIGA, which any method could use) is applied, so that the methods compare on
    what they learned; ``mask_shape.py`` measures that fit."""
    from peft_medsa.evaluation import evaluate_model
    from peft_medsa.inference.predictor import MedSAPredictor

    predictor = MedSAPredictor(model, mask_shape=None)
    records: dict[str, list[float]] = {s: [] for s in SETTINGS}

    def predict(image, prompt):
        points = prompt.points if prompt.num_points else None
        labels = prompt.labels if prompt.num_points else None
        return predictor.predict(point_coords=points, point_labels=labels, box=prompt.box)[0][0]

    model.eval()
    for sample in samples:
        predictor.set_image(sample["image"])
        for setting in SETTINGS:
            result = evaluate_model(predict, [sample], setting, repeats=repeats, seed=0, show_progress=False)
            records[setting].extend(r["dice"] for r in result.records)
    return {s: 100 * float(np.mean(v)) for s, v in records.items()}


def ellipse_dice(samples: list[dict]) -> float:
    """Dice (%) of the ellipse inscribed in each tight box: the box-only baseline a model must beat."""
    from peft_medsa.metrics import compute_dice
    from peft_medsa.prompts import tight_box

    scores = []
    for sample in samples:
        mask = np.asarray(sample["mask"]) > 0
        x0, y0, x1, y1 = tight_box(mask)
        yy, xx = np.mgrid[: mask.shape[0], : mask.shape[1]]
        cx, cy, rx, ry = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0 + 1) / 2, (y1 - y0 + 1) / 2
        scores.append(compute_dice(((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1, mask))
    return 100 * float(np.mean(scores))


def run_config(training: dict, output_dir: str, steps: int, seed: int):
    """The :class:`TrainingConfig` of one benchmark run: ``training`` (a recipe's keyword arguments) over ``steps``
    steps on the CPU, quiet, its warm-up at most a quarter of the steps."""
    from peft_medsa.training import TrainingConfig

    return TrainingConfig(**{**training, "output_dir": output_dir, "max_steps": steps, "seed": seed, "cpu": True,
                             "show_progress": False, "overwrite": True,
                             "warmup_steps": min(training["warmup_steps"], steps // 4)})


def run_one(name: str, method: str, seed: int, train, val, args, rows: list[dict]) -> None:
    from peft_medsa.training import MedSATrainer

    model, training = build(method, seed, args.overrides, args.adapter_overrides)
    label = row_label(method, args.tag)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    steps = [c for c in args.checkpoints if method not in EXPENSIVE or c <= args.max_steps_expensive]
    clock = {"train": 0.0, "mark": time.perf_counter()}

    def checkpoint(trainer, step):
        clock["train"] += time.perf_counter() - clock["mark"]
        if step in steps:
            dice = evaluate(model, val, args.repeats)
            for setting, value in dice.items():
                rows.append({"set": name, "method": label, "seed": seed, "step": step, "setting": setting,
                             "dice": round(value, 2), "train_seconds": round(clock["train"], 1),
                             "trainable": trainable})
            record = {"set": name, "method": label, "seed": seed, "step": step,
                      "train_s": round(clock["train"], 1), "trainable": trainable}
            print(json.dumps({**record, **{k: round(v, 1) for k, v in dice.items()}}), flush=True)
        clock["mark"] = time.perf_counter()

    with tempfile.TemporaryDirectory(prefix="curves_") as tmp:
        config = run_config(training, tmp, max(steps), seed)
        clock["mark"] = time.perf_counter()
        MedSATrainer(model, train, config, callbacks=[checkpoint]).train()


def plot(name: str, rows: list[dict], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(10, 7), sharey="row")
    for r, setting in enumerate(("1pt", "bbox0.75")):
        for c, x_key in enumerate(("step", "train_seconds")):
            ax = axes[r, c]
            for method in (*METHODS, *(m + CURRENT for m in METHODS)):
                mine = [row for row in rows if row["set"] == name and row["method"] == method
                        and row["setting"] == setting]
                if not mine:
                    continue
                xs = sorted({row["step"] for row in mine})
                ys = [np.mean([row["dice"] for row in mine if row["step"] == x]) for x in xs]
                xv = [np.mean([row[x_key] for row in mine if row["step"] == x]) for x in xs]
                ax.plot(xv, ys, marker="o", label=method)
            zero = [row["dice"] for row in rows if row["set"] == name and row["method"] == "zero-shot"
                    and row["setting"] == setting]
            if zero:
                ax.axhline(zero[0], color="grey", linestyle=":", label="zero-shot")
            ax.set_xlabel("optimizer steps" if x_key == "step" else "training wall-clock (s)")
            ax.set_ylabel(f"validation Dice, {setting} (%)")
            ax.grid(alpha=0.3)
    axes[0, 0].legend()
    fig.suptitle(f"{name}: {DATASETS[name].target}")
    fig.tight_layout()
    fig.savefig(out / f"{name}.png", dpi=90)
    plt.close(fig)


def rows_from(path: Path) -> list[dict]:
    """Rows of an earlier run: its ``curves.csv``, or the checkpoint JSON lines its log printed."""
    if path.suffix == ".csv":
        with open(path, newline="") as handle:
            return [{**r, "seed": int(r["seed"]), "step": int(r["step"]), "dice": float(r["dice"]),
                     "train_seconds": float(r["train_seconds"]), "trainable": int(r["trainable"])}
                    for r in csv.DictReader(handle)]
    rows = []
    for line in path.read_text().splitlines():
        if not line.startswith("{"):
            continue
        record = json.loads(line)
        for setting in SETTINGS:
            rows.append({"set": record["set"], "method": record["method"], "seed": record["seed"],
                         "step": record["step"], "setting": setting, "dice": record[setting],
                         "train_seconds": record["train_s"], "trainable": record.get("trainable", -1)})
    return rows


def summary(rows: list[dict]) -> str:
    """Markdown: per set, method and step, the training seconds and the Dice of every setting (mean over seeds)."""
    lines = ["| set | method | steps | train s | " + " | ".join(SETTINGS) + " |",
             "|---|---|---:|---:|" + "---:|" * len(SETTINGS)]
    order = ["zero-shot", "ellipse-in-tight-box", *METHODS]
    keys = sorted({(r["set"], r["method"], r["step"]) for r in rows},
                  key=lambda k: (k[0], order.index(k[1]) if k[1] in order else len(order), k[1], k[2]))
    for name, method, step in keys:
        mine = [r for r in rows if (r["set"], r["method"], r["step"]) == (name, method, step)]
        dice = {s: [r["dice"] for r in mine if r["setting"] == s] for s in SETTINGS}
        cells = [f"{np.mean(v):.1f}" if v else "" for v in dice.values()]
        seconds = np.mean([r["train_seconds"] for r in mine])
        lines.append(f"| {name} | {method} | {step} | {seconds:.0f} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _cell(rows: list[dict], name: str, method: str, step: int, setting: str) -> tuple[float, float, int]:
    """Mean and std over training seeds of one (set, method, step, setting), and the number of seeds."""
    values = [r["dice"] for r in rows if (r["set"], r["method"], r["step"], r["setting"]) == (name, method, step,
                                                                                            setting)]
    return (float(np.mean(values)), float(np.std(values)), len(values)) if values else (float("nan"), 0.0, 0)


def _versus(mine: tuple[float, float, int], other: tuple[float, float, int]) -> tuple[str, bool]:
    """``("**m ± sd** vs o ± sd", won)`` of two :func:`_cell` results; won (bold) when ``mine``'s mean is at least the
    other's."""
    (m, m_sd, _), (o, o_sd, _) = mine, other
    win = m >= o
    return f"{'**' if win else ''}{m:.1f} ± {m_sd:.1f}{'**' if win else ''} vs {o:.1f} ± {o_sd:.1f}", win


def _seconds(rows: list[dict], name: str, method: str, step: int) -> float:
    return float(np.mean([r["train_seconds"] for r in rows if (r["set"], r["method"], r["step"]) ==
                          (name, method, step)]))


def verdict(rows: list[dict], versus: str = "full", at: str = "time", medsa: str = "medsa") -> str:
    """Markdown: Med-SA (the rows labelled ``medsa``) against ``versus`` at equal training time (or steps), per set and
    point / box setting.

    With ``at="time"``, ``versus`` is taken at its last checkpoint (training time T) and Med-SA at its last checkpoint
    whose mean training time is at most T (so Med-SA never has more time; a set where none fits is listed but not
    scored). With ``at="steps"``, both are taken at the largest step count they both have a checkpoint at (sets with
    none in common are left out). Per set, only the training seeds that both methods were run with count (paired: the
    Dice cells and the training times alike, so that extra seeds of one side, or their times measured in other hours,
    do not move the comparison). Mean ± std over those seeds; a cell is won when Med-SA's mean is at least the
    other's.
    """
    if at not in ("time", "steps"):
        raise ValueError(f"at must be 'time' or 'steps', got {at!r}")
    settings = ("1pt", "3pt", "bbox0.5", "bbox0.75")
    lines = [f"| set | {medsa} steps (s) | {versus} steps (s) | " + " | ".join(settings) + " |",
             "|---|---|---|" + "---|" * len(settings)]
    won = total = 0
    late: list[str] = []
    used: set[int] = set()
    for name in sorted({r["set"] for r in rows}):
        seeds = set.intersection(*({r["seed"] for r in rows if (r["set"], r["method"]) == (name, m)}
                                   for m in (medsa, versus)))
        paired = [r for r in rows if r["set"] == name and r["seed"] in seeds]
        other_steps = sorted({r["step"] for r in paired if r["method"] == versus})
        medsa_steps = sorted({r["step"] for r in paired if r["method"] == medsa})
        if not other_steps or not medsa_steps:
            continue
        if at == "steps":
            common = sorted(set(other_steps) & set(medsa_steps))
            if not common:
                continue
            step = other_step = common[-1]
            t_other = _seconds(paired, name, versus, other_step)
        else:
            other_step = other_steps[-1]
            t_other = _seconds(paired, name, versus, other_step)
            fitting = [s for s in medsa_steps if _seconds(paired, name, medsa, s) <= t_other]
            if not fitting:
                late.append(f"{name} ({medsa}'s first checkpoint, step {medsa_steps[0]}, took "
                            f"{_seconds(paired, name, medsa, medsa_steps[0]):.0f} s; {versus} {t_other:.0f} s)")
                continue
            step = fitting[-1]
        cells = []
        for setting in settings:
            text, win = _versus(_cell(paired, name, medsa, step, setting), _cell(paired, name, versus, other_step,
                                                                                setting))
            won, total = won + win, total + 1
            cells.append(text)
        used |= seeds
        lines.append(f"| {name} | {step} ({_seconds(paired, name, medsa, step):.0f}) | {other_step} "
                     f"({t_other:.0f}) | " + " | ".join(cells) + " |")
    lines.append("")
    budget = "equal or less training time" if at == "time" else "the same number of steps"
    who = "Med-SA" if medsa == "medsa" else f"Med-SA ({medsa})"
    lines.append(f"{who} at {budget} wins {won} of {total} cells against {versus} "
                 f"(paired training seeds {sorted(used)}; bold: won).")
    if late:
        lines.append(f"Not scored, no {medsa} checkpoint within the time: " + "; ".join(late) + ".")
    return "\n".join(lines) + "\n"


def compare_recipes(rows: list[dict], variant: str, base: str = "medsa") -> str:
    """Markdown: a changed recipe (``variant``, the rows of an ``--override`` run) against ``base``, each at its last
    checkpoint, per set and setting (tight box included); mean ± std over the training seeds that both have (paired:
    a seed run for one side only is left out, from the Dice cells and the training seconds alike), bold where the
    variant's mean is at least the base's."""
    lines = [f"| set | {variant} steps (s) | {base} steps (s) | " + " | ".join(SETTINGS) + " |",
             "|---|---|---|" + "---|" * len(SETTINGS)]
    won = total = 0
    used: set[int] = set()
    for name in sorted({r["set"] for r in rows}):
        last = {m: max((r["step"] for r in rows if (r["set"], r["method"]) == (name, m)), default=None)
                for m in (variant, base)}
        if None in last.values():
            continue
        seeds = set.intersection(*({r["seed"] for r in rows if (r["set"], r["method"], r["step"]) == (name, m, s)}
                                   for m, s in last.items()))
        if not seeds:
            continue
        used |= seeds
        rows_paired = [r for r in rows if r["seed"] in seeds]
        cells = []
        for setting in SETTINGS:
            text, win = _versus(_cell(rows_paired, name, variant, last[variant], setting),
                                _cell(rows_paired, name, base, last[base], setting))
            won, total = won + win, total + 1
            cells.append(text)
        seconds = {m: _seconds(rows_paired, name, m, last[m]) for m in (variant, base)}  # the paired seeds' too
        lines.append(f"| {name} | {last[variant]} ({seconds[variant]:.0f}) | {last[base]} ({seconds[base]:.0f}) | "
                     + " | ".join(cells) + " |")
    lines += ["", f"{variant} is at or above {base} in {won} of {total} cells (bold; paired training seeds "
              f"{sorted(used)})."]
    return "\n".join(lines) + "\n"


def recipe_parent(variant: str, labels: set[str]) -> str:
    """The recipe a changed recipe is compared with: the longest other label that ``variant`` extends with ``-...``
    (``medsa-1click-lr2e-3`` -> ``medsa-1click``, when both were run), else the ``medsa`` rows."""
    parents = [label for label in labels if variant.startswith(label + "-")]
    return max(parents, key=len, default="medsa")


def boxes(rows: list[dict]) -> str:
    """Markdown: tight-box Dice of Med-SA (the ``medsa`` rows and the current recipe's, :data:`CURRENT_DEFAULT`) at
    each checkpoint against zero-shot and the ellipse inside the tight box."""
    labels = [m for m in ("medsa", CURRENT_DEFAULT) if any(r["method"] == m for r in rows)]
    lines = ["| set | zero-shot | ellipse in tight box | " + " | ".join(f"{m} (steps: mean ± std over seeds)"
                                                                       for m in labels) + " |",
             "|---|---:|---:|" + "---|" * len(labels)]
    for name in sorted({r["set"] for r in rows}):
        zero = _cell(rows, name, "zero-shot", 0, "bbox")[0]
        ellipse = _cell(rows, name, "ellipse-in-tight-box", 0, "bbox")[0]
        cells = []
        for label in labels:
            steps = sorted({r["step"] for r in rows if (r["set"], r["method"]) == (name, label)})
            cells.append(", ".join("{}: {:.1f} ± {:.1f}".format(s, *_cell(rows, name, label, s, "bbox")[:2])
                                   for s in steps))
        lines.append(f"| {name} | {zero:.1f} | {ellipse:.1f} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_outputs(rows: list[dict], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "curves.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    for name in sorted({r["set"] for r in rows}):
        plot(name, rows, out)
    text = summary(rows)
    labels = {r["method"] for r in rows}
    for versus in ("full", "lora", "decoder"):
        if "medsa" in labels and versus in labels:
            text += "\n" + verdict(rows, versus) + "\n" + verdict(rows, versus, at="steps")
        for other in (versus + CURRENT, versus):  # the current recipe, against the same prompts first
            if CURRENT_DEFAULT in labels and other in labels:  # (where some set was scored)
                text += "".join("\n" + v for v in (verdict(rows, other, medsa=CURRENT_DEFAULT),
                                                    verdict(rows, other, "steps", CURRENT_DEFAULT))
                                if any(f"| {name} |" in v for name in {r["set"] for r in rows}))
        if CURRENT_DEFAULT in labels and versus + CURRENT in labels:  # both at their last checkpoints, times shown
            text += "\n" + compare_recipes(rows, CURRENT_DEFAULT, versus + CURRENT)
    for variant in sorted(label for label in labels - {"zero-shot", "ellipse-in-tight-box", *METHODS}
                          if label.startswith("medsa-")):
        base = recipe_parent(variant, labels)
        if base in labels:
            text += "\n" + compare_recipes(rows, variant, base)
    text += "\n" + boxes(rows)
    (out / "summary.md").write_text(text)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.merge:
        rows = [row for path in args.merge for row in rows_from(path)]
        write_outputs(rows, args.out)
        print((args.out / "summary.md").read_text())
        return 0
    if not args.data_root.is_dir():
        print(f"SKIPPED: real data folder {args.data_root} is absent")
        return 0
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    args.out.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    start = time.perf_counter()
    for name in args.sets:
        limit = (4, 2) if args.quick else (None, None)
        train, val = load_split(DATASETS[name], args.data_root, *limit)
        from peft_medsa.backbones import convert_lite_medsam

        zero = evaluate(convert_lite_medsam(), val, args.repeats)
        rows.extend({"set": name, "method": "zero-shot", "seed": 0, "step": 0, "setting": s, "dice": round(v, 2),
                     "train_seconds": 0.0, "trainable": 0} for s, v in zero.items())
        rows.append({"set": name, "method": "ellipse-in-tight-box", "seed": 0, "step": 0, "setting": "bbox",
                     "dice": round(ellipse_dice(val), 2), "train_seconds": 0.0, "trainable": 0})
        for method in args.methods:
            for seed in args.seeds:
                run_one(name, method, seed, train, val, args, rows)
    write_outputs(rows, args.out)
    print(summary(rows))
    print(f"wrote {args.out / 'curves.csv'} and {len(args.sets)} plots in {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
