"""Med-SA on REFUGE2 (fundus): optic disc and optic cup.

    python examples/train_refuge2.py --model facebook/sam-vit-base --data-dir /data/refuge2 --output-dir runs/refuge2 \
        --max-steps 1000
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import main_single  # noqa: E402

CARD = {
    "task": "optic disc and cup segmentation (REFUGE2, fundus)",
    "datasets": ["refuge2"],
    "training_data": "fundus photographs",
}

if __name__ == "__main__":
    main_single("refuge2", __doc__.splitlines()[0], CARD)
