"""The volume predictor: one prompt format, per-slice decoding through the image predictor, SD-Trans context in
chunks, propagation to unprompted slices, prompts checked against the volume."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from peft_medsa.inference.predictor import MedSAPredictor
from peft_medsa.inference.slice_embeddings import SliceEmbeddings, chunk_starts, uses_num_slices
from peft_medsa.inference.volume_predictor import VolumePredictor, nearest_prompted
from peft_medsa.inference.volume_prompts import (
    box3d_prompts,
    check_volume_prompts,
    clicks_to_prompts,
    every_kth,
    prompts_from_mask,
)
from peft_medsa.prompts import Prompt

from conftest import tiny_sam


def ball_volume(depth=15, size=40, radius=6, centre=(7, 20, 22)):
    zz, yy, xx = np.mgrid[:depth, :size, :size]
    ball = (zz - centre[0]) ** 2 + (yy - centre[1]) ** 2 + (xx - centre[2]) ** 2 <= radius**2
    return ball, np.where(ball, 200, 30).astype(np.uint8)


class ThresholdVolumePredictor(VolumePredictor):
    """Stub decoder: the bright (> 127) connected region under the click, or the bright regions reaching into the box
    (cropped to the box grown by 4 pixels, as a box bounds SAM's mask); records the decoded slices."""

    def predict_slice(self, z, prompt, mask_input=None):
        self.decoded = getattr(self, "decoded", []) + [z]
        bright = self.slices[z] > 127
        regions, _ = ndimage.label(bright)
        mask = np.zeros_like(bright)
        if prompt.num_points:
            x, y = prompt.points[0].astype(int)
            mask = (regions == regions[y, x]) & bright
        if prompt.box is not None:
            x0, y0, x1, y1 = prompt.box.astype(int)
            hit = np.unique(regions[y0 : y1 + 1, x0 : x1 + 1])
            near = np.zeros_like(bright)
            near[max(y0 - 4, 0) : y1 + 5, max(x0 - 4, 0) : x1 + 5] = True
            mask = np.isin(regions, hit[hit > 0]) & near
        return np.where(mask, 1.0, -1.0), np.zeros((4, 4))


def test_click_on_one_slice_propagates_until_the_mask_vanishes():
    ball, volume = ball_volume()
    predictor = ThresholdVolumePredictor(tiny_sam())
    predictor.set_volume(volume)
    result = predictor.predict({7: Prompt([[22, 20]], [1])}, propagate=True)
    np.testing.assert_array_equal(result, ball)
    assert len(predictor.decoded) == ball.any((1, 2)).sum() + 2  # each ball slice plus the two empty ones that stop it
    without = predictor.predict({7: Prompt([[22, 20]], [1])})
    assert without.sum() == ball[7].sum() and without[7].all() == ball[7].all()


def test_sparse_prompts_fill_each_gap_from_both_sides_once():
    ball, volume = ball_volume()
    prompts = every_kth(prompts_from_mask(ball, "bbox", 0), 5)  # ball slices 1..13 -> prompted 1, 6, 11
    assert sorted(prompts) == [1, 6, 11]
    np.testing.assert_array_equal(
        nearest_prompted([1, 6, 11], 15), [1, 1, 1, 1, 6, 6, 6, 6, 6, 11, 11, 11, 11, 11, 11]
    )
    predictor = ThresholdVolumePredictor(tiny_sam())
    predictor.set_volume(volume)
    np.testing.assert_array_equal(predictor.predict(prompts, propagate=True), ball)
    assert sorted(predictor.decoded) == list(range(0, 15))  # every slice once: no slice decoded twice


def test_volume_predictor_equals_the_image_predictor_on_each_slice():
    _, volume = ball_volume(depth=4, size=48, centre=(1, 20, 22))
    model = tiny_sam()
    prompts = {1: Prompt([[22, 20]], [1]), 2: Prompt(box=[10, 10, 30, 30])}
    predictor = VolumePredictor(model, chunk_size=3, overlap=1)
    predictor.set_volume(volume)
    result = predictor.predict(prompts)
    image_predictor = MedSAPredictor(model)
    for z, prompt in prompts.items():
        image_predictor.set_image(volume[z])
        expected = image_predictor.predict(
            point_coords=prompt.points if prompt.num_points else None,
            point_labels=prompt.labels if prompt.num_points else None,
            box=prompt.box,
        )[0][0]
        np.testing.assert_array_equal(result[z], expected)
    assert not result[[0, 3]].any()
    assert predictor.embeddings.starts == [0, 1, 2, 3] or not predictor.embeddings.sd_trans


def test_sd_trans_slices_are_embedded_together_as_in_a_full_forward():
    from peft import get_peft_model

    from peft_medsa import SDTransConfig

    torch.manual_seed(0)
    model = get_peft_model(tiny_sam(), SDTransConfig(r=4, init_weights=False)).eval()
    assert uses_num_slices(model)
    volume = np.random.default_rng(0).integers(0, 256, (4, 64, 64), dtype=np.uint8)  # slices that differ
    predictor = VolumePredictor(model, chunk_size=4, overlap=1)
    predictor.set_volume(volume)
    box = np.array([20.0, 20.0, 40.0, 40.0])
    logits = predictor.predict_logits({z: Prompt(box=box) for z in range(4)})
    pixels = predictor.embeddings.pixels(0, 4)
    boxes = torch.tensor(box, dtype=torch.float32).expand(4, 1, 4)
    with torch.no_grad():
        full = model(pixel_values=pixels, input_boxes=boxes, num_slices=4, multimask_output=False).pred_masks[:, 0, 0]
        alone = model.get_image_embeddings(pixels)  # each slice on its own
    image_predictor = predictor.image_predictor
    for z in range(4):
        image_predictor.set_image_embedding(predictor.embeddings(z), (64, 64))
        expected = image_predictor.postprocess(full[z]).numpy()
        np.testing.assert_allclose(logits[z], expected, atol=1e-3 * float(np.abs(expected).max()))
        difference = float((predictor.embeddings(z) - alone[z]).abs().max())
        assert difference > 1e-3 * float(alone[z].abs().max())  # the depth context changes the embedding


def test_overlapping_chunks_average_their_embeddings():
    assert chunk_starts(10, 4, 1) == [0, 3, 6]
    assert chunk_starts(10, 4, 2) == [0, 2, 4, 6]
    _, volume = ball_volume(depth=5, size=32, centre=(2, 16, 16))

    class Counting(SliceEmbeddings):
        def encode(self, start, stop):
            return torch.arange(start, stop, dtype=torch.float32).reshape(-1, 1, 1, 1) + 100 * start

    embeddings = Counting(tiny_sam(), volume, chunk_size=3, overlap=1)
    embeddings.sd_trans = True
    embeddings.starts = chunk_starts(5, 3, 1)  # [0, 2]: slice 2 lies in both chunks
    assert float(embeddings(1)) == 1.0
    assert float(embeddings(2)) == pytest.approx((2.0 + 202.0) / 2)


def test_prompts_outside_the_volume_name_the_file():
    shape = (5, 40, 60)
    with pytest.raises(ValueError, match=r"ct.nii.gz: prompts on slice\(s\) \[7\], but the volume has slices 0..4"):
        check_volume_prompts({7: Prompt(box=[1, 1, 5, 5])}, shape, "ct.nii.gz")
    with pytest.raises(ValueError, match=r"ct.nii.gz: click\(s\) \[\[70.0, 3.0\]\] on slice 2 outside the slice"):
        check_volume_prompts(clicks_to_prompts([(70, 3, 2)]), shape, "ct.nii.gz")
    with pytest.raises(ValueError, match=r"ct.nii.gz: box \[1.0, 1.0, 5.0, 45.0\] on slice 0 outside the slice"):
        check_volume_prompts({0: Prompt(box=[1, 1, 5, 45])}, shape, "ct.nii.gz")
    with pytest.raises(ValueError, match="slice z=1.5 is not an integer"):
        clicks_to_prompts([(3, 3, 1.5)])
    predictor = VolumePredictor(tiny_sam())
    predictor.set_volume(np.zeros(shape, np.uint8), source="ct.nii.gz")
    with pytest.raises(ValueError, match=r"ct.nii.gz: prompts on slice\(s\) \[5\]"):
        predictor.predict({5: Prompt(box=[1, 1, 5, 5])})


def test_box3d_prompts_cover_slices_and_check_bounds():
    ball, volume = ball_volume()
    prompts = box3d_prompts([14, 12, 3, 30, 28, 11], volume.shape)
    assert sorted(prompts) == list(range(3, 12))
    np.testing.assert_array_equal(prompts[5].box, [14, 12, 30, 28])
    predictor = ThresholdVolumePredictor(tiny_sam())
    predictor.set_volume(volume)
    expected = ball.copy()
    expected[:3] = expected[12:] = False  # the ball spans slices 1-13; the box only 3-11
    np.testing.assert_array_equal(predictor.predict(prompts), expected)
    with pytest.raises(ValueError, match="max below its min"):
        box3d_prompts([14, 12, 3, 10, 28, 11], volume.shape)
    with pytest.raises(ValueError, match=r"outside the volume.*0 <= z <= 14"):
        box3d_prompts([14, 12, 3, 30, 28, 15], volume.shape)


def test_labels_and_save_keep_the_affine(tmp_path):
    nib = pytest.importorskip("nibabel")
    ball, volume = ball_volume()
    affine = np.diag([0.8, 0.8, 2.5, 1.0])
    predictor = ThresholdVolumePredictor(tiny_sam())
    predictor.set_volume(volume, affine=affine)
    labels = predictor.predict_labels([{7: Prompt([[22, 20]], [1])}, {2: Prompt(box=[0, 0, 5, 5])}], propagate=True)
    np.testing.assert_array_equal(labels == 1, ball)
    written = nib.load(str(predictor.save(tmp_path / "labels.nii.gz", labels)))
    np.testing.assert_allclose(written.affine, affine)
    np.testing.assert_array_equal(np.asarray(written.dataobj).transpose(2, 1, 0), labels)
    predictor.set_volume(volume)
    with pytest.raises(ValueError, match="without affine"):
        predictor.save(tmp_path / "other.nii.gz", labels)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["labels.nii.gz"]
