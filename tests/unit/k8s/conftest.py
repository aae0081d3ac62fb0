"""Render the chart once per values file for the whole session (the Helm engine is the slow
part); every test reads the same objects."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from helm_python.chart import Chart
from r1platform.k8s.render import CHART_DIR, REPO_ROOT, load_values, render_objects

EXAMPLES = REPO_ROOT / "configs" / "k8s"
# name -> values file (None = the chart's defaults)
CASES: dict[str, Path | None] = {
    "default": None,
    "single-pool": EXAMPLES / "single-pool.yaml",
    "mixed-fleet": EXAMPLES / "mixed-fleet.yaml",
    "everything": EXAMPLES / "everything.yaml",
    "grpo-rayjob": EXAMPLES / "grpo-rayjob.yaml",
    "mixed-h100-a100-l4": EXAMPLES / "mixed-h100-a100-l4.yaml",
    "cpu-dev": EXAMPLES / "cpu-dev.yaml",
    "r1-h100-tp8pp2": EXAMPLES / "r1-h100-tp8pp2.yaml",
}


class Rendered:
    def __init__(self, name: str, values: dict[str, Any], objects: list[dict[str, Any]]):
        self.name, self.values, self.objects = name, values, objects
        # The values the release really uses: chart defaults coalesced with the file, by Helm.
        with Chart.load(CHART_DIR) as chart:
            self.full: dict[str, Any] = chart.merge_values(values)

    def kinds(self, kind: str) -> list[dict[str, Any]]:
        return [o for o in self.objects if o["kind"] == kind]


_cache: dict[str, Rendered] = {}


def rendered_case(name: str) -> Rendered:
    if name not in _cache:
        path = CASES[name]
        values = load_values(path) if path else {}
        _cache[name] = Rendered(name, values, render_objects(values))
    return _cache[name]


@pytest.fixture(scope="session", params=sorted(CASES))
def case(request: pytest.FixtureRequest) -> Rendered:
    return rendered_case(request.param)
