"""Label ids, names and derived regions of `peft_medsa.data.labels`."""

from __future__ import annotations

import numpy as np
import pytest

from peft_medsa.data.io import read_mask, read_nifti
from peft_medsa.data.labels import (
    BRATS2021,
    BTCV,
    ISIC,
    REFUGE2,
    REFUGE_MASK_VALUES,
    LabelSpec,
    get_labels,
    region_masks,
    spec_from_names,
)

from data_layouts import SHARED_DATA, requires_data


def test_btcv_thirteen_organs():
    assert BTCV.foreground_ids == tuple(range(1, 14))
    names = BTCV.names_by_id()
    assert names[1] == "spleen" and names[2] == "right kidney" and names[3] == "left kidney"
    assert names[5] == "esophagus" and names[9] == "inferior vena cava" and names[10] == "portal and splenic veins"
    assert names[12] == "right adrenal gland" and names[13] == "left adrenal gland"
    assert BTCV.targets()["liver"] == (6,)


def test_brats_ids_with_a_gap_and_regions():
    assert BRATS2021.ids == (0, 1, 2, 4)
    assert BRATS2021.names_by_id()[3] == ""
    assert BRATS2021.targets() == {"WT": (1, 2, 4), "TC": (1, 4), "ET": (4,)}


def test_refuge_convention():
    assert REFUGE_MASK_VALUES == {255: 0, 128: 1, 0: 2}
    assert REFUGE2.targets() == {"optic disc": (1, 2), "optic cup": (2,)}
    assert ISIC.targets() == {"skin lesion": (1,)}


def test_lookup_and_validation():
    assert get_labels("BTCV") is BTCV
    with pytest.raises(KeyError, match="isic2019"):
        get_labels("isic2019")
    with pytest.raises(ValueError, match="regions use ids"):
        LabelSpec("x", {0: "background", 1: "a"}, regions={"b": (2,)})
    spec = spec_from_names("own", ["bg", "kidney", "", "tumour"])
    assert spec.classes == {0: "background", 1: "kidney", 3: "tumour"}


@requires_data
@pytest.mark.real_data
def test_region_masks_on_real_labels():
    (seg_path,) = (SHARED_DATA / "brats2020_slices" / "000003").glob("*_seg_*")
    seg = read_nifti(seg_path).array[0].astype(np.uint8)
    regions = region_masks(seg, BRATS2021)
    assert regions["WT"].sum() == (seg > 0).sum()
    assert regions["ET"].sum() == (seg == 4).sum() > 0
    assert (regions["ET"] <= regions["TC"]).all() and (regions["TC"] <= regions["WT"]).all()
    origa = read_mask(SHARED_DATA / "origa_fundus" / "masks" / "621.png")
    fundus = region_masks(origa, REFUGE2)
    assert fundus["optic disc"].sum() == (origa >= 1).sum() and fundus["optic cup"].sum() == (origa == 2).sum()
