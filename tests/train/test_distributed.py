"""The engine under ``accelerate launch`` on the CPU (DDP over gloo), and interrupted by SIGTERM, with real
processes: 2 processes × micro-batch b follow the loss trajectory of 1 process × 2b, read the same samples, write
each file once, resume each other's checkpoints (also as two "machines" on localhost), and split a held-out
evaluation into shards; a SIGTERM mid-run stops like Ctrl-C and the run resumes onto the uninterrupted trajectory.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from humantune.train.engine import Trainer, find_checkpoints, read_metrics
from tests.train.distributed_toy import Recorded, toy_config

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "tests" / "train" / "distributed_toy.py"
DDP_CPU = ROOT / "configs" / "accelerate" / "ddp_cpu.yaml"
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
STEPS = 6

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(*args: str) -> list[str]:
    return [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(DDP_CPU), *args]


def _run(out: Path, batch_size: int, max_steps: int, *launch: str, extra: tuple = ()) -> subprocess.CompletedProcess:
    cmd = _launch(*launch, str(SCRIPT), str(out), "--batch-size", str(batch_size), "--max-steps", str(max_steps),
                  *extra)
    done = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def _in_process(out: Path, max_steps: int) -> Recorded:
    task = Recorded()
    Trainer(out, log_with=None).fit(task, toy_config(max_steps, 4), out)
    return task


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """One process, micro-batch 4 (× 2 accumulated), 6 steps: the trajectory every layout must follow."""
    out = tmp_path_factory.mktemp("one_process")
    task = _in_process(out, STEPS)
    return out, task.seen


def _same_trajectory(a: Path, b: Path) -> float:
    rows_a, rows_b = read_metrics(a), read_metrics(b)
    assert [r["step"] for r in rows_a] == [r["step"] for r in rows_b] == list(range(1, STEPS + 1))
    diff = max(abs(x["loss"] - y["loss"]) / abs(x["loss"]) for x, y in zip(rows_a, rows_b))
    assert diff < 1e-6
    assert [x["lr"] for x in rows_a] == pytest.approx([y["lr"] for y in rows_b])
    wa = load_file(str(a / f"checkpoints/step_{STEPS:06d}/model.safetensors"))
    wb = load_file(str(b / f"checkpoints/step_{STEPS:06d}/model.safetensors"))
    assert wa.keys() == wb.keys()
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=1e-5, atol=1e-6)
    return diff


def test_two_processes_of_b_follow_one_process_of_2b_and_resume_in_one(reference, tmp_path):
    one, seen_one = reference
    out = tmp_path / "two"
    _run(out, 2, 3, "--num_processes", "2", "--main_process_port", str(_free_port()), extra=("--heldout",))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["processes"] == 2 and summary["steps_run"] == 3
    # same data order: at every micro-batch, process 0 reads the first half of the single process's samples
    seen = [json.loads((out / f"seen_{r}.json").read_text()) for r in (0, 1)]
    assert [a + b for a, b in zip(*seen)] == seen_one[:6]
    # every file once: one metrics row per step; one model/optimizer/schedule file, accelerate's RNG state per process
    assert [r["step"] for r in read_metrics(out)] == [1, 2, 3]
    assert sorted(p.name for p in (out / "checkpoints/step_000003").iterdir()) == [
        "custom_checkpoint_0.pkl", "model.safetensors", "optimizer.bin", "random_states_0.pkl",
        "random_states_1.pkl", "trainer_state.json"]
    # the held-out evaluation was split: process r generated samples r, r + 2, ...; the main process scored once
    assert [json.loads((out / f"shard_{r}.json").read_text()) for r in (0, 1)] == [[0, 2, 4], [1, 3]]
    assert len((out / "eval/toy/images/metadata.jsonl").read_text().splitlines()) == 5
    assert json.loads((out / "results_0.json").read_text()) == json.loads((out / "results_1.json").read_text()) == 1.0
    # the 2-process checkpoint resumes in one process, onto the single process's trajectory
    resumed = Recorded()
    summary = Trainer(out, log_with=None).fit(resumed, toy_config(STEPS, 4), out)
    assert summary["start_step"] == 3
    _same_trajectory(one, out)


def test_two_machines_on_localhost_resume_a_one_process_checkpoint(reference, tmp_path):
    one, _ = reference
    out = tmp_path / "machines"
    _in_process(out, 3)
    port = str(_free_port())
    common = ["--num_machines", "2", "--num_processes", "2", "--main_process_ip", "127.0.0.1",
              "--main_process_port", port]
    args = [str(SCRIPT), str(out), "--batch-size", "2", "--max-steps", str(STEPS)]
    procs = [subprocess.Popen(_launch(*common, "--machine_rank", str(rank), *args), env=ENV, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for rank in (0, 1)]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["processes"] == 2 and summary["start_step"] == 3 and summary["steps_run"] == 3
    _same_trajectory(one, out)


def test_sigterm_mid_run_stops_cleanly_and_the_run_resumes_onto_the_same_trajectory(reference, tmp_path):
    one, _ = reference
    out = tmp_path / "term"
    cmd = [sys.executable, str(SCRIPT), str(out), "--batch-size", "4", "--max-steps", str(STEPS), "--sleep", "0.25"]
    proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while len(read_metrics(out)) < 4 and time.time() < deadline:      # step 3's checkpoint is written by now
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr[-2000:]
    assert "toy: interrupted during step" in stdout and "run it again to resume from" in stdout
    assert [s for s, _ in find_checkpoints(out)] == [3]
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]                # cleaned up on the way out
    assert 4 <= len(read_metrics(out)) < STEPS
    _in_process(out, STEPS)
    _same_trajectory(one, out)
