"""Med-SA on BraTS 2021 (MRI slices): whole tumour, tumour core, enhancing tumour.

    python examples/train_brats.py --model facebook/sam-vit-base --data-dir /data/brats2021 --output-dir runs/brats \
        --max-steps 1000
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import main_single  # noqa: E402

CARD = {
    "task": "glioma segmentation (BraTS 2021, MRI)",
    "datasets": ["brats2021"],
    "training_data": "multi-modal brain MRI as axial slices",
}

if __name__ == "__main__":
    main_single("brats2021", __doc__.splitlines()[0], CARD)
