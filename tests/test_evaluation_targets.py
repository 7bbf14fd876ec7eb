"""The evaluation protocol scores the targets that each benchmark's label spec defines, as training does.

Each benchmark's builder is run on real files arranged in the release's layout; the oracle ``predict_fn`` returns the
union of every foreground label (it cannot tell targets apart), so the Dice of each target measures exactly which
label ids the protocol put into that target.
"""

from __future__ import annotations

import numpy as np
import pytest

from peft_medsa.data import load_benchmark
from peft_medsa.data.labels import BRATS2021, BTCV, REFUGE2, spec_for_label_names
from peft_medsa.evaluation import evaluate_model
from peft_medsa.training import TargetSamples

from data_layouts import brats_layout, btcv_synapse_layout, isic_layout, refuge2_layout, requires_data, tnmix_layout

pytestmark = [requires_data, pytest.mark.real_data]


def _scores(dataset, rows: int = 3) -> tuple[dict[tuple[int, str], float], list[dict]]:
    """``{(row, target): Dice}`` of the "everything foreground" oracle on the first ``rows`` non-empty rows."""
    samples = [dataset[i] for i in range(len(dataset)) if np.asarray(dataset[i]["mask"]).any()][:rows]
    assert samples, "the real layout gave no sample with a non-empty mask"

    def oracle(image, prompt):
        return oracle.mask > 0

    scores = {}
    for row, sample in enumerate(samples):  # slices of one volume share their case id: key by row
        oracle.mask = np.asarray(sample["mask"])
        result = evaluate_model(oracle, [sample], "bbox", repeats=1, show_progress=False)
        scores.update({(row, r["class"]): r["dice"] for r in result.records})
    return scores, samples


def _union_dice(mask: np.ndarray, ids: tuple[int, ...]) -> float:
    target, pred = np.isin(mask, ids), mask > 0
    return 2 * (target & pred).sum() / (target.sum() + pred.sum())


def _check_against_spec(dataset, spec, rows: int = 3) -> set[str]:
    scores, samples = _scores(dataset, rows)
    for row, sample in enumerate(samples):
        assert spec_for_label_names(sample["label_names"]) == spec
        mask = np.asarray(sample["mask"])
        for name, ids in spec.targets().items():
            if np.isin(mask, ids).any():
                assert scores[(row, name)] == pytest.approx(_union_dice(mask, ids))
    return {name for _, name in scores}


def test_refuge2_scores_optic_disc_and_cup(tmp_path):
    dataset = load_benchmark("refuge2", refuge2_layout(tmp_path / "refuge2"), split="train", cache_dir=tmp_path / "c")
    names = _check_against_spec(dataset, REFUGE2)
    assert names == {"optic disc", "optic cup"}  # the paper's targets, not "optic disc rim"
    scores, _ = _scores(dataset)
    assert all(d == 1.0 for (_, name), d in scores.items() if name == "optic disc")  # disc = rim + cup


def test_brats_scores_wt_tc_et(tmp_path):
    dataset = load_benchmark("brats2021", brats_layout(tmp_path / "brats"), split="train", cache_dir=tmp_path / "c")
    names = _check_against_spec(dataset, BRATS2021, rows=6)
    assert names <= {"WT", "TC", "ET"} and "WT" in names
    scores, _ = _scores(dataset, rows=6)
    assert all(d == 1.0 for (_, name), d in scores.items() if name == "WT")  # whole tumour = 1 + 2 + 4


def test_btcv_scores_each_organ(tmp_path):
    root = btcv_synapse_layout(tmp_path / "btcv")
    dataset = load_benchmark("btcv", root, split="train", cache_dir=tmp_path / "c", keep_empty_slices=False)
    names = _check_against_spec(dataset, BTCV, rows=4)
    assert names and names <= set(BTCV.targets())


@pytest.mark.parametrize("benchmark", ["isic", "tnmix"])
def test_binary_sets_score_their_one_target(tmp_path, benchmark):
    root = isic_layout(tmp_path / "isic", "2016", 2) if benchmark == "isic" else tnmix_layout(tmp_path / "tnmix", 2)
    options = {"year": "2016"} if benchmark == "isic" else {}
    dataset = load_benchmark(benchmark, root, split="train", cache_dir=tmp_path / "c", **options)
    scores, samples = _scores(dataset, rows=2)
    expected = {"isic": "skin lesion", "tnmix": "thyroid nodule"}[benchmark]
    assert {name for _, name in scores} == {expected} and all(d == 1.0 for d in scores.values())


def test_training_and_evaluation_use_the_same_targets(tmp_path):
    dataset = load_benchmark("refuge2", refuge2_layout(tmp_path / "refuge2"), split="train", cache_dir=tmp_path / "c")
    trained = {s["target"] for s in TargetSamples(dataset, REFUGE2)}
    scores, _ = _scores(dataset)
    assert trained == {name for _, name in scores} == set(REFUGE2.targets())


def test_unknown_names_give_one_target_per_class():
    spec = spec_for_label_names(["background", "tumour", "", "cyst"])
    assert spec.targets() == {"tumour": (1,), "cyst": (3,)}
    assert spec_for_label_names({0: "background", 1: "optic disc rim", 2: "optic cup"}) == REFUGE2
