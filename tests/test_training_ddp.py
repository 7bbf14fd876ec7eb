"""Real DDP on CPU: 2 processes (torchrun, gloo) see different batches and end with identical adapter weights."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

HELPER = Path(__file__).with_name("test_training_utils.py")


@pytest.mark.slow
@pytest.mark.distributed
def test_two_process_ddp_on_cpu(tmp_path):
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or shutil.which("torchrun")
    if torchrun is None:
        pytest.skip("torchrun is not installed")
    out = tmp_path / "ddp"
    env = dict(os.environ, ACCELERATE_USE_CPU="true", OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    proc = subprocess.run(
        [torchrun, "--standalone", "--nproc_per_node", "2", str(HELPER), str(out), "--max-steps", "2",
         "--save-every", "2", "--dump"],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    ids = [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]
    # 2 steps x 2 micro-batches of 2 images per rank; the ranks' batches are disjoint and together cover the data
    assert [len(i) for i in ids] == [4, 4]
    for batch0, batch1 in zip(*ids):
        assert not set(batch0) & set(batch1)
    first_epoch = sum(ids[0][:3], []) + sum(ids[1][:3], [])
    assert sorted(first_epoch) == [f"case0_{i:02d}" for i in range(12)]
    # gradients were all-reduced: different data, yet identical weights, and they moved from the zero init
    w0, w1 = (load_file(str(out / f"rank{r}.safetensors")) for r in (0, 1))
    assert w0.keys() == w1.keys() and all(torch.equal(w0[k], w1[k]) for k in w0)
    assert any(w0[k].abs().max() > 0 for k in w0 if ".up." in k)
    # one checkpoint holding both ranks' RNG states; a log written once (by the main process)
    checkpoint = out / "checkpoints" / "step-00000002"
    assert {p.name for p in checkpoint.glob("random_states_*.pkl")} == {"random_states_0.pkl", "random_states_1.pkl"}
    assert json.loads((checkpoint / "trainer_state.json").read_text())["world_size"] == 2
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 2
