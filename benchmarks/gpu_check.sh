#!/usr/bin/env bash
# One call on a GPU machine: pick a Python with CUDA torch, make the project importable, then run
# benchmarks/gpu_check.py: for every configuration (tutorial, recipe, fast recipe, conditional recipe) CPU vs CUDA
# and eager vs CUDA graphs over the first 50 steps, the timing table (eager fp32, graphs fp32, graphs bf16), the
# recipe stopped and resumed on the GPU, and the recipe's stages (train, classifier, quality, evaluate) with their
# wall times. One summary table; exit 1 when a check fails. About 4-6 minutes on an H100/H200 with graphs working.
#
#   bash benchmarks/gpu_check.sh [gpu_check.py options, e.g. --steps 50 --rounds 4 --iters 300]
#
# Python: $PYTHON if set, else the project's .venv when its torch sees a GPU, else python3. The project pins
# torch==2.14.1; another torch is used as found (GPU machines often cannot download), with a note. Missing
# packages are installed with pip only when the network allows it (or from $PIP_FIND_LINKS, a carried wheelhouse).
# Carry data/prepared (train.pt and test.pt, 55 MB) for real MNIST, the resume check and the stages; without it
# random images are used and those two are skipped. The train stage also needs dvclive (which needs dvc): without
# it the stages are reported NOT RUN.
set -euo pipefail
cd "$(dirname "$0")/.."

has_cuda_torch() { "$1" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; }

PY="${PYTHON:-}"
if [[ -z "$PY" ]]; then
  if [[ -x .venv/bin/python ]] && has_cuda_torch .venv/bin/python; then PY=.venv/bin/python; else PY=python3; fi
fi
# every install is pinned (an unpinned torchvision would make pip replace torch) and fails fast without an index
pip_install() { "$PY" -m pip install -q --retries 0 --timeout 5 "$@"; }
if ! has_cuda_torch "$PY"; then
  echo "gpu_check: $PY has no torch that sees a GPU; trying pip install torch==2.14.1" >&2
  pip_install torch==2.14.1 torchvision==0.29.1 || { echo "gpu_check: no CUDA torch available" >&2; exit 2; }
  has_cuda_torch "$PY" || { echo "gpu_check: torch still sees no GPU" >&2; exit 2; }
fi
TORCH_VERSION=$("$PY" -c 'import torch; print(torch.__version__)')
[[ "$TORCH_VERSION" == 2.14.1* ]] || echo "note: torch $TORCH_VERSION here, the project pins 2.14.1"

# what gpu_check.py, bench_train.py and the library import, with the pins of pyproject.toml
declare -A PIN=([torchvision]="torchvision==0.29.1" [yaml]="pyyaml>=6.0" [PIL]="pillow>=10.0" [tqdm]="tqdm>=4.66"
  [torchinfo]="torchinfo>=1.8" [pydantic]="pydantic>=2.5,<3" [numpy]="numpy>=1.26")
missing=()
for mod in "${!PIN[@]}"; do "$PY" -c "import $mod" 2>/dev/null || missing+=("${PIN[$mod]}"); done
if ((${#missing[@]})); then
  pip_install "torch==$TORCH_VERSION" "${missing[@]}" || { echo "gpu_check: cannot install ${missing[*]}" >&2; exit 2; }
fi
# the train stage's logger: tried, never required (it pulls in dvc; gpu_stages says NOT RUN without it)
"$PY" -c "import dvclive" 2>/dev/null || pip_install "dvclive>=3.45,<4" || echo "gpu_check: no dvclive: the stages will not run" >&2
# the project from this tree without installing it (pyproject pins Python 3.11 and would refuse another)
export PYTHONPATH="$PWD/src:$PWD/benchmarks${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || true
exec "$PY" benchmarks/gpu_check.py --device cuda "$@"
