"""The Grafana dashboard names only metrics the platform really exports, and the README's
Metrics section documents every one of them.

"Really exported": the serving names are read from a live ServingMetrics registry after one
observed request; the controller and GRPO names are the EXPORTED_NAMES that their modules
declare as the scraped series names.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from r1platform.pools import prom as pools_prom
from r1platform.serving.metrics import ServingMetrics
from r1platform.training import prom as training_prom

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "helm/r1-platform/dashboards/r1-platform.json"

# Words that are PromQL syntax, never metric names, when not followed by "(".
KEYWORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset",
    "and", "or", "unless", "atan2", "inf", "nan", "start", "end",
}  # fmt: skip
# After these a parenthesised list holds label names.
LABEL_LIST = {"by", "without", "on", "ignoring", "group_left", "group_right"}
TOKEN = re.compile(
    r"""(?P<string>"(?:\\.|[^"\\])*"|'(?:\\.|[^'\\])*'|`[^`]*`)
      | (?P<braces>\{(?:"(?:\\.|[^"\\])*"|'(?:\\.|[^'\\])*'|`[^`]*`|[^}"'`])*\})
                                   # label matchers: names and quoted values are not metrics
      | (?P<range>\[[^\]]*\])      # range / subquery durations, $__rate_interval
      | (?P<var>\$\{?\w+\}?)       # Grafana variables outside brackets
      | (?P<number>(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?[smhdwy]*)
      | (?P<ident>[A-Za-z_:][\w:]*)
      | (?P<op>\(|\)|,|[-+*/%^]|==|!=|<=|>=|<|>|=~|!~|=)
      | (?P<space>\s+)""",
    re.X,
)


def metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression: identifiers that are not functions or
    aggregations (followed by "(", or by "by"/"without" for an aggregation whose modifier
    comes first), not keywords, and not inside a by/on/... label list."""
    tokens = []
    pos = 0
    while pos < len(expr):
        m = TOKEN.match(expr, pos)
        if m is None:
            raise ValueError(f"cannot tokenize PromQL at {expr[pos:]!r}")
        if m.lastgroup != "space":
            tokens.append((m.lastgroup, m.group()))
        pos = m.end()
    names = set()
    in_label_list = False
    for i, (kind, text) in enumerate(tokens):
        nxt = tokens[i + 1][1] if i + 1 < len(tokens) else ""
        if in_label_list:
            in_label_list = text != ")"
            continue
        if kind != "ident":
            continue
        if text in LABEL_LIST and nxt == "(":
            in_label_list = True
            continue
        if nxt in {"(", "by", "without"} or text in KEYWORDS:
            continue
        names.add(text)
    return names


def variable_query_metrics(query: str) -> set[str]:
    """Metrics of a Grafana Prometheus variable query: label_values(metric, label), or PromQL."""
    m = re.fullmatch(r"\s*label_values\((.*),\s*\w+\s*\)\s*", query)
    if m:
        return metric_names(m.group(1))
    if re.fullmatch(r"\s*label_values\(\s*\w+\s*\)\s*", query):
        return set()  # a label over all series: no metric named
    return metric_names(re.sub(r"^\s*query_result\((.*)\)\s*$", r"\1", query))


def exported() -> set[str]:
    serving = ServingMetrics()
    usage = {"prompt_tokens": 3, "completion_tokens": 5}
    usage["completion_tokens_details"] = {"reasoning_tokens": 2}
    serving.observe_done("m", "/v1/chat/completions", 200, usage, ttft=0.1, e2e=0.4)
    serving.in_flight.labels("m").set(0)
    names = {s.name for fam in serving.registry.collect() for s in fam.samples}
    return names | pools_prom.EXPORTED_NAMES | training_prom.EXPORTED_NAMES


def unknown_metrics(dashboard: dict, known: set[str]) -> dict[str, set[str]]:
    """Per panel (or variable), the metric names it queries that `known` lacks; a panel
    without a query counts too."""
    bad = {}
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            continue
        used = set().union(*(metric_names(t["expr"]) for t in panel.get("targets", [])))
        if not used or used - known:
            bad[panel["title"]] = used - known or {"<no metric>"}
    for var in dashboard["templating"]["list"]:
        if var["type"] == "query":
            q = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
            if variable_query_metrics(q) - known:
                bad["$" + var["name"]] = variable_query_metrics(q) - known
    return bad


@pytest.fixture(scope="module")
def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        (
            'histogram_quantile(0.9, sum by (le, model) (rate(x_bucket{model=~"$model",'
            ' a="b{c}"}[$__rate_interval])))',
            {"x_bucket"},
        ),
        ("sum without (instance) (a) / on (job) group_left (pool) b offset 5m", {"a", "b"}),
        ("a and b unless c or bool_metric > bool 2", {"a", "b", "c", "bool_metric"}),
        ("max_over_time(x:rate5m[1h:5m]) * 1e3 - inf", {"x:rate5m"}),
        ("sum(increase(y_total[$__range])) / count(up)", {"y_total", "up"}),
        ('label_replace(z, "dst", "$1", "src", "(.*)")', {"z"}),
        ("sum(rate(a_bucket[5m])) by (le) > on() group_right() topk(3, b)", {"a_bucket", "b"}),
    ],
)
def test_tokenizer_extracts_only_metric_names(expr, names):
    assert metric_names(expr) == names


