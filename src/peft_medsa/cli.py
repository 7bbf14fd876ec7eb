"""``peft-medsa``: segment images and volumes with (adapted) SAM, and evaluate on a benchmark.

Exit status: 0 on success, 2 for a bad argument or input file (one line naming it on stderr, no traceback), 1 for
an unexpected error (one line; ``--debug`` shows the traceback, with the error that caused it).

Startup is cheap: this module imports only the standard library, input paths are checked before torch, peft and
transformers are loaded, so a command given a missing file fails within a second.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

COORDINATES = """\
coordinates (original image pixels, as segment-anything):
  a point is X,Y: X = column (0 at the left, < width), Y = row (0 at the top, < height);
  add ,LABEL with 1 = inside the object (default), 0 = outside;
  a box is X0,Y0,X1,Y1 (XYXY, top-left then bottom-right, X0 <= X1, Y0 <= Y1).
  volumes (.nii/.nii.gz or a DICOM series folder), axes (D, H, W) = (slice Z, row Y, column X) with NIfTI voxel
  (i, j, k) = (X, Y, Z): a point is X,Y,Z[,LABEL] (clicked slices are carried to their neighbours: each predicted
  mask's box prompts the next slice outwards until the mask vanishes); a box is X0,Y0,Z0,X1,Y1,Z1 (the 2D box on
  slices Z0..Z1). The label volume keeps the input's affine / header (DICOM: geometry from the series).
