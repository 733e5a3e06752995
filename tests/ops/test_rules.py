"""The alert rules: promtool accepts them, its unit tests pass, and every runbook_url has its section."""

from __future__ import annotations

import re

import yaml

from tests.ops.conftest import OPS_TESTS, ROOT, RULES, run, tool

ALERTS = ["StreamExportBehind", "StreamExportDestinationFailing", "StreamExportStalled", "StreamExportDataLost",
          "StreamDeadLetterRateHigh", "StreamConsumerLagGrowing", "StreamProducerClockAhead",
          "StreamIdentityJournalNotPruned", "StreamWorkerDown", "StreamApiDown", "StreamApiErrorRateHigh",
          "StreamImportFilesFailing", "StreamImportStuck", "StreamAdminTokenGuessed", "StreamCohortSyncLate",
          "StreamCohortSyncFailing", "StreamMirrorMutationsWaiting"]


def _rules() -> list[dict]:
    return [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]


def test_promtool_checks_the_rules_file():
    out = run(tool("promtool"), "check", "rules", str(RULES)).stdout
    assert f"SUCCESS: {len(ALERTS)} rules found" in out


def test_promtool_unit_tests_pass():
    proc = run(tool("promtool"), "test", "rules", str(OPS_TESTS / "promtool" / "stream-alerts.test.yaml"))
    assert "SUCCESS" in proc.stdout and "FAILED" not in proc.stdout


def test_every_alert_is_unit_tested_firing_and_silent():
    tests = yaml.safe_load((OPS_TESTS / "promtool" / "stream-alerts.test.yaml").read_text())["tests"]
    cases = [c for t in tests for c in t["alert_rule_test"]]
    firing = {c["alertname"] for c in cases if c["exp_alerts"]}
    silent = {c["alertname"] for c in cases if not c["exp_alerts"]}
    assert [r["alert"] for r in _rules()] == ALERTS
    assert firing == silent == set(ALERTS)


def test_every_rule_has_severity_component_and_a_runbook_section():
    runbook = (ROOT / "docs" / "runbook.md").read_text()
    # GitHub's anchors: headings lower-cased, punctuation dropped, spaces to hyphens
    anchors = {re.sub(r"[^a-z0-9 _-]", "", h.strip().lower()).replace(" ", "-")
               for h in re.findall(r"^#{1,6} (.+)$", runbook, re.MULTILINE)}
    for rule in _rules():
        assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]
        assert rule["labels"]["component"] in ("worker", "api"), rule["alert"]
        assert set(rule["annotations"]) == {"summary", "description", "runbook_url"}, rule["alert"]
        assert rule["annotations"]["runbook_url"] == f"docs/runbook.md#{rule['alert'].lower()}"
        assert rule["alert"].lower() in anchors, f"docs/runbook.md has no section for {rule['alert']}"
