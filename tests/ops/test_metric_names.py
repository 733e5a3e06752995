"""Every metric the alert rules and the dashboard use is one stream/metrics.py declares, with labels it has."""

from __future__ import annotations

import json
import re

import prometheus_client
import pytest
import yaml

import stream.metrics  # noqa: F401  (registers every metric)
from tests.ops.conftest import CHART, RULES

# labels Prometheus or the Kubernetes service discovery add to every series
TARGET_LABELS = {"namespace", "pod", "instance", "job", "service", "container", "endpoint"}


def _families() -> dict[str, prometheus_client.Metric]:
    return {m.name: m for m in prometheus_client.REGISTRY.collect() if m.name.startswith("stream_")}


def exposed() -> dict[str, set[str]]:
    """Every series name stream exposes, with its label names (counters end in _total, histograms have
    _bucket/_sum/_count)."""
    out: dict[str, set[str]] = {}
    for name, family in _families().items():
        collector = prometheus_client.REGISTRY._names_to_collectors[
            name + ("_total" if family.type == "counter" else "")]
        labels = set(getattr(collector, "_labelnames", ()))
        suffixes = {"counter": ["_total"], "gauge": [""], "histogram": ["_bucket", "_sum", "_count"]}[family.type]
        for s in suffixes:
            out[name + s] = labels | ({"le"} if s == "_bucket" else set())
    return out


def rule_expressions() -> list[str]:
    return [r["expr"] for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]


def dashboard_expressions() -> list[str]:
    dash = json.loads((CHART / "dashboards" / "stream.json").read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    exprs += [v["query"]["query"] for v in dash["templating"]["list"] if isinstance(v.get("query"), dict)]
    return exprs


def names_in(expr: str) -> set[str]:
    return set(re.findall(r"\bstream_[a-z_]+\b", expr))


def test_the_registry_is_what_the_rules_and_dashboard_are_checked_against():
    names = exposed()
    assert "stream_ingest_events_total" in names and "stream_http_request_duration_seconds_bucket" in names
    assert names["stream_export_events_total"] == {"destination"}
    assert names["stream_http_request_duration_seconds_bucket"] == {"route", "le"}


@pytest.mark.parametrize("source", ["rules", "dashboard"])
def test_every_metric_used_exists(source):
    exprs = rule_expressions() if source == "rules" else dashboard_expressions()
    used = set().union(*map(names_in, exprs))
    assert used and used <= set(exposed()), f"not declared in stream/metrics.py: {sorted(used - set(exposed()))}"


@pytest.mark.parametrize("source", ["rules", "dashboard"])
def test_every_grouping_label_belongs_to_the_metrics_of_its_expression(source):
    names = exposed()
    for expr in rule_expressions() if source == "rules" else dashboard_expressions():
        allowed = TARGET_LABELS.union(*(names[n] for n in names_in(expr)))
        for group in re.findall(r"\b(?:by|on)\s*\(([^)]*)\)", expr):
            labels = {label.strip() for label in group.split(",") if label.strip()}
            assert labels <= allowed, f"{expr}: {sorted(labels - allowed)}"


def test_the_dashboard_shows_every_metric_stream_declares():
    used = set().union(*map(names_in, dashboard_expressions()))
    families = {name for name in exposed() if not name.endswith(("_sum", "_count"))}
    assert families <= used, f"no panel shows {sorted(families - used)}"


def test_dashboard_panels_are_well_formed():
    dash = json.loads((CHART / "dashboards" / "stream.json").read_text())
    panels = dash["panels"]
    assert len(panels) == 56 and [p["title"] for p in panels if p["type"] == "row"] == [
        "Pipeline", "Identity", "Export", "HTTP API", "Import", "Cohorts", "Mirror", "Profiles", "Access", "Targets"]
    assert len({p["id"] for p in panels}) == len(panels)
    cells = set()
    for p in panels:
        g = p["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24, p["title"]
        area = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert cells.isdisjoint(area), f"{p['title']} overlaps another panel"
        cells |= area
        if p["type"] != "row":
            assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
            assert p["description"] and p["targets"]
            assert len({t["refId"] for t in p["targets"]}) == len(p["targets"])
    assert [v["name"] for v in dash["templating"]["list"]] == ["datasource", "namespace", "destination"]
