"""Box prior: the ellipse inscribed in a box prompt as SAM's mask prompt, in training and in the predictor."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from peft import get_peft_model

from peft_medsa import MedSAConfig
from peft_medsa.box_prior import ellipse_prior_logits
from peft_medsa.inference import MedSAPredictor
from peft_medsa.training import MedSATrainer, TrainingConfig

from conftest import tiny_sam

pytestmark = pytest.mark.usefixtures("fresh_accelerate")


def reference_prior(box, s: int, size: int, logit: float = 8.0) -> np.ndarray:
    """The same prior computed cell by cell: the model-input pixel at each low-resolution cell's centre, inside
    the ellipse whose semi-axes reach the box's outer pixel edges."""
    x0, y0, x1, y1 = box
    out = np.empty((s, s), dtype=np.float32)
    for i in range(s):
        for j in range(s):
            x, y = (j + 0.5) * size / s - 0.5, (i + 0.5) * size / s - 0.5
            u = (x - (x0 + x1) / 2) / ((x1 - x0 + 1) / 2)
            v = (y - (y0 + y1) / 2) / ((y1 - y0 + 1) / 2)
            out[i, j] = logit if u * u + v * v <= 1 else -logit
    return out


def test_the_prior_is_the_inscribed_ellipse_on_the_low_resolution_grid():
    boxes = torch.tensor([[[4.0, 10.0, 40.0, 30.0]], [[0.0, 0.0, 63.0, 63.0]], [[20.0, 20.0, 20.0, 20.0]]])
    logits = ellipse_prior_logits(boxes, 16, 64)  # (B, 1, 4) as collate_prompts gives them
    assert logits.shape == (3, 1, 16, 16) and logits.dtype == torch.float32
    for box, prior in zip(boxes[:, 0].tolist(), logits[:, 0].numpy()):
        np.testing.assert_array_equal(prior, reference_prior(box, 16, 64))
    whole = logits[1, 0] > 0  # the whole-image box: centre in, corners out
    assert whole[8, 8] and not whole[0, 0] and not whole[15, 15]
    assert (logits[2, 0] < 0).all()  # a 1-pixel box contains no cell centre of a 4-pixel cell
    np.testing.assert_array_equal(ellipse_prior_logits(np.array([[4, 10, 40, 30]]), 16, 64)[0, 0], logits[0, 0])


def _model(box_prior):
    torch.manual_seed(0)
    return get_peft_model(tiny_sam(), MedSAConfig(r=4, init_weights=False, box_prior=box_prior))


def test_the_predictor_gives_the_prior_with_boxes_of_an_adapter_that_records_it():
    image = np.random.default_rng(0).integers(0, 255, (48, 56, 3), dtype=np.uint8)
    box = [10, 8, 40, 30]
    model = _model("ellipse")
    auto = MedSAPredictor(model)
    auto.set_image(image)
    assert auto.box_prior == "ellipse"
    plain = MedSAPredictor(model, box_prior=None)
    plain.set_image(image)
    with_prior, _, _ = auto.predict(box=box, return_logits=True)
    without, _, _ = plain.predict(box=box, return_logits=True)
    assert not np.allclose(with_prior, without)  # the mask prompt reaches the decoder
    corners = plain._to_input(np.asarray(box, dtype=np.float64).reshape(2, 2)).reshape(1, 4)
    prior = ellipse_prior_logits(corners, 4 * plain.image_embeddings.shape[-1], plain.input_size)[0, 0].numpy()
    by_hand, _, _ = plain.predict(box=box, return_logits=True, mask_input=prior)
    np.testing.assert_allclose(with_prior, by_hand, atol=1e-5)  # the same as giving the prior by hand
    points, _, _ = auto.predict(point_coords=[[20, 20]], point_labels=[1], return_logits=True)
    points_plain, _, _ = plain.predict(point_coords=[[20, 20]], point_labels=[1], return_logits=True)
    np.testing.assert_allclose(points, points_plain, atol=1e-6)  # clicks alone: no prior
    _, _, low = plain.predict(box=box)
    given, _, _ = auto.predict(box=box, mask_input=low[0], return_logits=True)
    again, _, _ = plain.predict(box=box, mask_input=low[0], return_logits=True)
    np.testing.assert_allclose(given, again, atol=1e-6)  # an explicit mask_input wins over the prior
    assert MedSAPredictor(_model(None)).box_prior is None
    with pytest.raises(ValueError, match=r"box_prior='square'; expected None or one of \('ellipse',\)"):
        MedSAPredictor(model, box_prior="square")


def test_training_gives_the_prior_with_every_box_and_records_it(tmp_path):
    rng = np.random.default_rng(0)
    samples = []
    for i in range(4):
        mask = np.zeros((48, 56), dtype=np.uint8)
        mask[10 + i : 30, 12 : 36 + i] = 1
        image = rng.integers(0, 120, (48, 56, 3), dtype=np.uint8)
        image[mask > 0] += 120
        samples.append({"image": image, "mask": mask, "case_id": f"c{i}"})

    def run(name, **options):
        model = get_peft_model(tiny_sam(), MedSAConfig(r=4, encoder_layers=[1]))
        calls = []

        def spy(module, args, kwargs):
            boxes, masks = kwargs.get("input_boxes"), kwargs.get("input_masks")
            calls.append((None if boxes is None else boxes.clone(), None if masks is None else masks.clone()))

        model.get_base_model().prompt_encoder.register_forward_pre_hook(spy, with_kwargs=True)
        config = TrainingConfig(output_dir=str(tmp_path / name), max_steps=1, batch_size=2, show_progress=False,
                                box_probability=1.0, max_corrective_clicks=1, **options)
        trainer = MedSATrainer(model, samples, config)
        trainer.train()
        stored = json.loads((tmp_path / name / "final" / "adapter_config.json").read_text())
        return calls, stored.get("box_prior"), trainer

    calls, recorded, trainer = run("prior", box_prior="ellipse")
    assert recorded == "ellipse" and calls
    for boxes, masks in calls:
        assert boxes is not None and masks is not None
        torch.testing.assert_close(masks, ellipse_prior_logits(boxes, trainer.low_res_size, trainer.input_size))
    calls, recorded, _ = run("plain")
    assert recorded is None and calls and all(masks is None for _, masks in calls)
    with pytest.raises(ValueError, match=r"TrainingConfig.box_prior='square'; expected None or one of"):
        TrainingConfig(box_prior="square")


def test_the_model_card_names_the_box_prior_of_an_adapter_that_has_one():
    from peft_medsa.hub.cards import render_model_card

    card = render_model_card(task="thyroid nodule segmentation", peft_model=_model("ellipse"))
    assert "| box_prior | `ellipse` |" in card
    assert "box_prior" not in render_model_card(task="thyroid nodule segmentation", peft_model=_model(None))
