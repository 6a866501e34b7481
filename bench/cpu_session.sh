#!/bin/bash
# The CPU figures of bench/RESULTS.md's issue 10, 11 and 13 sections, in one go on an idle machine
# (about 35 minutes on 2 cores; caches the untrained reference exports and their int8 copies first).
set -euo pipefail
cd "$(dirname "$0")/.."
lscpu | grep "Model name"
# The packaged model at fp32/bf16/int8 beside the untrained ResNets, end to end on the bundled clip.
fastyolo bench --compare --backbones resnet18,resnet34,resnet50 \
  --combos openvino:fp32,openvino:bf16,openvino:int8 --rounds 3 --frames 200 --threads 2 \
  --json bench/artifacts/cpu_compare_shipped_vs_untrained.json
# Agreement of each precision's detections with fp32's, packaged model, on the clip.
fastyolo bench --check --threads 2 --json bench/artifacts/cpu_check_shipped.json
# Issue 13: before/after (host normalisation in series vs uint8 input + decode overlapped).
fastyolo bench --compare --before-after --backbones resnet18,resnet50 \
  --combos openvino:fp32,openvino:bf16,openvino:int8,onnxruntime:fp32,onnxruntime:int8 \
  --rounds 3 --frames 200 --threads 2 --json bench/artifacts/cpu_issue13_before_after.json
# Issue 11: training speed (data pipeline, step, whole loop before/after; ~11 minutes) and fp32/bf16 curves (~7).
python bench/train_speed.py --json bench/artifacts/train_speed_cpu.json
python bench/amp_agreement.py
