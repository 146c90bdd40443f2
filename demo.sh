#!/usr/bin/env bash
# The main job on built-in synthetic data, end to end, on a CPU in about ten minutes:
#   synth videos -> extract-frames -> compute-flow -> build-split -> train-copy run
#   (tiny set networks on whole walks: flow master, copy student, no-copy student, evaluation,
#   ONNX export) -> enroll/identify (each walking track embedded as one set).
# Usage: bash demo.sh OUT        (everything is written under OUT)
# Sizes are small so that it runs on 2 CPU cores: 12 synthetic subjects seen from the side
# (view 090), GaitCopy's own crop (frame resized to height 64, a 64-wide window on the walker)
# and TV-L1 with fewer warps and scales than OpenCV's defaults. On a GPU machine add --gpu to
# compute-flow and drop the --tvl1 overrides.
# Results depend on the torch thread count (CPU kernels split work by thread): it is fixed here
# (GAITTOOLS_THREADS, default 2) and recorded, so a rerun on the same machine prints the same numbers.
set -euo pipefail
out=${1:?usage: bash demo.sh OUT}
mkdir -p "$out"
here=$(cd "$(dirname "$0")" && pwd)
export OMP_NUM_THREADS=${GAITTOOLS_THREADS:-2}
start=$(date +%s)

gaittools synth "$out/raw" --subjects 12 --views 090 --frames 36 --size 160x120 \
    --preview "$out/synth-preview.png"
gaittools extract-frames "$out/raw" "$out/store" --dataset casia-b --crop-mode frame --height 64
gaittools compute-flow "$out/store" --tvl1 warps=2 --tvl1 nscales=3
gaittools preview "$out/store" --out "$out/previews" --columns 6  # check the store by eye
gaittools build-split casia-b "$out/store" --protocol synth --views 090 --val-fraction 0 \
    --out "$out/split"
train-copy run "$here/training/configs/synth-demo.yaml" --out "$out/runs" \
    --set data.store="$out/store" --set data.split="$out/split"

# Flow-free identification with the exported copy student (a walk bundle: every frame of a
# walking track is one set): enrol nm-01 of every test subject, then identify their cl-01 walks
# (a coat they never wore in the gallery).
bundle="$out/runs/student-copy/exports/student-onnx"
ids=(007 008 009 010 011 012)
gaittools enroll $(for s in "${ids[@]}"; do echo "$out/raw/videos/$s-nm-01-090.avi"; done) \
    --ids "$(IFS=,; echo "${ids[*]}")" --model "$bundle" --out "$out/gallery.npz" --overwrite
gaittools identify $(for s in "${ids[@]}"; do echo "$out/raw/videos/$s-cl-01-090.avi"; done) \
    --model "$bundle" --gallery "$out/gallery.npz" --json > "$out/identify.json"
# CPU seconds of every finished command (this shell's children: utime + stime of /proc/$$/stat,
# fields 16-17, in clock ticks), where Linux gives them: on a shared CPU the wall time is not the cost.
cpu=()
if [[ -r /proc/$$/stat ]]; then
    cpu=(--cpu-seconds $(awk -v hz="$(getconf CLK_TCK)" '{printf "%d", ($16 + $17) / hz}' /proc/$$/stat))
fi
PYTHONPATH="$here${PYTHONPATH:+:$PYTHONPATH}" python3 -m benchmarks.demo_results "$out" \
    --seconds $(( $(date +%s) - start )) ${cpu[@]+"${cpu[@]}"}
echo "demo finished: results in $out/results.md"