def test_variable_queries_name_their_metric():
    assert variable_query_metrics("label_values(r1p_requests_total, model)") == {
        "r1p_requests_total"
    }
    assert variable_query_metrics('label_values(m{job="x"}, pool)') == {"m"}
    assert variable_query_metrics("label_values(job)") == set()


def test_a_misspelt_metric_is_caught(dashboard):
    broken = json.loads(json.dumps(dashboard))
    target = next(p for p in broken["panels"] if p["title"] == "Tokens per second")["targets"][0]
    target["expr"] = target["expr"].replace("r1p_tokens_total", "r1p_token_total")
    assert unknown_metrics(broken, exported()) == {"Tokens per second": {"r1p_token_total"}}


def test_every_panel_queries_only_exported_metrics(dashboard):
    assert unknown_metrics(dashboard, exported()) == {}


def test_the_required_views_are_there(dashboard):
    used = set()
    for panel in dashboard["panels"]:
        for t in panel.get("targets", []):
            used |= metric_names(t["expr"])
    quantiled = " ".join(
        t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])
    )  # fmt: skip
    for bucket in ("r1p_time_to_first_token_seconds_bucket", "r1p_request_duration_seconds_bucket"):
        assert re.search(
            rf"histogram_quantile\([^,]+, sum by \(le[^)]*\) \(rate\({bucket}", quantiled
        )
    assert re.search(r"rate\(r1p_tokens_total", quantiled)
    required = {
        "r1p_requests_total",
        "r1p_controller_replicas",
        "r1p_controller_gpus_lent_total",
        "r1p_controller_gpus_reclaimed_total",
    }
    grpo = ("r1p_grpo_reward", "r1p_grpo_accuracy", "r1p_grpo_eval_accuracy")
    grpo_series = {n for n in training_prom.EXPORTED_NAMES if n.endswith(grpo)}
    assert len(grpo_series) == len(grpo)
    assert required <= used and grpo_series <= used
    assert any("r1p_grpo_step_seconds" in n for n in used)


def test_panels_use_the_datasource_variable(dashboard):
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert 36 <= dashboard["schemaVersion"] <= 41 and dashboard["uid"]
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs)), panel["title"]
        assert all(t["datasource"]["uid"] == "${datasource}" for t in panel["targets"])
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]


def documented_section() -> str:
    readme = (ROOT / "README.md").read_text()
    m = re.search(r"^## Metrics\n(.*?)(?=^## )", readme, re.S | re.M)
    assert m, "README has no '## Metrics' section"
    return m.group(1)


def test_readme_documents_every_exported_metric():
    section = documented_section()
    base = {re.sub(r"_(bucket|sum|count|created)$", "", n) for n in exported()}
    base = {n for n in base if n.startswith(("r1p_", "ray_r1p_"))}
    missing = sorted(n for n in base if f"`{n}" not in section)
    assert missing == []
