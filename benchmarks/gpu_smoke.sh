#!/usr/bin/env bash
# The GPU smoke check of #23 (benchmarks/gpu_smoke.py), for a lent CUDA machine (the `device` tool):
#
#   bash benchmarks/gpu_smoke.sh prepare
#       here, once: the wheels the GPU image lacks (TRL, datasets and their few missing needs, for
#       its Python 3.12) into .whl/, and SmolLM2's tokenizer into .gpu_smoke/tokenizer; both folders
#       are ignored by git and together well under the 64 MiB a device run may carry.
#   device run: bash benchmarks/gpu_smoke.sh        (carry: .whl .gpu_smoke; timeout 600)
#       there: installs the wheels into /tmp/site, runs the checks, writes $OUT/gpu_smoke.json.
#
# Nothing is fetched on the GPU machine (it has no network); its image has torch, transformers,
# accelerate and peft. Under 8 minutes on one H100 is the budget.
set -euo pipefail
cd "$(dirname "$0")/.."
WHEELS=(trl==1.16.0 datasets==5.2.0 dill==0.4.0 multiprocess==0.70.18 math-verify==0.9.0
        latex2sympy2_extended==1.11.0 antlr4-python3-runtime==4.13.2 gguf==0.19.0)

if [ "${1:-}" = prepare ]; then
    grep -qxF '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
    grep -qxF '/.gpu_smoke/' .git/info/exclude 2>/dev/null || echo '/.gpu_smoke/' >> .git/info/exclude
    rm -rf .whl && mkdir -p .whl .gpu_smoke
    python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        --platform any -d .whl "${WHEELS[@]}"
    "${PYTHON:-.venv/bin/python}" - <<'PY'
import shutil
from grail_sim.model.embedded import embedded_tokenizer_dir
shutil.copytree(embedded_tokenizer_dir(), ".gpu_smoke/tokenizer", dirs_exist_ok=True)
PY
    du -sh .whl .gpu_smoke
    exit 0
fi

OUT=${OUT:-results/gpu_smoke}
mkdir -p "$OUT"
if [ -d .whl ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD/src:${PYTHONPATH:-} HF_HUB_OFFLINE=1 WANDB_MODE=offline TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || true
python3 benchmarks/gpu_smoke.py --out "$OUT/gpu_smoke.json" "$@" 2>&1 | tee "$OUT/gpu_smoke.log"
