"""Med-SA on a folder of your own images and masks: ``peft-medsa train`` under ``accelerate launch``.

    accelerate launch examples/train_folder.py --data my_scans --out my-adapter --model lite-medsam
    accelerate launch --config_file examples/accelerate_configs/cpu_ddp.yaml examples/train_folder.py \
        --data my_scans --out my-adapter --cpu

Same flags as ``peft-medsa train --help`` (the default recipe of the model, a validation hold-out, the adapter of the
best validation Dice with a model card of its validation metrics); the main process writes the adapter.
"""

from __future__ import annotations

import argparse
import sys

from peft_medsa.cli import add_train_arguments
from peft_medsa.training.command import run_train


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_train_arguments(parser)
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    message = run_train(parser.parse_args(argv))
    if message:
        print(message)
    return 0


if __name__ == "__main__":
    sys.exit(main())
