#!/usr/bin/env bash
# The GPU checks and measurements in one go, for a CUDA host. Usage, from the repository root:
#
#     bash scripts/bench_gpu.sh [OUT_DIR]
#     TIMM_BENCHMARK=path/to/pytorch-image-models/benchmark.py bash scripts/bench_gpu.sh   # + timm's numbers
#
# 1. scripts/bench_extract.py on 16,384 generated JPEGs at batch 256: model alone in fp32 and in the default
#    precision, the data pipeline alone, extract_features end to end;
# 2. timm's own inference benchmark for the same models, batch and 224 px input (when TIMM_BENCHMARK is set);
# 3. tests/test_cuda.py (CUDA == CPU);
# 4. the ClassStats pass on the GPU (scripts/bench_metrics.py) and the probe benchmark on the GPU;
# 5. the extraction, probe, metrics and training tests, whose "auto" device is the GPU there.
# Each step has its own time limit, so one slow step still leaves the others' numbers in OUT_DIR;
# STEPS="extract timm cuda metrics probe tests" (the default) picks steps.
set -u
steps=" ${STEPS:-extract timm cuda metrics probe tests} "
on() { [[ $steps == *" $1 "* ]]; }
out=${1:-gpu-bench}
mkdir -p "$out"
py=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$out/gpu.txt"

on extract && timeout 240 $py scripts/bench_extract.py --synthetic 16384 --batch-size 256 --reps 20 \
    --workers 8 16 --skip-cache 2>&1 | grep -v "examples/s" | tee "$out/extract.txt"

if on timm && [ -n "${TIMM_BENCHMARK:-}" ]; then
    for model in tf_efficientnet_lite0 resnet50; do
        for mode in "--precision float32" "--amp --amp-dtype bfloat16 --channels-last"; do
            # shellcheck disable=SC2086
            timeout 60 $py "$TIMM_BENCHMARK" --model "$model" -b 256 --img-size 224 $mode 2>&1 | tail -1 \
                | tee -a "$out/timm.txt"
        done
    done
fi

on cuda && timeout 120 $py -m pytest -q -p no:cacheprovider -rs tests/test_cuda.py 2>&1 | tee "$out/tests.txt" | tail -15
on metrics && timeout 120 $py scripts/bench_metrics.py --device cuda --skip-logme-port 2>&1 | tee "$out/metrics.txt"
on probe && timeout 100 $py scripts/bench_probe.py --device cuda --sk-values 2 2>&1 | tee "$out/probe.txt"
on tests && timeout "${TESTS_TIMEOUT:-300}" $py -m pytest -q -p no:cacheprovider tests/test_extract.py tests/test_probe.py \
    tests/test_metrics.py tests/test_train.py 2>&1 | tee -a "$out/tests.txt" | tail -25
