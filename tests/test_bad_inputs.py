"""A table of bad inputs per public entry point: each must raise this exception type with these words in its message.

Entry points: configs, forward, save / load, metrics, prompts, readers and builders, the trainer, the CLI (exit
status 2 and one line). The tests after the table check that a refused load leaves the caller's model exactly as it
was, and that nothing is written or overwritten when a command fails.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
import torch
from peft import PeftModel, get_peft_model
from PIL import Image
from safetensors.torch import load_file, save_file

import peft_medsa
from peft_medsa.cli import main as cli_main
from peft_medsa.data.builders import load_benchmark
from peft_medsa.data.io import DataLayoutError, MissingFileError, read_image, read_mask, read_nifti
from peft_medsa.evaluation import evaluate_model
from peft_medsa.metrics import compute_dice, compute_hd95, compute_iou
from peft_medsa.prompt_checks import check_model_call
from peft_medsa.prompts import Prompt, jitter_box, make_prompt, negative_points, positive_points
from peft_medsa.training import TrainingConfig
from peft_medsa.training.checkpoint_integrity import IncompleteCheckpointError
from peft_medsa.tuners.medsa.load_checks import AdapterLoadError
from test_training_utils import toy_samples

from conftest import tiny_inputs, tiny_sam

NAN = float("nan")


@dataclass
class Files:
    """Bad files made once per module: adapters, images, volumes."""

    root: Path

    def path(self, name: str) -> Path:
        return self.root / name


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Files:
    root = tmp_path_factory.mktemp("bad-inputs")
    model = get_peft_model(tiny_sam(), peft_medsa.MedSAConfig(r=4, init_weights=False))
    model.save_pretrained(root / "adapter")
    weights = root / "adapter" / "adapter_model.safetensors"
    shutil.copytree(root / "adapter", root / "truncated")
    (root / "truncated" / "adapter_model.safetensors").write_bytes(weights.read_bytes()[:-64])
    shutil.copytree(root / "adapter", root / "renamed")
    tensors = load_file(str(weights))
    first = sorted(tensors)[0]
    tensors[first.replace("medsa_adapter", "medsa_adaptor")] = tensors.pop(first)
    save_file(tensors, str(root / "renamed" / "adapter_model.safetensors"))
    (root / "no-weights").mkdir()
    shutil.copy(root / "adapter" / "adapter_config.json", root / "no-weights")
    shutil.copytree(root / "adapter", root / "missing")
    tensors = load_file(str(weights))
    tensors.pop(sorted(tensors)[-1])
    save_file(tensors, str(root / "missing" / "adapter_model.safetensors"))
    frames = [Image.fromarray(np.full((8, 8), v, np.uint8)) for v in (0, 255)]
    frames[0].save(root / "anim.gif", save_all=True, append_images=frames[1:])
    frames[0].save(root / "pages.tif", save_all=True, append_images=frames[1:])
    float_image = np.ones((8, 8), np.float32)
    float_image[3, 3] = NAN
    Image.fromarray(float_image).save(root / "nan.tif")
    volume = np.ones((6, 6, 3), np.float32)
    volume[1, 1, 1] = NAN
    nib.save(nib.Nifti1Image(volume, np.eye(4)), str(root / "nan.nii.gz"))
    Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(root / "scan.png")
    return Files(root)


@pytest.fixture(scope="module")
def two_adapters(files):
    model = PeftModel.from_pretrained(tiny_sam(), files.path("adapter"))
    model.load_adapter(files.path("adapter"), adapter_name="b")
    return model


def forward(model: Any, batch: int = 2, **kwargs: Any) -> Any:
    with torch.no_grad():
        return model(**tiny_inputs(batch), **kwargs)


def nan_pixels() -> dict:
    inputs = tiny_inputs(2)
    inputs["pixel_values"][1, 0, 5, 5] = NAN
    return inputs


GT = np.pad(np.ones((4, 4), bool), 3)


@dataclass
class Case:
    call: Callable[[Files, Any], Any]
    error: type[BaseException]
    words: str


CASES: dict[str, Case] = {
    # configs
    "medsa scaling nan": Case(lambda f, m: peft_medsa.MedSAConfig(scaling=NAN), ValueError,
                              "MedSAConfig.scaling must be a finite number"),
    "medsa scaling inf": Case(lambda f, m: peft_medsa.MedSAConfig(scaling=float("inf")), ValueError,
                              "scaling=inf"),
    "medsa decoder_adapters 'no'": Case(lambda f, m: peft_medsa.MedSAConfig(decoder_adapters="no"), ValueError,
                                        "MedSAConfig.decoder_adapters must be True or False, got "
                                        "decoder_adapters='no'"),
    "medsa init_weights 'no'": Case(lambda f, m: peft_medsa.MedSAConfig(init_weights="no"), ValueError,
                                    "init_weights must be True or False"),
    "hypadpt init_weights 0": Case(lambda f, m: peft_medsa.HyPAdptConfig(init_weights=0), ValueError,
                                   "HyPAdptConfig.init_weights must be True or False"),
    "medsa modules_to_save unknown": Case(
        lambda f, m: get_peft_model(tiny_sam(), peft_medsa.MedSAConfig(r=2, modules_to_save=["iou_head_typo"])),
        ValueError, "['iou_head_typo'] name no module of SamModel"),
    "medsa target_modules neck norm by name": Case(
        lambda f, m: get_peft_model(
            tiny_sam(), peft_medsa.MedSAConfig(r=2, target_modules=["vision_encoder.neck.layer_norm1"])
        ),
        ValueError, "channels-first LayerNorm"),
    "training eval_setting": Case(lambda f, m: TrainingConfig(eval_setting="3boxes"), ValueError,
                                  "TrainingConfig.eval_setting='3boxes' is not a validation prompt setting"),
    "training resume 'no'": Case(lambda f, m: TrainingConfig(resume="no"), ValueError,
                                 "TrainingConfig.resume must be True or False"),
    "training max_grad_norm nan": Case(lambda f, m: TrainingConfig(max_grad_norm=NAN), ValueError,
                                       "max_grad_norm must be a finite number"),
    # forward
    "adapter_names shorter than batch": Case(lambda f, m: forward(m, 4, adapter_names=["default", "b"]), ValueError,
                                             "adapter_names has 2 name(s) for a batch of 4 image(s)"),
    "adapter_names empty": Case(lambda f, m: forward(m, 2, adapter_names=[]), ValueError,
                                "adapter_names has 0 name(s) for a batch of 2"),
    "adapter_names unknown": Case(lambda f, m: forward(m, 2, adapter_names=["default", "x"]), ValueError,
                                  "unknown adapter(s) ['x']"),
    "num_slices without sd_trans": Case(lambda f, m: forward(m, 2, num_slices=2), ValueError,
                                        "num_slices is for SD-Trans adapters"),
    # values are checked at the API boundary (check_model_call), not inside the forward
    "nan pixel 2d": Case(lambda f, m: check_model_call(m, **nan_pixels()), ValueError,
                         "pixel_values has 1 non-finite value(s)"),
    "nan point": Case(lambda f, m: check_model_call(m, **tiny_inputs(1), input_points=torch.tensor([[[[NAN, 3.0]]]]),
                                                    input_labels=torch.tensor([[[1]]])),
                      ValueError, "NaN or infinite"),
    # save / load
    "load truncated weights": Case(lambda f, m: PeftModel.from_pretrained(tiny_sam(), f.path("truncated")),
                                   AdapterLoadError, "truncated or corrupt adapter weights"),
    "load without weights file": Case(lambda f, m: PeftModel.from_pretrained(tiny_sam(), f.path("no-weights")),
                                      AdapterLoadError, "no-weights: no adapter weights"),
    "load renamed tensor": Case(lambda f, m: PeftModel.from_pretrained(tiny_sam(), f.path("renamed")),
                                AdapterLoadError, "does not match the adapter it configures (1 missing tensor(s)"),
    "load missing tensor": Case(lambda f, m: PeftModel.from_pretrained(tiny_sam(), f.path("missing")),
                                AdapterLoadError, "1 missing tensor(s)"),
    "load into existing name": Case(lambda f, m: m.load_adapter(f.path("adapter"), adapter_name="b"),
                                    AdapterLoadError, "adapter 'b' is already loaded"),
    # metrics
    "dice probabilities": Case(lambda f, m: compute_dice(GT * 0.9 + 0.05, GT), ValueError,
                               "prediction has fractional values"),
    "dice nan prediction": Case(lambda f, m: compute_dice(np.where(GT, 1.0, NAN), GT), ValueError,
                                "prediction has 84 NaN or infinite value(s)"),
    "iou nan ground truth": Case(lambda f, m: compute_iou(GT, np.where(GT, NAN, 0.0)), ValueError,
                                 "ground truth has 16 NaN"),
    "hd95 zero spacing": Case(lambda f, m: compute_hd95(GT, GT, spacing=0), ValueError,
                              "spacing must be finite and > 0"),
    "hd95 negative spacing": Case(lambda f, m: compute_hd95(GT, GT, spacing=(1, -2)), ValueError, "(1.0, -2.0)"),
    "hd95 nan spacing": Case(lambda f, m: compute_hd95(GT, GT, spacing=(NAN, 1)), ValueError, "(nan, 1.0)"),
    "evaluate probabilities": Case(
        lambda f, m: evaluate_model(lambda image, prompt: np.full(image.shape[:2], 0.4), toy_samples(1), "1pt",
                                    repeats=1, show_progress=False),
        ValueError, "predict_fn's mask for case 'case0_00' has fractional values"),
    # prompts
    "prompt nan point": Case(lambda f, m: Prompt([[NAN, 1.0]], [1]), ValueError, "Prompt points must be finite"),
    "prompt inf box": Case(lambda f, m: Prompt(box=[0, 0, float("inf"), 4]), ValueError, "Prompt box must be finite"),
    "prompt nan scale": Case(lambda f, m: Prompt([[1.0, 1.0]], [1]).scale(NAN, 1.0), ValueError,
                             "Prompt.scale factors must be finite"),
    "jitter nan iou": Case(lambda f, m: jitter_box(np.array([2, 2, 6, 6.0]), NAN, 0, (10, 10)), ValueError,
                           "target_iou must be in (0, 1]"),
    "positive_points nan distance": Case(lambda f, m: positive_points(GT, 1, 0, min_distance=NAN), ValueError,
                                         "min_distance must be finite"),
    "negative_points nan distance": Case(lambda f, m: negative_points(GT, 1, 0, max_distance=NAN), ValueError,
                                         "max_distance must be finite"),
    "make_prompt unknown setting": Case(lambda f, m: make_prompt(GT, "2boxes", 0), ValueError,
                                        "unknown prompt setting '2boxes'"),
    # readers and builders
    "animated gif": Case(lambda f, m: read_image(f.path("anim.gif")), DataLayoutError, "anim.gif: 2 frames"),
    "multi-page tiff mask": Case(lambda f, m: read_mask(f.path("pages.tif")), DataLayoutError, "pages.tif: 2 frames"),
    "nan float tiff": Case(lambda f, m: read_image(f.path("nan.tif")), DataLayoutError,
                           "nan.tif: 1 NaN or infinite value(s)"),
    "nan nifti voxel": Case(lambda f, m: read_nifti(f.path("nan.nii.gz")), DataLayoutError,
                            "nan.nii.gz: 1 NaN or infinite value(s)"),
    "missing image": Case(lambda f, m: read_image(f.path("none.png")), MissingFileError, "none.png: missing image"),
    "unknown benchmark": Case(lambda f, m: load_benchmark("btcv3d", f.root), KeyError, "unknown benchmark 'btcv3d'"),
    "missing benchmark folder": Case(lambda f, m: load_benchmark("isic", f.path("nowhere")), MissingFileError,
                                     "nowhere: missing data folder"),
    # trainer
    "resume without checkpoint": Case(
        lambda f, m: peft_medsa.training.MedSATrainer(
            m, toy_samples(4), TrainingConfig(output_dir=str(f.path("no-run")), resume=True, show_progress=False)
        ).train(),
        IncompleteCheckpointError, "holds no checkpoint"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_raises_a_clear_error(name, files, two_adapters):
    case = CASES[name]
    with pytest.raises(case.error) as info:
        case.call(files, two_adapters)
    message = info.value.args[0] if isinstance(info.value, KeyError) else str(info.value)
    assert case.words in message, message


CLI_CASES: dict[str, tuple[list[str], str]] = {
    "out is the image": (["--out", "{scan}"], "would be overwritten"),
    "overlay is the image": (["--out", "{root}/m.png", "--overlay", "{scan}"], "would be overwritten"),
    "overlay equals out": (["--out", "{root}/m.png", "--overlay", "{root}/m.png"], "are the same file"),
    "out is a folder": (["--out", "{root}"], "is a folder"),
    "threshold nan": (["--out", "{root}/m.png", "--pred-iou-thresh", "nan"], "expected a number in [0, 1]"),
    "label 256": (["--out", "{root}/m.png", "--label", "256"], "--label 256"),
    "window negative width": (["--out", "{root}/m.png", "--window", "40,-400"], "WIDTH must be > 0"),
    "unknown device": (["--out", "{root}/m.png", "--device", "tpu9"], "not a torch device"),
}


@pytest.mark.parametrize("name", list(CLI_CASES))
def test_bad_cli_argument_exits_2_with_one_line_before_loading(name, files, capsys, monkeypatch):
    import peft_medsa.inference.commands as commands

    monkeypatch.setattr(commands, "load_model", lambda *a, **k: pytest.fail("model loaded before the checks"))
    extra, words = CLI_CASES[name]
    scan = files.path("scan.png")
    before = scan.read_bytes()
    argv = ["predict", "--model", "m", "--image", str(scan), "--point", "3,3", "--quiet"]
    code = cli_main(argv + [a.format(scan=scan, root=files.root) for a in extra])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and words in err, err
    assert scan.read_bytes() == before and not files.path("m.png").exists()


def _snapshot(model: torch.nn.Module) -> tuple:
    return (
        [(n, type(m), id(m)) for n, m in model.named_modules()],
        {n: (p.detach().clone(), p.requires_grad) for n, p in model.named_parameters()},
        hasattr(model, "peft_config"),
    )


@pytest.mark.parametrize("folder", ["truncated", "no-weights", "renamed", "missing"])
def test_refused_from_pretrained_leaves_the_sam_model_exactly_as_it_was(files, folder):
    sam = tiny_sam()
    modules, params, had_config = _snapshot(sam)
    out_before = forward(sam, 2).pred_masks
    with pytest.raises(AdapterLoadError):
        PeftModel.from_pretrained(sam, files.path(folder))
    modules_after, params_after, has_config = _snapshot(sam)
    assert modules_after == modules and has_config == had_config
    assert params_after.keys() == params.keys()
    assert all(torch.equal(params[n][0], params_after[n][0]) and params[n][1] == params_after[n][1] for n in params)
    torch.testing.assert_close(forward(sam, 2).pred_masks, out_before, rtol=0, atol=0)


def test_refused_reload_keeps_the_existing_adapter(files, two_adapters):
    before = {n: p.clone() for n, p in two_adapters.state_dict().items() if ".b." in n}
    with pytest.raises(AdapterLoadError):
        two_adapters.load_adapter(files.path("renamed"), adapter_name="b")
    with pytest.raises(AdapterLoadError):
        two_adapters.load_adapter(files.path("renamed"), adapter_name="c")
    after = {n: p for n, p in two_adapters.state_dict().items() if ".b." in n}
    assert before.keys() == after.keys() and all(torch.equal(before[n], after[n]) for n in before)
    assert sorted(two_adapters.peft_config) == ["b", "default"]
    assert not any(".c." in n for n in two_adapters.state_dict())


def test_documented_suffix_target_adapts_the_blocks_norms_and_skips_the_neck():
    model = get_peft_model(tiny_sam(), peft_medsa.MedSAConfig(r=2, target_modules=["layer_norm1"], init_weights=False))
    wrapped = {n for n, m in model.named_modules() if isinstance(m, peft_medsa.tuners.medsa.layer.MedSALayer)}
    assert any(n.endswith("vision_encoder.layers.0.layer_norm1") for n in wrapped)
    assert not any(".neck." in n or ".mask_embed." in n for n in wrapped)
    assert torch.isfinite(forward(model, 2).pred_masks).all()
