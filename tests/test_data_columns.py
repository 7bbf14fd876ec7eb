"""`mask_rows`: a scan of a training set's masks reads only the mask column."""

from __future__ import annotations

import numpy as np
import pytest

from peft_medsa.data.columns import mask_rows

datasets = pytest.importorskip("datasets")


def _masks(n: int) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [(rng.random((8, 8)) > 0.5).astype(np.uint8) * (i % 3) for i in range(n)]


def test_dataset_rows_hold_only_the_mask_in_order():
    masks = _masks(5)
    images = [np.full((8, 8, 3), i, np.uint8) for i in range(5)]
    features = datasets.Features({"image": datasets.Image(), "mask": datasets.Array2D((8, 8), "uint8"),
                                  "case_id": datasets.Value("string")})
    data = datasets.Dataset.from_dict({"image": images, "mask": masks, "case_id": [f"c{i}" for i in range(5)]},
                                      features=features)
    rows = mask_rows(data)
    assert len(rows) == len(data)
    for i, expected in enumerate(masks):
        assert set(rows[i]) == {"mask"}  # no image decoded, no other column
        np.testing.assert_array_equal(np.asarray(rows[i]["mask"]), expected)


def test_sequence_is_returned_as_it_is():
    samples = [{"image": None, "mask": m} for m in _masks(3)]
    assert mask_rows(samples) is samples
