"""Bad distributed input ends fast with a clear error and leaves no half-written checkpoint marked as latest:
processes started with different configurations, a process that dies mid-run, a launcher port already in use.
Every launch runs under a timeout (a hang fails the test)."""

from __future__ import annotations

import socket
import time

import pytest

from dist_launch import CONFIGS, LAUNCH_TIMEOUT, SCRIPT, cpu_env, finish, free_port, run, start, tool
from peft_medsa.training import latest_checkpoint


@pytest.mark.slow
@pytest.mark.distributed
def test_processes_with_different_seeds_and_adapters_are_refused(tmp_path):
    out = tmp_path / "mismatch"
    cmd = [tool("torchrun"), "--standalone", "--nproc_per_node", "2", str(SCRIPT), str(out), "--max-steps", "2",
           "--seed-of-rank", "1", "7", "--r-of-rank", "1", "8"]
    code, log = run(cmd, cpu_env(), timeout=LAUNCH_TIMEOUT)
    assert code != 0
    assert "RankMismatchError" in log
    assert "training_config.seed (rank 0: 3, rank 1: 7)" in log
    assert "peft_config[default].r (rank 0: 4, rank 1: 8)" in log
    assert not (out / "checkpoints").exists()  # refused before anything was written


@pytest.mark.slow
@pytest.mark.distributed
def test_a_process_dying_mid_run_stops_the_main_one_with_a_clear_error(tmp_path):
    """Two 1-process "machines": machine 1's process is SIGKILLed after step 3; machine 0's main process, waiting in
    the next collective, stops with PeerFailureError naming the last complete checkpoint (step 2)."""
    out, port = tmp_path / "dying", free_port()
    machines = [
        start([tool("torchrun"), "--nnodes", "2", "--node_rank", str(rank), "--nproc_per_node", "1",
               "--master_addr", "127.0.0.1", "--master_port", str(port), str(SCRIPT), str(out), "--max-steps", "6",
               "--save-every", "2", "--kill-at", "3", "--kill-rank", "1"], cpu_env())
        for rank in (0, 1)
    ]
    code1, log1 = finish(machines[1], timeout=LAUNCH_TIMEOUT)  # the dying machine ends first
    died = time.monotonic()
    code0, log0 = finish(machines[0], timeout=LAUNCH_TIMEOUT)
    # the dead peer is noticed at once (connection reset), long before the collective timeout (300 s)
    assert time.monotonic() - died < 120
    assert code0 != 0 and code1 != 0
    assert "PeerFailureError" in log0 and "another process of the run most likely died" in log0, log0[-3000:]
    assert f"Last complete checkpoint: {out / 'checkpoints' / 'step-00000002'}" in log0
    latest = latest_checkpoint(out)
    assert latest.name == "step-00000002" and (latest / "model.safetensors").is_file()
    assert not list((out / "checkpoints").glob(".tmp-*")) and not (out / "final").exists()


@pytest.mark.slow
@pytest.mark.distributed
def test_a_hanging_process_fails_the_run_after_the_collective_timeout(tmp_path):
    """Process 1 stops responding after step 3 (alive, but never joins the next collective): process 0 stops with
    PeerFailureError after `collective_timeout` (15 s here), and the launcher ends the run."""
    out = tmp_path / "hanging"
    cmd = [tool("torchrun"), "--standalone", "--nproc_per_node", "2", str(SCRIPT), str(out), "--max-steps", "6",
           "--save-every", "2", "--hang-at", "3", "--kill-rank", "1", "--collective-timeout", "15"]
    code, log = run(cmd, cpu_env(), timeout=LAUNCH_TIMEOUT)
    assert code != 0
    assert "PeerFailureError: process 0 of 2" in log and "Timed out" in log, log[-3000:]
    assert latest_checkpoint(out).name == "step-00000002" and not (out / "final").exists()


@pytest.mark.slow
@pytest.mark.distributed
@pytest.mark.parametrize("launcher", ["torchrun", "accelerate"])
def test_launcher_port_in_use(tmp_path, launcher):
    out = tmp_path / "port"
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = str(busy.getsockname()[1])
        if launcher == "torchrun":
            cmd = [tool("torchrun"), "--nnodes", "1", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
                   "--master_port", port]
        else:
            cmd = [tool("accelerate"), "launch", "--config_file", str(CONFIGS / "two_machines.yaml"),
                   "--num_processes", "2", "--machine_rank", "0", "--main_process_ip", "127.0.0.1",
                   "--main_process_port", port, "--mixed_precision", "no"]
        began = time.monotonic()
        code, log = run([*cmd, str(SCRIPT), str(out), "--max-steps", "2"], cpu_env(), timeout=120)
    assert code != 0 and time.monotonic() - began < 120
    assert "already in use" in log.lower() or "utilizing it" in log.lower(), log[-2000:]
    assert not (out / "checkpoints").exists()
