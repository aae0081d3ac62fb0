"""GRPO training job for R1-style models.

    ray job submit --address http://127.0.0.1:8265 --working-dir . -- python jobs/grpo.py [flags]
    python jobs/grpo.py [flags]      # joins a running local Ray, or starts one

With no flags it trains the tiny model on the built-in arithmetic task. Flags, a YAML
`--config FILE` and R1P_GRPO_* env vars are described by `python jobs/grpo.py --help`.

It prints one line per step (a progress bar on a terminal) and a before/after table; the
framework logs (vLLM, Ray) go to OUTPUT_DIR/job.log, shown on failure, or here with --verbose.
"""

import sys
from pathlib import Path

# Under `ray job submit` the working dir is a copy of the repo that may not be pip-installed.
_ROOT = Path(__file__).resolve().parents[1]
if (_ROOT / "platform" / "r1platform").is_dir():
    sys.path.insert(0, str(_ROOT / "platform"))

from r1platform.training.job import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
