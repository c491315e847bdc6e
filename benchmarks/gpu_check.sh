#!/usr/bin/env bash
# One call on a GPU machine: pick a Python with CUDA torch, make the project importable, then run
# benchmarks/gpu_check.py (GPU-vs-CPU loss agreement over the first 50 steps, CUDA graphs vs eager, and the
# timing table of the reference and project loops with the projected 200-epoch wall time).
#
#   bash benchmarks/gpu_check.sh [gpu_check.py options, e.g. --steps 50 --rounds 4 --iters 300]
#
# Python: $PYTHON if set, else the project's .venv when its torch sees a GPU, else python3. The project pins
# torch==2.14.1; another torch is used as found (GPU machines often cannot download), with a note. Missing
# packages are installed with pip only when the network allows it. Real MNIST is used when
# data/prepared/train.pt is there (carry it to the machine), else random images.
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
  [torchinfo]="torchinfo>=1.8")
missing=()
for mod in "${!PIN[@]}"; do "$PY" -c "import $mod" 2>/dev/null || missing+=("${PIN[$mod]}"); done
if ((${#missing[@]})); then
  pip_install "torch==$TORCH_VERSION" "${missing[@]}" || { echo "gpu_check: cannot install ${missing[*]}" >&2; exit 2; }
fi
# the project from this tree without installing it (pyproject pins Python 3.11 and would refuse another)
export PYTHONPATH="$PWD/src:$PWD/benchmarks${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || true
exec "$PY" benchmarks/gpu_check.py --device cuda "$@"
