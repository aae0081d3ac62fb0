"""Regenerate k8s/base and k8s/overlays/{gpu,cpu-dev} from the Helm chart.

python scripts/render_k8s.py          # rewrite the tree
python scripts/render_k8s.py --check  # exit 1 if the committed tree is stale
"""

from __future__ import annotations

import sys

from r1platform.k8s.kustomize import stale_files, write_tree


def main(argv: list[str]) -> int:
    if "--check" in argv:
        stale = stale_files()
        for rel in stale:
            print(f"stale: k8s/{rel}")
        return 1 if stale else 0
    for rel in write_tree():
        print(f"wrote k8s/{rel}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
