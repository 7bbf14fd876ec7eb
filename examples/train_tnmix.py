"""Med-SA on TNMIX (thyroid ultrasound: TN-SCUI + DDTI): thyroid nodules.

    python examples/train_tnmix.py --model facebook/sam-vit-base --data-dir /data/tnmix --output-dir runs/tnmix \
        --max-steps 1000
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import main_single  # noqa: E402

CARD = {
    "task": "thyroid nodule segmentation (TNMIX, ultrasound)",
    "datasets": ["tnmix"],
    "training_data": "thyroid ultrasound images",
}

if __name__ == "__main__":
    SUBSETS = {"--subsets": dict(nargs="+", default=None, help="TNMIX parts to use, e.g. tnscui ddti (default: all)")}
    main_single("tnmix", __doc__.splitlines()[0], CARD, builder_flags=SUBSETS)
