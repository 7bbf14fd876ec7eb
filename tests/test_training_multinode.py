"""Two "machines" of one process each on 127.0.0.1 (two `accelerate launch` with --num_machines 2 and machine ranks
0 and 1, examples/accelerate_configs/two_machines.yaml): each case of an epoch is trained on exactly once across the
ranks, and the adapter equals the 1-process run with the same global batch (tolerance of test_training_fsdp)."""

from __future__ import annotations

import json

import pytest
import yaml

from dist_launch import CONFIGS, LAUNCH_TIMEOUT, SCRIPT, cpu_env, finish, free_port, start, tool
from test_training_fsdp import STEPS, assert_same_adapter, single_process_run


@pytest.mark.slow
@pytest.mark.distributed
def test_two_machines_one_process_each(tmp_path):
    config = CONFIGS / "two_machines.yaml"
    assert yaml.safe_load(config.read_text())["num_machines"] == 2
    out, port = tmp_path / "two", free_port()
    machines = [
        start([tool("accelerate"), "launch", "--config_file", str(config), "--num_processes", "2",
               "--machine_rank", str(rank), "--main_process_ip", "127.0.0.1", "--main_process_port", str(port),
               "--mixed_precision", "no", str(SCRIPT), str(out), "--max-steps", str(STEPS), "--save-every", "2"],
              cpu_env())
        for rank in (0, 1)
    ]
    results = [finish(machine, timeout=LAUNCH_TIMEOUT) for machine in machines]
    for code, log in results:
        assert code == 0, log[-4000:]
    # 12 cases, global batch 2 x 2 -> an epoch is 3 micro-batches; each case exactly once per epoch across ranks
    ids = [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [len(i) for i in ids] == [STEPS * 2, STEPS * 2]
    for batch0, batch1 in zip(*ids):
        assert not set(batch0) & set(batch1)
    epoch = sorted(sum(ids[0][:3], []) + sum(ids[1][:3], []))
    assert epoch == [f"case0_{i:02d}" for i in range(12)]
    assert json.loads((out / "checkpoints" / "step-00000002" / "trainer_state.json").read_text())["world_size"] == 2
    assert_same_adapter(out, single_process_run(tmp_path / "single"))
