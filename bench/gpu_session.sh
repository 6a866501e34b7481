#!/usr/bin/env bash
# The prepared checks for the next lent GPU, in one device call (about 7 minutes on an H100/H200):
#   1. issue 11's GPU target: bench/train_speed.py on CUDA (data pipeline with and without device
#      augmentation, the step in fp32/bf16/fp16, and the whole `fastyolo train` loop: default,
#      --amp off, --cache off, --augment-on device) for ResNet-18 and -50 at batch 64 on 1,050 frames
#      (kitti_tiny listed 14 times), 10 epochs;
#   2. bench/train_sync_check.py: does the training step make the host wait for the GPU (sync debug mode)?
#      bench/optimizer_step.py: torch's default AdamW/SGD step against the fused kernel, on the GPU;
#   3. issue 9's kernels: bench/gpu_check.py (kernels against the reference on hardware, timings, FPS).
#
# ../shared does not travel to the device machine, and that machine lacks faster-coco-eval (validation's mAP;
# `fastyolo train` stops without it) and has no network: first put the frames and its Python 3.12 wheel into
# the (git-ignored) .device/:
#   mkdir -p .device && cp -r ../shared/data/kitti_tiny .device/
#   pip download faster-coco-eval --no-deps --only-binary=:all: --python-version 3.12 \
#     --platform manylinux_2_28_x86_64 -d .device/wheels
# then, with the device tool: run  command "bash bench/gpu_session.sh"  carry [".device"]  timeout_s 590
# and give the machine back. Results land in $OUT (train_speed_gpu.json/.log, gpu_check.json/.log).
#
# Dry run of the same plumbing on a CPU (tiny sizes, the CUDA simulator): DRY_RUN=1 bash bench/gpu_session.sh
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu_session}
DATA=${DATA:-.device/kitti_tiny}
mkdir -p "$OUT"
if [ ! -d "$DATA" ]; then
  echo "gpu_session: no frames at $DATA (copy ../shared/data/kitti_tiny to .device/ and carry .device)" >&2
  exit 2
fi

if [ "${DRY_RUN:-0}" = 1 ]; then
  speed=(--devices cpu --backbones resnet18 --repeat 2 --epochs 2 --steps 1 --batch 8 --before none)
  sync=(--device cpu --backbone resnet18)
  optim=(--device cpu --backbones resnet18 --rounds 1 --steps 2)
  check=(--simulate)
  export NUMBA_ENABLE_CUDASIM=1
else
  speed=(--devices cuda --backbones resnet50 resnet18 --repeat 14 --epochs 10 --before none)
  sync=(--device cuda)
  optim=(--device cuda)
  check=(--budget 90)
  pip install -q --no-deps --no-build-isolation -e . >"$OUT/install.log" 2>&1 \
    || echo "gpu_session: editable install failed (see install.log); gpu_check imports the checkout directly"
  if ls .device/wheels/*.whl >/dev/null 2>&1; then
    pip install -q --no-deps --no-index .device/wheels/*.whl >>"$OUT/install.log" 2>&1 \
      || echo "gpu_session: the carried wheels did not install (see install.log)"
  fi
  python -c "import faster_coco_eval" 2>/dev/null \
    || echo "gpu_session: no faster-coco-eval: the whole-loop rows will fail (see the header for the wheel)"
  nvidia-smi >"$OUT/nvidia-smi.txt" 2>&1
fi

started=$(date +%s)
timeout 80 python bench/train_sync_check.py --data "$DATA" "${sync[@]}" --json "$OUT/train_sync_check.json" \
  >"$OUT/train_sync_check.log" 2>&1
echo "train_sync_check: exit $? after $(( $(date +%s) - started )) s"
tail -3 "$OUT/train_sync_check.log"

started=$(date +%s)
timeout 30 python bench/optimizer_step.py "${optim[@]}" --json "$OUT/optimizer_step.json" >"$OUT/optimizer_step.log" 2>&1
echo "optimizer_step: exit $? after $(( $(date +%s) - started )) s"
cat "$OUT/optimizer_step.log"

started=$(date +%s)
timeout 345 python bench/train_speed.py --data "$DATA" "${speed[@]}" --json "$OUT/train_speed_gpu.json" \
  >"$OUT/train_speed_gpu.log" 2>&1
echo "train_speed: exit $? after $(( $(date +%s) - started )) s"
sed -n '/^== /,$p' "$OUT/train_speed_gpu.log" | tail -60
tail -5 "$OUT/train_speed_gpu.log" | grep -iE "error|failed|Traceback" || true

started=$(date +%s)
timeout 110 python bench/gpu_check.py "${check[@]}" --json "$OUT/gpu_check.json" >"$OUT/gpu_check.log" 2>&1
echo "gpu_check: exit $? after $(( $(date +%s) - started )) s"
tail -15 "$OUT/gpu_check.log"
