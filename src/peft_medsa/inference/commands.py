"""The ``peft-medsa predict`` and ``peft-medsa evaluate`` subcommands (parsed in :mod:`peft_medsa.cli`).

User mistakes raise `UserError` (or ``ValueError`` / ``FileNotFoundError`` from the readers, whose messages name the
file and what was expected); the CLI prints them on one line and exits with status 2. Inputs and prompts are checked
before the model loads, and outputs are written atomically (:func:`peft_medsa.atomic.atomic_write`), so a failed run
writes nothing.

These commands hold no inference logic: they parse arguments and call the layers of :mod:`peft_medsa.inference`
(:class:`~peft_medsa.inference.predictor.MedSAPredictor` for images, :class:`~peft_medsa.inference.volume_predictor.
VolumePredictor` for volumes, ``segment_everything``) and :func:`peft_medsa.evaluation.evaluate_model`.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from ..data.io import is_nifti_file
from ..prompts import Prompt
from .arg_checks import check_evaluate_args, check_predict_args

__all__ = ["UserError", "load_model", "parse_numbers", "run_evaluate", "run_predict"]


class UserError(ValueError):
    """A bad command-line argument or input file; the message names it and says what was expected."""


def parse_numbers(text: str, counts: tuple[int, ...], flag: str, form: str) -> list[float]:
    """``"1,2.5,3"`` -> ``[1.0, 2.5, 3.0]``, requiring one of ``counts`` values; errors name ``flag`` and ``form``."""
    try:
        values = [float(v) for v in text.replace(" ", "").split(",")]
    except ValueError as err:
        raise UserError(f"{flag} {text!r}: expected numbers {form}") from err
    if len(values) not in counts or not np.isfinite(values).all():
        raise UserError(f"{flag} {text!r}: expected {form}")
    return values


# -- model ---------------------------------------------------------------------------------------------------------
def load_model(spec: str, adapters: list[str] | None = None, device: str = "cpu", active: str | None = None):
    """Loads ``--model`` (local dir / Hub id / ``lite-medsam``) and each ``--adapter``; returns the model in eval mode.

    Adapters are named by their folder name (``default`` for the first when names clash); the first (or ``active``)
    is active.
    """
    from transformers import AutoModel

    import peft_medsa.backbones.lite_medsam as lite  # registers model_type "lite_medsam" with AutoModel

    if spec == "lite-medsam":
        try:
            model = lite.convert_lite_medsam()
        except (FileNotFoundError, OSError) as err:
            raise UserError(f"--model lite-medsam: {err}") from err
    else:
        try:
            model = AutoModel.from_pretrained(spec)
        except Exception as err:  # transformers raises OSError / ValueError / HTTP errors for bad ids and folders
            raise UserError(
                f"--model {spec}: cannot load ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}); "
                "expected a local SamModel / LiteMedSAM folder saved with save_pretrained, a reachable Hub id, or "
                "'lite-medsam'"
            ) from err
    if not hasattr(model, "get_image_embeddings") or not hasattr(model, "mask_decoder"):
        raise UserError(f"--model {spec}: a {type(model).__name__} is not SAM-like; expected a SamModel or LiteMedSAM")
    if adapters:
        model = _load_adapters(model, adapters, active)
    return model.to(device).eval()


def _load_adapters(model: Any, adapters: list[str], active: str | None):
    from peft import PeftModel

    names: list[str] = []
    for i, source in enumerate(adapters):
        name = Path(source).name or f"adapter{i}"
        name = name if name not in names else f"{name}_{i}"
        try:
            if i == 0:
                model = PeftModel.from_pretrained(model, source, adapter_name=name)
            else:
                model.load_adapter(source, adapter_name=name)
        except Exception as err:  # peft raises ValueError / OSError / KeyError for missing or mismatched adapters
            message = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise UserError(
                f"--adapter {source}: cannot load ({type(err).__name__}: {message}); expected a Med-SA adapter "
                "folder (adapter_config.json + weights) saved for this --model"
            ) from err
        names.append(name)
    chosen = active or names[0]
    if chosen not in names:
        raise UserError(f"--active-adapter {chosen!r}: not among the loaded adapters {names}")
    model.set_adapter(chosen)
    return model


# -- predict -------------------------------------------------------------------------------------------------------
def _mask_shape(args: argparse.Namespace) -> str | None:
    """``--mask-shape`` as :class:`MedSAPredictor` takes it (``"none"`` -> ``None``; absent -> ``"auto"``)."""
    shape = getattr(args, "mask_shape", "auto")
    return None if shape == "none" else shape


def _box_fit(args: argparse.Namespace) -> str | None:
    """``--box-fit`` as :class:`MedSAPredictor` takes it (``"none"`` or absent -> ``None``)."""
    fit = getattr(args, "box_fit", "none")
    return None if fit == "none" else fit


def _prompt_2d(args: argparse.Namespace) -> Prompt:
    points = [parse_numbers(p, (2, 3), "--point", "X,Y or X,Y,LABEL (LABEL 1 inside, 0 outside)") for p in args.point]
    box = parse_numbers(args.box, (4,), "--box", "X0,Y0,X1,Y1 (XYXY pixels)") if args.box else None
    if box is not None and (box[2] < box[0] or box[3] < box[1]):
        raise UserError(
            f"--box {args.box!r} has x1 < x0 or y1 < y0; expected XYXY X0,Y0,X1,Y1 with X0 <= X1, Y0 <= Y1"
        )
    if any(len(p) == 3 and p[2] not in (0, 1) for p in points):
        raise UserError(f"--point {args.point}: LABEL must be 1 (inside) or 0 (outside)")
    return (
        Prompt(points=[p[:2] for p in points], labels=[int(p[2]) if len(p) == 3 else 1 for p in points], box=box)
        if points or box
        else Prompt()
    )


def _write_mask_png(mask: np.ndarray, path: Path) -> None:
    from .overlay import save_png

    mask = np.asarray(mask)
    if mask.dtype == bool:
        save_png(mask.astype(np.uint8) * 255, path)
    else:
        save_png(mask.astype(np.uint8 if mask.max() <= 255 else np.uint16), path)


def read_prompts_file(args: argparse.Namespace) -> None:
    """``--prompts FILE.json`` (``{"points": [[x, y(, z), label], ...], "box": [...] | null}``, as ``peft-medsa app``
    exports) appended to ``--point`` / ``--box``, which then check it as if typed."""
    path = Path(args.prompts)
    try:
        record = json.loads(path.read_text())
        points, box = record.get("points") or [], record.get("box")
        args.point = list(args.point) + [",".join(str(v) for v in point) for point in points]
    except (OSError, ValueError, AttributeError, TypeError) as err:
        raise UserError(f"--prompts {path}: cannot read ({err}); expected JSON with 'points' and/or 'box'") from None
    if box is not None:
        if args.box:
            raise UserError(f"--prompts {path} has a box and --box is given too; give one box")
        args.box = ",".join(str(v) for v in box)


def run_predict(args: argparse.Namespace) -> str:
    """``peft-medsa predict``: returns a one-line summary; raises `UserError` on bad input before writing."""
    from .predictor import MedSAPredictor

    if getattr(args, "prompts", None):
        read_prompts_file(args)
    check_predict_args(args)
    image_path = Path(args.image)
    if not image_path.exists():
        raise UserError(f"--image {image_path}: no such file or folder")
    volume = image_path.is_dir() or is_nifti_file(image_path)
    out = Path(args.out)
    if volume and not is_nifti_file(out):
        raise UserError(f"--out {out}: a volume's mask is written as NIfTI; expected a .nii or .nii.gz path")
    if not volume and out.suffix.lower() != ".png":
        raise UserError(f"--out {out}: a 2D image's mask is written as PNG; expected a .png path")
    if args.overlay and Path(args.overlay).suffix.lower() != ".png":
        raise UserError(f"--overlay {args.overlay}: expected a .png path")
    if not (args.point or args.box or args.everything):
        raise UserError("no prompt: give --point (repeatable), --box or --everything")
    if args.everything and (args.point or args.box):
        raise UserError("--everything takes no --point / --box")
    if volume:
        from .volume_io import load_volume

        loaded = load_volume(image_path)  # before loading the model: bad files fail fast
        prompts, propagate = _volume_prompts(args, loaded.array.shape, image_path)
        window = parse_numbers(args.window, (2,), "--window", "LEVEL,WIDTH (e.g. 40,400)") if args.window else None
    else:
        from .predictor import check_box, check_points, load_image_array

        image = load_image_array(image_path)
        if not args.everything:  # check the prompt before loading the model
            prompt = _prompt_2d(args)
            try:
                if prompt.num_points:
                    check_points(prompt.points, prompt.labels, image.shape[:2])
            except ValueError as err:
                raise UserError(f"--point: {err}") from err
            try:
                if prompt.box is not None:
                    check_box(prompt.box, image.shape[:2])
            except ValueError as err:
                raise UserError(f"--box: {err}") from err
    model = load_model(args.model, args.adapter, args.device, args.active_adapter)
    if volume:
        return _predict_volume(args, model, loaded, prompts, propagate, window, out)
    predictor = MedSAPredictor(model, normalization=args.normalization, mask_shape=_mask_shape(args),
                               box_fit=_box_fit(args))
    predictor.set_image(image)
    if args.everything:
        from .everything import label_map, predictor_decode_fn, segment_everything

        instances = segment_everything(
            predictor_decode_fn(predictor),
            image.shape[:2],
            points_per_side=args.points_per_side,
            pred_iou_thresh=args.pred_iou_thresh,
            stability_score_thresh=args.stability_thresh,
            show_progress=not args.quiet,
        )
        mask, prompt, what = label_map(instances, image.shape[:2]), Prompt(), f"{len(instances)} instances"
    else:
        prompt = _prompt_2d(args)
        masks, scores, _ = predictor.predict(
            point_coords=prompt.points if prompt.num_points else None,
            point_labels=prompt.labels if prompt.num_points else None,
            box=prompt.box,
        )
        mask, what = masks[0], f"{int(masks[0].sum())} pixels, predicted IoU {float(scores[0]):.3f}"
    _write_mask_png(mask, out)
    if args.overlay:
        from .overlay import draw_overlay, save_png

        overlay = draw_overlay(image, mask, prompt.points if prompt.num_points else None, prompt.labels, prompt.box)
        save_png(overlay, args.overlay)
    return f"wrote {out} ({what})"


def _volume_prompts(args: argparse.Namespace, shape: tuple[int, int, int], source: Path) -> tuple[dict, bool]:
    """``--box X0,Y0,Z0,X1,Y1,Z1`` (every slice Z0..Z1) or ``--point X,Y,Z[,LABEL]`` clicks (propagated to the other
    slices) -> ``({z: Prompt}, propagate)``, checked against the volume ``(D, H, W)`` before the model loads."""
    from .volume_prompts import box3d_prompts, check_volume_prompts, clicks_to_prompts

    if args.everything:
        raise UserError("--everything works on 2D images; for a volume give --point X,Y,Z[,LABEL] or a 3D --box")
    if args.box and args.point:
        raise UserError("for a volume give either --point clicks or a 3D --box, not both")
    try:
        if args.box:
            box = parse_numbers(
                args.box, (6,), "--box", "X0,Y0,Z0,X1,Y1,Z1 for a volume (the 2D box on slices Z0..Z1)"
            )
            prompts, propagate = box3d_prompts(box, shape), False
        else:
            clicks = [parse_numbers(t, (3, 4), "--point", "X,Y,Z or X,Y,Z,LABEL for a volume") for t in args.point]
            prompts, propagate = clicks_to_prompts(clicks), True
        check_volume_prompts(prompts, shape, str(source))
    except UserError:
        raise
    except ValueError as err:
        flag = "--box" if args.box else "--point"
        raise UserError(f"{flag}: {source}: {err}" if str(source) not in str(err) else f"{flag}: {err}") from err
    return prompts, propagate


def _predict_volume(
    args: argparse.Namespace, model: Any, loaded: Any, prompts: dict, propagate: bool, window: Any, out: Path
) -> str:
    from tqdm.auto import tqdm

    from .volume_predictor import VolumePredictor

    predictor = VolumePredictor(model, normalization=args.normalization)
    predictor.set_volume(loaded, window=window)
    with tqdm(total=None if propagate else len(prompts), desc="slices", unit="slice", disable=args.quiet) as bar:
        mask = predictor.predict(prompts, propagate=propagate, progress=bar.update)
    predictor.save(out, mask.astype(np.uint8) * args.label)
    if args.overlay:
        from .overlay import draw_overlay, save_png

        z = int(np.argmax(mask.reshape(len(mask), -1).sum(1)))
        prompt = prompts.get(z, Prompt())
        overlay = draw_overlay(
            predictor.slices[z], mask[z], prompt.points if prompt.num_points else None, prompt.labels, prompt.box
        )
        save_png(overlay, args.overlay)
    return f"wrote {out} ({int(mask.sum())} voxels on {int(mask.any((1, 2)).sum())} slices)"


# -- evaluate ------------------------------------------------------------------------------------------------------
def _builder_options(pairs: list[str]) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UserError(f"--option {pair!r}: expected KEY=VALUE (VALUE as JSON, e.g. mask_threshold=127)")
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value
        if isinstance(options[key], list):
            options[key] = tuple(tuple(v) if isinstance(v, list) else v for v in options[key])
    return options


def _load_samples(args: argparse.Namespace):
    from ..data.builders import load_benchmark

    try:
        dataset = load_benchmark(
            args.dataset, args.data_dir, split=None, cache_dir=args.cache_dir, **_builder_options(args.option)
        )
    except KeyError as err:
        raise UserError(f"--dataset {args.dataset}: {err.args[0]}") from err
    except TypeError as err:
        raise UserError(f"--option: {err}") from err
    if args.split not in dataset:
        raise UserError(f"--split {args.split}: {args.dataset} at {args.data_dir} has splits {sorted(dataset)}")
    return dataset[args.split]


def _write_csv(result: Any, path: Path, summary: bool) -> None:
    from ..atomic import atomic_write

    atomic_write(path, result.write_summary_csv if summary else result.write_csv)


def run_evaluate(args: argparse.Namespace) -> str:
    """``peft-medsa evaluate``: per-case CSV at ``--out`` and the summary at ``<out stem>_summary.csv``."""
    from .predictor import MedSAPredictor, cached_predict_fn

    check_evaluate_args(args)
    out = Path(args.out)
    if out.suffix.lower() != ".csv":
        raise UserError(f"--out {out}: expected a .csv path")
    if args.repeats < 1:
        raise UserError(f"--repeats {args.repeats}: expected at least 1")
    if args.prompt != "everything":
        from ..prompts import make_prompt

        try:
            make_prompt(np.ones((4, 4), bool), args.prompt, 0)
        except ValueError as err:
            raise UserError(
                f"--prompt {args.prompt!r}: expected 1pt, 3pt (any <N>pt), bbox, bbox0.5, bbox0.75 or everything"
            ) from err
    samples = _load_samples(args)
    model = load_model(args.model, args.adapter, args.device, args.active_adapter)
    predictor = MedSAPredictor(model, normalization=args.normalization, mask_shape=_mask_shape(args),
                               box_fit=_box_fit(args))
    if args.prompt == "everything":
        from .everything import evaluate_everything, predictor_decode_fn, segment_everything

        def everything(image: np.ndarray) -> list:
            predictor.set_image(image)
            decode = predictor_decode_fn(predictor)
            return segment_everything(decode, image.shape[:2], points_per_side=args.points_per_side)

        result = evaluate_everything(everything, samples, seed=args.seed, show_progress=not args.quiet)
    else:
        from ..evaluation import evaluate_model

        result = evaluate_model(
            cached_predict_fn(predictor),
            samples,
            args.prompt,
            repeats=args.repeats,
            seed=args.seed,
            show_progress=not args.quiet,
        )
    if not result.records:
        raise UserError(f"--dataset {args.dataset}: split {args.split!r} has no case with a non-empty mask")
    out.parent.mkdir(parents=True, exist_ok=True)
    summary_path = out.with_name(out.stem + "_summary.csv")
    _write_csv(result, out, summary=False)
    _write_csv(result, summary_path, summary=True)
    return result.to_markdown() + f"wrote {out} ({len(result.records)} rows) and {summary_path}"
