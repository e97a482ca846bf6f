"""config/grafana-dashboard.json plots only metrics the daemon exports, with their labels."""

import json
import re
from pathlib import Path

from prometheus_client import Counter, Gauge, Histogram

from gateway import metrics

DASHBOARD = Path(__file__).resolve().parent.parent / "config" / "grafana-dashboard.json"

_QUOTED = re.compile(r'"(?:[^"\\]|\\.)*"')
_METRIC = re.compile(r"\b(payam_[a-zA-Z0-9_]+)\b(\s*\{([^}]*)\})?")
_MATCHER = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)")
_GROUPING = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")
_LABEL_VALUES = re.compile(r"label_values\(\s*(payam_[a-zA-Z0-9_]+)\s*,\s*(\w+)\s*\)")


def exported():
    """{name as scraped: its label names} for every metric of gateway.metrics."""
    names = {}
    for value in vars(metrics).values():
        if not isinstance(value, (Counter, Gauge, Histogram)):
            continue
        (family,) = value.describe()
        labels = set(value._labelnames)
        if isinstance(value, Counter):
            names[family.name + "_total"] = labels
        elif isinstance(value, Histogram):
            for suffix in ("_bucket", "_count", "_sum"):
                names[family.name + suffix] = labels | ({"le"} if suffix == "_bucket" else set())
        else:
            names[family.name] = labels
    return names


def expressions(dashboard):
    """Every PromQL expression: panel targets (rows nest panels) and query variables."""
    found = []

    def walk(panels):
        for panel in panels:
            found.extend((panel["title"], t["expr"]) for t in panel.get("targets", ()))
            walk(panel.get("panels", ()))

    walk(dashboard["panels"])
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]
            found.append((variable["name"], query["query"] if isinstance(query, dict) else query))
    return found


def test_exported_names_are_what_prometheus_scrapes():
    names = exported()
    assert "payam_messages_accepted_total" in names
    assert names["payam_store_commit_seconds_bucket"] == {"le"}
    assert names["payam_bound_sessions"] == {"operator"}


def test_every_metric_and_label_the_dashboard_names_exists():
    names = exported()
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    exprs = expressions(dashboard)
    assert len(exprs) >= 15
    for where, expr in exprs:
        for metric, labels in _LABEL_VALUES.findall(expr):
            assert metric in names and labels in names[metric], f"{where}: {expr}"
        bare = _QUOTED.sub('""', expr)           # label values may hold anything
        used = _METRIC.findall(bare)
        assert used, f"{where}: no payam_ metric in {expr!r}"
        in_scope = set()
        for metric, _braces, matchers in used:
            assert metric in names, f"{where}: {metric} is not exported by gateway/metrics.py"
            for label in _MATCHER.findall(matchers):
                assert label in names[metric], f"{where}: {metric} has no label {label!r}"
            in_scope |= names[metric]
        for grouping in _GROUPING.findall(bare):
            for label in filter(None, (part.strip() for part in grouping.split(","))):
                assert label in in_scope, f"{where}: no metric of {expr!r} has {label!r}"


def test_the_dashboard_covers_the_main_signals():
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    text = " ".join(expr for _where, expr in expressions(dashboard))
    for metric in ("payam_messages_accepted_total", "payam_submit_sm_resp_total",
                   "payam_receipts_total", "payam_bound_sessions", "payam_dispatch_buffer",
                   "payam_http_requests_total", "payam_store_commit_seconds_bucket",
                   # issue 11 item 8
                   "payam_messages_status_total", "payam_queued_parts",
                   "payam_oldest_queued_seconds", "payam_window_in_flight",
                   "payam_window_size", "payam_http_request_seconds_bucket"):
        assert metric in text, metric