"""


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="local SamModel / LiteMedSAM folder, Hub id, or 'lite-medsam'")
    parser.add_argument("--adapter", action="append", default=[], help="Med-SA adapter folder or Hub id (repeatable)")
    parser.add_argument("--active-adapter", help="name (folder name) of the adapter to use; default: the first")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu, cuda, cuda:1 (default: cpu)")
    parser.add_argument(
        "--normalization",
        default="auto",
        choices=("auto", "imagenet", "minmax", "none"),
        help="pixel normalisation; auto: min-max [0, 1] for LiteMedSAM, ImageNet mean/std for ViT SAM",
    )
    parser.add_argument(
        "--mask-shape",
        default="auto",
        choices=("auto", "none", "ellipse"),
        help="auto: the adapter's recorded shape (ellipses fitted for an adapter trained on masks drawn as "
        "ellipses, e.g. optic disc / cup); none: masks as predicted; ellipse: fit ellipses (2D images)",
    )
    parser.add_argument(
        "--box-fit",
        default="none",
        choices=("none", "auto", "stretch", "ellipse"),
        help="for TIGHT boxes only (the object touches all four sides): make the mask span the box. stretch: scale "
        "the mask to the box; ellipse: its fitted ellipse; auto: ellipse for an adapter with an ellipse mask shape, "
        "else stretch; none (default): masks as predicted. 2D images; evaluate: --prompt bbox only",
    )
    parser.add_argument("--points-per-side", type=int, default=16, help="'everything': grid of N x N clicks")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``peft-medsa`` (subcommands ``predict``, ``evaluate``, ``train`` and ``app``)."""
    parser = argparse.ArgumentParser(
        prog="peft-medsa",
        description="Med-SA (Medical SAM Adapter) inference: prompted or automatic segmentation, and evaluation.",
        epilog=COORDINATES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)
    predict = commands.add_parser(
        "predict",
        help="segment one image or volume",
        epilog=COORDINATES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _common(predict)
    predict.add_argument("--image", required=True, help="png / jpg / tif / bmp / gif, .nii(.gz), or a DICOM folder")
    predict.add_argument("--point", action="append", default=[], help="X,Y[,LABEL] (volumes: X,Y,Z[,LABEL])")
    predict.add_argument("--box", help="X0,Y0,X1,Y1 (volumes: X0,Y0,Z0,X1,Y1,Z1)")
    predict.add_argument(
        "--prompts", help='JSON file {"points": [[X, Y(, Z), LABEL], ...], "box": [...]} (as the app exports)'
    )
    predict.add_argument("--everything", action="store_true", help="automatic: all objects (2D), a label map out")
    predict.add_argument(
        "--out", required=True, help="mask.png (2D: 0/255, or labels 1..N with --everything) or mask.nii.gz (volumes)"
    )
    predict.add_argument("--overlay", help="overlay.png: image, mask in colour, contour and prompt")
    predict.add_argument("--window", help="volumes: CT window LEVEL,WIDTH in HU (default: 0.5-99.5 percentiles)")
    predict.add_argument("--label", type=int, default=1, help="volumes: label value of the object (default 1)")
    predict.add_argument("--pred-iou-thresh", type=float, default=0.88, help="'everything': predicted IoU filter")
    predict.add_argument("--stability-thresh", type=float, default=0.95, help="'everything': stability filter")

    evaluate = commands.add_parser(
        "evaluate",
        help="score a benchmark split with simulated prompts (per-case CSV + summary)",
        description="The paper's protocol: prompts simulated on each ground-truth class, repeated with seeds "
        "seed..seed+repeats-1; 'everything' scores the best-Dice automatic instance per class (one repeat).",
    )
    _common(evaluate)
    evaluate.add_argument("--dataset", required=True, help="builder: btcv, refuge2, brats2021, tnmix, isic, folder")
    evaluate.add_argument("--data-dir", required=True, help="root of the dataset's official layout")
    evaluate.add_argument("--split", default="test", help="split to score (default: test)")
    evaluate.add_argument("--option", action="append", default=[], help="builder option KEY=VALUE (repeatable)")
    evaluate.add_argument("--cache-dir", help="datasets cache folder")
    evaluate.add_argument("--prompt", default="1pt", help="1pt | 3pt | bbox | bbox0.5 | bbox0.75 | everything")
    evaluate.add_argument("--repeats", type=int, default=5, help="repeats with different random prompts (paper: 5)")
    evaluate.add_argument("--seed", type=int, default=0, help="seed of the first repeat")
    evaluate.add_argument("--out", required=True, help="results.csv (summary next to it: results_summary.csv)")

    train = commands.add_parser(
        "train",
        help="train Med-SA adapters on a folder of images + masks (2D or NIfTI volumes)",
        description="Trains the default recipe for the model on DIR (images/ + masks/), holds out a validation "
        "part, and writes the adapter of the best validation Dice with a model card holding its metrics.",
    )
    train.add_argument("--debug", action="store_true", help="show full tracebacks")
    train.add_argument("--quiet", action="store_true", help="no progress bars")
    add_train_arguments(train)

    app = commands.add_parser(
        "app", help="interactive segmentation in the browser (Gradio; needs the 'app' extra)", epilog=COORDINATES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    app.add_argument("--model", required=True, help="local SamModel / LiteMedSAM folder, Hub id, or 'lite-medsam'")
    app.add_argument("--adapter", action="append", default=[], help="NAME=DIR_OR_HUB_ID of an adapter (repeatable)")
    app.add_argument("--port", type=int, default=None, help="port on 127.0.0.1 (default: a free one from 7860)")
    app.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    app.add_argument("--threads", type=int, default=None, help="torch CPU threads (1 is faster on a busy machine)")
    app.add_argument("--quiet", action="store_true", help="no progress bars")
    app.add_argument("--debug", action="store_true", help="show tracebacks")
    return parser


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of ``peft-medsa train`` (also used by ``examples/train_folder.py``)."""
    parser.add_argument("--data", required=True, help="folder with images/ + masks/ (or train/, validation/)")
    parser.add_argument("--out", required=True, help="adapter folder to write (refused if it exists, see --overwrite)")
    parser.add_argument("--model", default="lite-medsam", help="lite-medsam (default), a Hub id or a local folder")
    parser.add_argument("--steps", type=int, default=None, help="optimizer steps (default: the recipe's)")
    parser.add_argument("--target", action="append", default=None,
                        help="target (class or region name) to train on; repeatable; default: all")
    parser.add_argument("--val-fraction", type=float, default=0.2,
                        help="share of cases held out when the folder has no validation split (default 0.2)")
    parser.add_argument("--preset", choices=["optic-disc-cup"], default=None,
                        help="LiteMedSAM recipe measured better for one kind of target: optic-disc-cup (fundus optic "
                             "disc / cup; learning rate 2e-3, adapters r = 32); default: none")
    parser.add_argument("--mask-shape", choices=("auto", "none", "ellipse"), default="auto",
                        help="shape recorded in the adapter: auto (ellipse when the training masks are drawn as "
                             "ellipses, e.g. optic disc / cup), none, or ellipse (default: auto)")
    parser.add_argument("--lr", type=float, default=None, help="peak learning rate (default: the recipe's)")
    parser.add_argument("--rank", type=int, default=None, help="adapter bottleneck width r (default: the recipe's)")
    parser.add_argument("--eval-every", type=int, default=None, help="validate every N steps (default: 4 times)")
    parser.add_argument("--repeats", type=int, default=3, help="prompt repeats of the card's evaluation")
    parser.add_argument("--seed", type=int, default=0, help="seed of adapter initialisation, data order, prompts")
    parser.add_argument("--option", action="append", default=[],
                        help="folder builder option KEY=VALUE (e.g. mask_threshold=0, label_names=[...])")
    parser.add_argument("--cache-dir", help="datasets cache folder")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out and its run folder")
    parser.add_argument("--cpu", action="store_true", help="train on the CPU even where CUDA is available")


def missing_input(args: argparse.Namespace) -> str | None:
    """The error message for an input path of the command that does not exist, checked before any heavy import."""
    paths = {"predict": ("image",), "evaluate": ("data_dir",), "train": ("data",)}.get(args.command, ())
    for name in paths:
        value = getattr(args, name)
        if not Path(value).exists():
            return f"--{name.replace('_', '-')} {value}: no such file or folder"
    return None


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``peft-medsa``; returns the exit status."""
    args = build_parser().parse_args(argv)
    problem = missing_input(args)
    if problem is not None:
        print(f"peft-medsa {args.command}: error: {problem}", file=sys.stderr)
        return 2
    if args.quiet:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    from .data.io import DataLayoutError
    from .inference.commands import UserError, run_evaluate, run_predict

    try:
        if args.command == "train":
            from .training.command import run_train

            message = run_train(args)
        elif args.command == "app":
            from .app.launch import run_app

            message = run_app(args)
        else:
            message = run_predict(args) if args.command == "predict" else run_evaluate(args)
    except (UserError, DataLayoutError, FileNotFoundError, ValueError, RuntimeError) as err:
        if args.debug:
            err.__suppress_context__ = False  # `raise ... from None` hides the cause from users, not from --debug
            raise
        print(f"peft-medsa {args.command}: error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
    except Exception as err:  # unexpected: still one line unless --debug
        if args.debug:
            err.__suppress_context__ = False
            raise
        reason = " ".join(str(err).split())
        print(
            f"peft-medsa {args.command}: unexpected {type(err).__name__}: {reason} (rerun with --debug)",
            file=sys.stderr,
        )
        return 1
    print(message)
    return 0


if __name__ == "__main__":
    sys.exit(main())
