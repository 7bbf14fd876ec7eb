"""Hub helpers offline: pushing per-organ adapters through a recording HfApi, loading them from a local HF cache."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from peft import get_peft_model

import peft_medsa
from peft_medsa.hub import load_organ_adapters, push_adapters_to_hub
from peft_medsa.tuners.medsa.layer import MedSALayer

from conftest import tiny_inputs, tiny_sam


class RecordingApi:
    """Stands in for ``huggingface_hub.HfApi``: records calls and a copy of every uploaded folder."""

    def __init__(self, root: Path) -> None:
        self.root, self.calls = root, []

    def create_repo(self, **kwargs):
        self.calls.append(("create_repo", kwargs))

    def upload_folder(self, **kwargs):
        self.calls.append(("upload_folder", kwargs))
        dest = self.root / kwargs["repo_id"] / (kwargs["path_in_repo"] or "")
        shutil.copytree(kwargs["folder_path"], dest, dirs_exist_ok=True)


def organ_model(seed: int, names=("default",)):
    """A tiny PeftModel whose adapters are random (non-zero), so that each organ computes something else."""
    model = None
    for name in names:
        config = peft_medsa.MedSAConfig(r=4)
        if model is None:
            model = get_peft_model(tiny_sam(), config, adapter_name=name)
        else:
            model.add_adapter(name, config)
    torch.manual_seed(seed)
    for layer in model.modules():
        if isinstance(layer, MedSALayer):
            for adapter in layer.adapters.values():
                adapter.reset_parameters(zero_init=False)
    return model.eval()


def outputs(model, **kwargs):
    with torch.no_grad():
        return model(**tiny_inputs(), **kwargs).pred_masks


def test_push_one_repo_per_organ_with_cards(tmp_path):
    model = organ_model(0, names=("liver", "spleen"))
    api = RecordingApi(tmp_path / "hub")
    refs = push_adapters_to_hub(model, "me/medsa-btcv-{name}", api=api, private=True,
                                card_info={"task": "BTCV abdominal organs", "datasets": ["btcv"]})
    assert refs == {"liver": "me/medsa-btcv-liver", "spleen": "me/medsa-btcv-spleen"}
    assert [c[0] for c in api.calls] == ["create_repo", "upload_folder"] * 2
    assert api.calls[0][1] == {"repo_id": "me/medsa-btcv-liver", "private": True, "exist_ok": True,
                               "repo_type": "model"}
    for organ in ("liver", "spleen"):
        folder = tmp_path / "hub" / f"me/medsa-btcv-{organ}"
        assert {"adapter_config.json", "adapter_model.safetensors", "README.md"} <= {p.name for p in folder.iterdir()}
        card = (folder / "README.md").read_text()
        assert f"structure **{organ}**" in card and f'from_pretrained(base, "me/medsa-btcv-{organ}")' in card
        assert f"- {organ}" in card.split("---")[1]  # the organ is a YAML tag


def test_push_folder_of_organs_into_one_repo(tmp_path):
    organs = tmp_path / "adapters"
    for seed, organ in enumerate(("liver", "spleen")):
        organ_model(seed).save_pretrained(str(organs / organ))
    (organs / "liver" / "README.md").write_text("my own card")
    (organs / "notes").mkdir()
    before = sorted((p.relative_to(organs), p.read_bytes()) for p in organs.rglob("*") if p.is_file())
    api = RecordingApi(tmp_path / "hub")
    refs = push_adapters_to_hub(organs, "me/medsa-btcv", api=api)
    assert refs == {"liver": "me/medsa-btcv/liver", "spleen": "me/medsa-btcv/spleen"}
    assert [c[0] for c in api.calls] == ["create_repo", "upload_folder", "upload_folder"]
    assert [c[1]["path_in_repo"] for c in api.calls[1:]] == ["liver", "spleen"]
    assert (tmp_path / "hub/me/medsa-btcv/liver/README.md").read_text() == "my own card"  # kept: no card_info
    assert "library_name: peft" in (tmp_path / "hub/me/medsa-btcv/spleen/README.md").read_text()
    assert "[More Information Needed]" not in (tmp_path / "hub/me/medsa-btcv/spleen/README.md").read_text()
    after = sorted((p.relative_to(organs), p.read_bytes()) for p in organs.rglob("*") if p.is_file())
    assert after == before  # the source folders are left as they were


def test_push_bad_input(tmp_path):
    with pytest.raises(ValueError, match="repo_id must be 'owner/name'"):
        push_adapters_to_hub(tmp_path, "no-owner", api=RecordingApi(tmp_path))
    with pytest.raises(FileNotFoundError, match="holds no adapter_config.json"):
        push_adapters_to_hub(tmp_path, "me/x", api=RecordingApi(tmp_path))


def lay_out_cache(cache: Path, repo_id: str, files_from: Path, subfolder: str | None = None) -> None:
    """Puts an adapter folder into a Hugging Face cache as the Hub client would (blobs are plain files here)."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / commit / (subfolder or "")
    shutil.copytree(files_from, snapshot, dirs_exist_ok=True)
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(commit)


