#!/usr/bin/env bash
# Scale-out check for a machine with GPUs (not run in CI, which has none): the engine's toy task and every recipe
# (tiny models) under each shipped accelerate config, one process per GPU; for each, the loss trajectory is compared
# with one process at the same global batch. Prints one PASS/FAIL line per config and writes
# benchmarks/results/gpu_scale_out/<config>/ (logs and run folders).
#
#   bash benchmarks/gpu_check_scale_out.sh            # every visible GPU
#   NPROC=1 bash benchmarks/gpu_check_scale_out.sh    # FSDP / DeepSpeed on one GPU (checks the code paths only)
#
# Needs: pip install -e . (and deepspeed for the deepspeed_* configs).
set -uo pipefail
cd "$(dirname "$0")/.."
NPROC=${NPROC:-$(python -c "import torch; print(max(1, torch.cuda.device_count()))")}
OUT=benchmarks/results/gpu_scale_out
mkdir -p "$OUT"
python - "$OUT/base" <<'PY'
import sys
from pathlib import Path
sys.path.insert(0, ".")
from tests.tiny_pipelines import save_pipeline
if not Path(sys.argv[1]).is_dir():
    save_pipeline("sd", Path(sys.argv[1]))
PY
# Reference: one process, global batch 4 per micro-batch.
python tests/recipes/distributed_recipes.py "$OUT/base" "$OUT/reference" --batch-size 4 > "$OUT/reference.log" 2>&1 \
    || { echo "FAIL reference run (see $OUT/reference.log)"; exit 1; }
status=0
for cfg in ddp_cpu fsdp deepspeed_zero2 deepspeed_zero3; do
    if [[ $cfg == deepspeed_* ]] && ! python -c "import deepspeed" 2>/dev/null; then
        echo "SKIP $cfg (deepspeed not installed)"; continue
    fi
    if (( 4 % NPROC )); then echo "SKIP $cfg (4 is not divisible by $NPROC processes)"; continue; fi
    dir="$OUT/$cfg"; rm -rf "$dir"; mkdir -p "$dir"
    only=(); stages="pretrain/vae pretrain/denoiser controlnet-pose/s1 dreambooth-lora/dreambooth"
    if [[ $cfg == deepspeed_* ]]; then   # one trained model per run under DeepSpeed: not pretrain's two
        only=(--only controlnet-pose --only dreambooth-lora); stages="controlnet-pose/s1 dreambooth-lora/dreambooth"
    fi
    # ddp_cpu.yaml starts torchrun processes; on a GPU machine they use the GPUs (DDP over NCCL).
    if accelerate launch --config_file "configs/accelerate/$cfg.yaml" --num_processes "$NPROC" --main_process_port 0 \
        tests/recipes/distributed_recipes.py "$OUT/base" "$dir/run" --batch-size $((4 / NPROC)) "${only[@]}" \
        > "$dir/log" 2>&1; then
        python - "$OUT/reference" "$dir/run" "$cfg" $stages <<'PY' || status=1
import json, sys
from pathlib import Path
ref, run, cfg = map(Path, sys.argv[1:4])
worst = 0.0
for stage in sys.argv[4:]:
    a = [json.loads(l)["loss"] for l in (ref / stage / "metrics.jsonl").read_text().splitlines()]
    p = run / stage / "metrics.jsonl"
    if not p.is_file():
        print(f"FAIL {cfg}: {stage} did not train"); sys.exit(1)
    b = [json.loads(l)["loss"] for l in p.read_text().splitlines()]
    worst = max(worst, max(abs(x - y) / abs(x) for x, y in zip(a, b)))
# bf16 configs round differently from the float32 reference: a loose bound
print(f"{'PASS' if worst < 5e-2 else 'FAIL'} {cfg}: worst relative loss difference vs 1 process {worst:.2e}")
sys.exit(0 if worst < 5e-2 else 1)
PY
    else
        echo "FAIL $cfg (see $dir/log)"; status=1
    fi
done
exit $status
