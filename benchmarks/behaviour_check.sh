#!/usr/bin/env bash
# Behaviour check for refactors: run the quick ControlNet, two short DreamBooth-LoRA runs (sd with prior
# preservation; sd3 with a text-encoder LoRA) and an anomaly comparison from a source tree into OUT, single-threaded
# so results are bit-reproducible. Run it on two checkouts, then compare:
#   git worktree add /tmp/before <old-rev>; git worktree add /tmp/after <new-rev>
#   benchmarks/behaviour_check.sh /tmp/before /tmp/runs-before; benchmarks/behaviour_check.sh /tmp/after /tmp/runs-after
#   python benchmarks/compare_runs.py /tmp/runs-before /tmp/runs-after
# (The text-encoder LoRA option below is the current config schema; on revisions before 7861067 it was
# --set lora.text_encoder=true.)
set -euo pipefail
src=$(cd "$1" && pwd); out=$2
cd "$src"
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 PYTHONHASHSEED=0 PYTHONPATH="$src"
mkdir -p "$out"
python -m humantune train controlnet-pose --config configs/controlnet_pose/quick.yaml --output-dir "$out/cn" > "$out/cn.log" 2>&1
python -m humantune train dreambooth-lora --config configs/dreambooth_lora/tiny-sd-lying.yaml --output-dir "$out/db-sd" \
    --set train.max_steps=12 --set prior.num_class_images=4 --set train.checkpoint_every=6 > "$out/db-sd.log" 2>&1
python -m humantune train dreambooth-lora --config configs/dreambooth_lora/tiny-sd3-lying.yaml --output-dir "$out/db-sd3" \
    --set train.max_steps=12 --set prior.enabled=false --set "lora.text_encoder={rank: 16, learning_rate: 5.0e-6}" \
    --set train.checkpoint_every=6 > "$out/db-sd3.log" 2>&1
python -m humantune anomaly compare --base tiny-sd --tuned "$out/db-sd" --prompts configs/anomaly/lying_prompts.txt \
    --control-prompts configs/anomaly/control_prompts.txt --reference "$out/db-sd/instance_images" --out "$out/cmp-sd" \
    --n 2 --steps 8 > "$out/cmp.log" 2>&1
echo "runs in $out"
