"""Med-SA on BTCV (13 abdominal organs, CT slices): one adapter for all organs, or one per organ (--per-organ).

    python examples/train_btcv.py --model facebook/sam-vit-base --data-dir /data/BTCV --output-dir runs/btcv \
        --max-steps 2000 --per-organ --organs spleen liver
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import base_parser, load_model, load_splits, train_adapter  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    from peft_medsa.data.labels import get_labels
    from peft_medsa.training import TargetSamples

    spec = get_labels("btcv")
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--per-organ", action="store_true",
                        help="train one adapter per organ into OUTPUT_DIR/<organ>/ (default: one for all organs)")
    parser.add_argument("--organs", nargs="+", default=None, choices=list(spec.targets()),
                        help="organs to train (default: all 13)")
    parser.add_argument("--window", type=float, nargs=2, default=None, metavar=("LEVEL", "WIDTH"),
                        help="CT window of the slices (default: the builder's)")
    args = parser.parse_args(argv)
    builder_kwargs = {"window": tuple(args.window)} if args.window else {}
    train_split, val_split = load_splits("btcv", args, **builder_kwargs)
    organs = args.organs or list(spec.targets())
    card = {"task": "abdominal multi-organ segmentation (BTCV, CT)", "datasets": ["btcv"],
            "training_data": "BTCV labelled CT scans as axial slices", "tags": ["ct", "abdomen"]}
    groups = [[organ] for organ in organs] if args.per_organ else [organs]
    for group in groups:
        model = load_model(args.model)  # a fresh base model per adapter
        output = Path(args.output_dir) / group[0] if args.per_organ else Path(args.output_dir)
        info = dict(card, organ=group[0]) if args.per_organ else card
        train_data = TargetSamples(train_split, spec, group)
        eval_data = TargetSamples(val_split, spec, group) if val_split is not None else None
        train_adapter(args, model, train_data, eval_data, output, info)
    if args.per_organ:
        print(f"per-organ adapters in {args.output_dir}/<organ>/final; push them with "
              f"peft_medsa.hub.push_adapters_to_hub and load them together with load_organ_adapters")


if __name__ == "__main__":
    main()
