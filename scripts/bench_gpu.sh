#!/usr/bin/env bash
# The GPU checks and measurements in one go, for a CUDA host. Usage, from the repository root:
#
#     bash scripts/bench_gpu.sh [OUT_DIR]          # OUT_DIR defaults to $OUT, else gpu-bench
#     STEPS="decode cuda extract metrics probe tests" bash scripts/bench_gpu.sh   # everything (> 15 min)
#     TIMM_BENCHMARK=path/to/pytorch-image-models/benchmark.py STEPS=timm bash scripts/bench_gpu.sh
#
# Default steps (STEPS="decode cuda extract", under 7 minutes on an H100 with 16 cores; each step has its
# own time limit, so one slow step still leaves the others' numbers in OUT_DIR):
# decode   scripts/bench_gpu_decode.py: resnet50 and tf_efficientnet_lite0 on 8,192 generated 500x375
#          JPEGs at batch 256: the model alone measured as timm's benchmark.py does (bf16 autocast,
#          channels_last, input on the device), the whole pipeline with nvJPEG decode (decode once,
#          zoo_rank.extract.zoo's loop), the amortised rate of a further zoo model, and decode alone -> decode.json;
# cuda     tests/test_cuda.py (CUDA == CPU: extraction, nvJPEG decode, tensor transforms, zoo, metrics, probe);
# extract  scripts/bench_extract.py on 4,096 generated JPEGs: the per-model PIL/DataLoader path for comparison.
# Optional: timm (timm's own benchmark.py, when TIMM_BENCHMARK is set), metrics (ClassStats on the GPU),
# probe (probe benchmark on the GPU), tests (extraction/probe/metrics/training tests on the GPU).
# Needs torch, torchvision, timm, numpy, pyarrow, PIL; decode runs without polars/datasets (its own loop),
# cuda and extract need polars and datasets.
set -u
steps=" ${STEPS:-decode cuda extract} "
on() { [[ $steps == *" $1 "* ]]; }
out=${1:-${OUT:-gpu-bench}}
mkdir -p "$out"
py=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # this checkout's zoo_rank, installed or not
export ZOO_RANK_CACHE=${ZOO_RANK_CACHE:-$(mktemp -d)}  # a scratch cache: nothing of it comes back in $out
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$out/gpu.txt"

on decode && timeout 180 $py scripts/bench_gpu_decode.py --n 8192 --batch-size 256 --json "$out/decode.json" 2>&1 \
    | tee "$out/decode.txt"

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
on extract && timeout 75 $py scripts/bench_extract.py --synthetic 4096 --batch-size 256 --reps 10 \
    --workers 16 --skip-cache 2>&1 | grep -v "examples/s" | tee "$out/extract.txt"
on metrics && timeout 120 $py scripts/bench_metrics.py --device cuda --skip-logme-port 2>&1 | tee "$out/metrics.txt"
on probe && timeout 100 $py scripts/bench_probe.py --device cuda --sk-values 2 2>&1 | tee "$out/probe.txt"
on tests && timeout "${TESTS_TIMEOUT:-300}" $py -m pytest -q -p no:cacheprovider tests/test_extract.py tests/test_probe.py \
    tests/test_metrics.py tests/test_train.py 2>&1 | tee -a "$out/tests.txt" | tail -25
