"""Checks of ``peft-medsa`` arguments that need no model: run first, so that a bad value fails in a second.

Every failure is a `UserError` (exit status 2, one line) naming the flag, the value and what was expected.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from .output_paths import OutputPathError, check_output_paths

__all__ = ["check_device", "check_evaluate_args", "check_predict_args"]


def _user_error(message: str) -> Exception:
    from .commands import UserError

    return UserError(message)


def check_device(device: str) -> None:
    """Refuses a ``--device`` that torch does not know or that is not available on this machine."""
    import torch

    try:
        parsed = torch.device(device)
    except (RuntimeError, ValueError):
        raise _user_error(f"--device {device!r}: not a torch device; expected cpu, cuda, cuda:N or mps") from None
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            raise _user_error(f"--device {device}: CUDA is not available on this machine; use --device cpu")
        if parsed.index is not None and parsed.index >= torch.cuda.device_count():
            raise _user_error(f"--device {device}: only {torch.cuda.device_count()} CUDA device(s) here")
    elif parsed.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise _user_error(f"--device {device}: MPS is not available on this machine; use --device cpu")


def _check_fraction(flag: str, value: float) -> None:
    if not (math.isfinite(value) and 0.0 <= value <= 1.0):
        raise _user_error(f"{flag} {value}: expected a number in [0, 1]")


def _check_common(args: argparse.Namespace) -> None:
    check_device(args.device)
    if args.points_per_side < 1:
        raise _user_error(f"--points-per-side {args.points_per_side}: expected an integer >= 1")


def check_predict_args(args: argparse.Namespace) -> None:
    """All ``predict`` checks that need neither the model nor the image's pixels (paths, ranges, device)."""
    from .commands import parse_numbers

    try:
        check_output_paths({"--image": args.image}, {"--out": args.out, "--overlay": args.overlay})
    except OutputPathError as err:
        raise _user_error(str(err)) from None
    if not 1 <= args.label <= 255:
        raise _user_error(f"--label {args.label}: expected an integer in 1..255 (the label volume is 8-bit)")
    if args.window:
        _, width = parse_numbers(args.window, (2,), "--window", "LEVEL,WIDTH (e.g. 40,400)")
        if width <= 0:
            raise _user_error(f"--window {args.window!r}: WIDTH must be > 0; expected LEVEL,WIDTH (e.g. 40,400)")
    _check_fraction("--pred-iou-thresh", args.pred_iou_thresh)
    _check_fraction("--stability-thresh", args.stability_thresh)
    if getattr(args, "box_fit", "none") != "none":
        if not args.box:
            raise _user_error(f"--box-fit {args.box_fit}: makes the mask of a --box span it; give --box X0,Y0,X1,Y1")
        from ..data.io import is_nifti_file

        if Path(args.image).is_dir() or is_nifti_file(args.image):
            raise _user_error(f"--box-fit {args.box_fit}: applies to 2D images; {args.image} is a volume")
    _check_common(args)


def check_evaluate_args(args: argparse.Namespace) -> None:
    """All ``evaluate`` checks that need neither the model nor the data (paths, ranges, device)."""
    out = Path(args.out)
    summary = out.with_name(out.stem + "_summary.csv")
    try:
        check_output_paths({}, {"--out": out, "summary": summary})
    except OutputPathError as err:
        raise _user_error(str(err)) from None
    if getattr(args, "box_fit", "none") != "none" and args.prompt != "bbox":
        raise _user_error(f"--box-fit {args.box_fit} states that the boxes are tight; --prompt {args.prompt} gives "
                          "no tight box: use it with --prompt bbox")
    _check_common(args)
