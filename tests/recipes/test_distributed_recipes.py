"""Every recipe under ``accelerate launch`` with 2 processes (DDP over gloo on the CPU) and the same config as one
process: micro-batch b per process follows the single process's trajectory with micro-batch 2b, stage for stage,
and the run folder holds one copy of everything (tests/recipes/distributed_recipes.py runs the recipes)."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from humantune.train.engine import read_metrics
from tests.recipes.distributed_recipes import main as run_recipes
from tests.tiny_pipelines import save_pipeline

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def test_every_recipe_on_two_processes_follows_one_process(tmp_path):
    base = save_pipeline("sd", tmp_path / "base")
    run_recipes([str(base), str(tmp_path / "one"), "--batch-size", "4"])
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
           str(ROOT / "configs/accelerate/ddp_cpu.yaml"), "--main_process_port", str(port),
           str(ROOT / "tests/recipes/distributed_recipes.py"), str(base), str(tmp_path / "two"), "--batch-size", "2"]
    done = subprocess.run(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    for stage in ("pretrain/vae", "pretrain/denoiser", "controlnet-pose/s1", "dreambooth-lora/dreambooth"):
        one, two = read_metrics(tmp_path / "one" / stage), read_metrics(tmp_path / "two" / stage)
        assert [r["step"] for r in two] == [1, 2, 3], stage
        assert [r["loss"] for r in two] == pytest.approx([r["loss"] for r in one], rel=1e-5), stage
    for path in ("pretrain/model/model_index.json", "controlnet-pose/results.json", "controlnet-pose/report.html",
                 "dreambooth-lora/lora/pytorch_lora_weights.safetensors"):
        assert (tmp_path / "two" / path).is_file(), path
    images = tmp_path / "two/controlnet-pose/eval/s1/images"
    assert len((images / "metadata.jsonl").read_text().splitlines()) == 4    # the shards of both processes
