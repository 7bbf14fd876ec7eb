"""Med-SA on ISIC (dermoscopy, 2016-2018 Task 1): skin lesions.

    python examples/train_isic.py --model facebook/sam-vit-base --data-dir /data/isic --output-dir runs/isic \
        --max-steps 1000
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import main_single  # noqa: E402

CARD = {
    "task": "skin lesion segmentation (ISIC, dermoscopy)",
    "datasets": ["isic"],
    "training_data": "dermoscopy images",
}

if __name__ == "__main__":
    YEAR = {"--year": dict(type=int, choices=[2016, 2017, 2018], default=None, help="ISIC release (default 2018)")}
    main_single("isic", __doc__.splitlines()[0], CARD, builder_flags=YEAR)
