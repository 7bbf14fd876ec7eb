"""``import peft_medsa`` loads neither torch nor peft nor transformers, yet registers its PEFT methods and model type
as soon as those are imported; the command line fails on a missing input before loading them."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from peft_medsa.cli import main

from conftest import REPO_ROOT

HEAVY = ("torch", "peft", "transformers")


def run_python(code: str) -> str:
    env_path = str(REPO_ROOT / "src")
    result = subprocess.run(
        [sys.executable, "-c", f"import sys; sys.path.insert(0, {env_path!r})\n" + code],
        check=True, capture_output=True, text=True,
    )
    return result.stdout.strip()


def test_import_loads_no_heavy_module():
    out = run_python(f"import peft_medsa\nprint(sorted(m for m in {HEAVY!r} if m in sys.modules))")
    assert out == "[]"


@pytest.mark.parametrize("first", ["peft", "peft_medsa.tuners.sd_trans"])
def test_registered_whatever_is_imported_first(first):
    code = f"""
import peft_medsa, importlib
importlib.import_module({first!r})
from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING
from peft.utils import PeftType
from transformers import AutoConfig
print([PEFT_TYPE_TO_CONFIG_MAPPING[PeftType[n]].__name__ for n in ("MEDSA", "HYPADPT", "SDTRANS")],
      type(AutoConfig.for_model("lite_medsam")).__name__)
"""
    assert run_python(code) == "['MedSAConfig', 'HyPAdptConfig', 'SDTransConfig'] LiteMedSamConfig"


def test_registered_when_peft_came_first():
    code = "import peft, transformers, peft_medsa\nfrom peft.utils import PeftType\nprint(PeftType.HYPADPT.value)"
    assert run_python(code) == "HYPADPT"


def test_cli_missing_image_fails_before_heavy_imports(tmp_path):
    code = f"""
from peft_medsa.cli import main
rc = main(["predict", "--model", "lite-medsam", "--image", {str(tmp_path / "nope.png")!r}, "--out", "m.png"])
print(rc, sorted(m for m in {HEAVY!r} if m in sys.modules))
"""
    assert run_python(code) == "2 []"


def test_debug_shows_the_cause_of_a_user_error(tmp_path, capsys):
    image = tmp_path / "scan.png"
    Image.fromarray(np.zeros((8, 8), dtype=np.uint8)).save(image)
    argv = ["predict", "--model", str(tmp_path / "no-model"), "--image", str(image), "--out", str(tmp_path / "m.png"),
            "--point", "1,1"]
    assert main(argv) == 2
    assert "--model" in capsys.readouterr().err
    with pytest.raises(Exception) as info:
        main([*argv, "--debug"])
    assert "cannot load" in str(info.value)
    assert info.value.__context__ is not None and info.value.__suppress_context__ is False
