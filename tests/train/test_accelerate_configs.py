"""The shipped accelerate configs (configs/accelerate/) load with accelerate's own config loader and say what their
comments promise; ddp_cpu.yaml is also run by tests/train/test_distributed.py, the GPU ones by
benchmarks/gpu_check_scale_out.sh."""

from pathlib import Path

import pytest
from accelerate.commands.config.config_args import load_config_from_file
from accelerate.utils import DistributedType

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "accelerate"


def test_the_shipped_configs_are_the_four_documented_ones():
    assert sorted(p.name for p in CONFIGS.glob("*.yaml")) == [
        "ddp_cpu.yaml", "deepspeed_zero2.yaml", "deepspeed_zero3.yaml", "fsdp.yaml"]


@pytest.mark.parametrize("name, kind, check", [
    ("ddp_cpu.yaml", DistributedType.MULTI_GPU, lambda c: c.mixed_precision == "no" and not c.use_cpu),
    ("fsdp.yaml", DistributedType.FSDP,
     lambda c: c.fsdp_config["fsdp_sharding_strategy"] == "FULL_SHARD" and c.fsdp_config["fsdp_use_orig_params"]),
    ("deepspeed_zero2.yaml", DistributedType.DEEPSPEED, lambda c: c.deepspeed_config["zero_stage"] == 2),
    ("deepspeed_zero3.yaml", DistributedType.DEEPSPEED,
     lambda c: c.deepspeed_config["zero_stage"] == 3 and c.deepspeed_config["zero3_save_16bit_model"]),
])
def test_a_shipped_config_loads_with_accelerate(name, kind, check):
    cfg = load_config_from_file(str(CONFIGS / name))
    assert cfg.distributed_type == kind and cfg.num_processes == 2 and cfg.num_machines == 1
    assert check(cfg)
