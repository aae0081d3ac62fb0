"""Regenerate the chart's GPU enum and product-string file from the GPU catalog.

python scripts/sync_chart_catalog.py          # rewrite helm/r1-platform's generated parts
python scripts/sync_chart_catalog.py --check  # exit 1 if they are out of date
"""

from __future__ import annotations

import sys

from r1platform.k8s.catalog_sync import sync_chart
from r1platform.k8s.render import CHART_DIR


def main(argv: list[str]) -> int:
    check = "--check" in argv
    stale = sync_chart(CHART_DIR, check=check)
    for rel in stale:
        print(f"{'stale' if check else 'updated'}: helm/r1-platform/{rel}")
    return 1 if check and stale else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