def test_load_organ_adapters_from_offline_hub_cache(tmp_path, monkeypatch):
    import huggingface_hub.constants as constants

    liver, spleen = organ_model(1), organ_model(2)
    liver.save_pretrained(str(tmp_path / "liver"))
    spleen.save_pretrained(str(tmp_path / "spleen"))
    cache = tmp_path / "hf" / "hub"
    lay_out_cache(cache, "me/medsa-liver", tmp_path / "liver")
    lay_out_cache(cache, "me/medsa-btcv", tmp_path / "spleen", subfolder="spleen")
    for name, value in {"HF_HOME": str(tmp_path / "hf"), "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))

    model = load_organ_adapters(tiny_sam(), {"liver": "me/medsa-liver", "spleen": "me/medsa-btcv/spleen",
                                             "local": str(tmp_path / "spleen")})
    assert set(model.peft_config) == {"liver", "spleen", "local"} and model.active_adapter == "liver"
    expected_liver, expected_spleen = outputs(liver), outputs(spleen)
    torch.testing.assert_close(outputs(model), expected_liver, rtol=0, atol=1e-6)
    model.set_adapter("spleen")
    torch.testing.assert_close(outputs(model), expected_spleen, rtol=0, atol=1e-6)
    mixed = outputs(model, adapter_names=["spleen", "liver"])  # one organ per image of the batch
    torch.testing.assert_close(mixed[0], expected_spleen[0], rtol=0, atol=1e-6)
    torch.testing.assert_close(mixed[1], expected_liver[1], rtol=0, atol=1e-6)
    assert not torch.allclose(expected_liver, expected_spleen)
    with pytest.raises(Exception, match="me/not-cached"):
        load_organ_adapters(tiny_sam(), {"kidney": "me/not-cached"})


def test_load_organ_adapters_bad_input():
    with pytest.raises(ValueError, match="at least one"):
        load_organ_adapters(tiny_sam(), {})
    with pytest.raises(ValueError, match=r"no '\.' or '/': \['a\.b'\]"):
        load_organ_adapters(tiny_sam(), {"a.b": "me/x"})
    with pytest.raises(ValueError, match="neither a local adapter folder nor a Hub id"):
        load_organ_adapters(tiny_sam(), {"liver": "just-a-name"})


def test_push_mapping_of_run_folders(tmp_path):
    organ_model(3).save_pretrained(str(tmp_path / "runs" / "liver" / "best"))
    api = RecordingApi(tmp_path / "hub")
    refs = push_adapters_to_hub({"liver": tmp_path / "runs" / "liver" / "best"}, "me/medsa-{name}", api=api,
                                card_info={"task": "liver CT"})
    assert refs == {"liver": "me/medsa-liver"}
    assert api.calls[1][1]["path_in_repo"] is None  # one adapter per repo: at the root
    assert "# Med-SA adapter: liver CT" in (tmp_path / "hub/me/medsa-liver/README.md").read_text()
    with pytest.raises(FileNotFoundError, match=r"no adapter_config.json in the folder\(s\) given for \{'kidney'"):
        push_adapters_to_hub({"kidney": tmp_path / "nowhere"}, "me/x", api=api)
