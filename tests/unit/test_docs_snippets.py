"""Every YAML and JSON snippet of README.md and docs/*.md loads the way the product (or the tool it is for) would.

A fenced block marked ``yaml``/``yml``/``json``, and an unmarked one that reads as a mapping of settings or a
converter configuration, is one snippet. What it is follows from its top-level keys:

* settings (keys of the settings tree): through ``load_settings``; a fragment is completed with the least a
  full configuration needs (the projects and destinations its keys refer to), never overriding what it says;
* Helm values (keys of the chart's values.schema.json): validated against the schema, and its ``config`` loaded
  as settings;
* a converter configuration (``converterConfig``): compiled by the converter compiler;
* Prometheus scrape configuration (``scrape_configs``): its jobs and relabel rules have Prometheus's keys;
* any other JSON: parsed (a request or response body).

A YAML snippet of no known kind fails: say here what it is, so that it is loaded as it is used.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from stream.imports.converter import parse_converter_config
from stream.settings import ConfigError, Settings, load_settings

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SCHEMA = ROOT / "helm" / "stream" / "values.schema.json"
SCRAPE_KEYS = {"job_name", "scrape_interval", "scrape_timeout", "metrics_path", "scheme", "params", "honor_labels",
               "honor_timestamps", "static_configs", "kubernetes_sd_configs", "relabel_configs",
               "metric_relabel_configs", "basic_auth", "authorization", "tls_config", "bearer_token_file"}
RELABEL_KEYS = {"source_labels", "separator", "regex", "modulus", "target_label", "replacement", "action"}
RELABEL_ACTIONS = {"replace", "keep", "drop", "keepequal", "dropequal", "hashmod", "labelmap", "labeldrop",
                   "labelkeep", "lowercase", "uppercase"}
FENCE = re.compile(r"^(?P<indent>[ \t]*)```(?P<lang>[\w+-]*)[ \t]*$")


@dataclass(frozen=True)
class Snippet:
    path: Path
    line: int        # the line of the opening fence, 1-based
    lang: str
    text: str

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def snippets(path: Path) -> list[Snippet]:
    """The fenced blocks of a Markdown file, their indentation (a block inside a list item) removed."""
    out, lines, i = [], path.read_text().splitlines(), 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if m is None:
            i += 1
            continue
        indent, start, body = len(m["indent"]), i, []
        i += 1
        while i < len(lines) and not re.match(r"^[ \t]*```[ \t]*$", lines[i]):
            body.append(lines[i][indent:] if lines[i][:indent].strip() == "" else lines[i])
            i += 1
        out.append(Snippet(path, start + 1, m["lang"].lower(), "\n".join(body) + "\n"))
        i += 1
    return out


def parsed(s: Snippet) -> Any:
    return json.loads(s.text) if s.lang == "json" else yaml.safe_load(s.text)


def kind(s: Snippet) -> str | None:
    """What a snippet is (see the module docstring); None for an unmarked block that is not one of them."""
    try:
        value = parsed(s)
    except (ValueError, yaml.YAMLError):
        if s.lang in ("yaml", "yml", "json"):
            return "broken"
        return None   # an unmarked block of text: a diagram, a command, a key layout
    if isinstance(value, dict) and value:
        keys = set(value)
        if keys <= set(Settings.model_fields):
            return "settings"
        if "converterConfig" in keys:
            return "converter"
        if keys <= set(json.loads(SCHEMA.read_text())["properties"]):
            return "helm_values"
        if "scrape_configs" in keys:
            return "prometheus"
    if s.lang == "json":
        return "json"
    return "unknown" if s.lang in ("yaml", "yml") else None


ALL = [s for path in DOCS for s in snippets(path) if kind(s) is not None]


def completed(doc: dict[str, Any]) -> dict[str, Any]:
    """A settings fragment with what a full configuration needs and the fragment leaves out: the projects its
    sources, destinations and cohorts name, when it has no ``projects`` of its own. Nothing it sets changes."""
    doc = dict(doc)
    named = {x["project"] for section in ("sources", "destinations", "cohorts") for x in doc.get(section) or []
             if isinstance(x, dict) and "project" in x}
    if "projects" not in doc:
        doc["projects"] = [{"id": p} for p in sorted(named)]
    return doc


def load(s: Snippet, doc: dict[str, Any], tmp_path: Path) -> Settings:
    f = tmp_path / "stream.yaml"
    f.write_text(yaml.safe_dump(completed(doc)))
    try:
        return load_settings(f)
    except ConfigError as exc:
        pytest.fail(f"{s.where}: the settings snippet does not load: {exc}", pytrace=False)


@pytest.mark.parametrize("snippet", ALL, ids=[s.where for s in ALL])
def test_the_snippet_loads_as_the_product_loads_it(snippet: Snippet, tmp_path: Path) -> None:
    what = kind(snippet)
    assert what != "broken", f"{snippet.where}: a {snippet.lang} block that is not valid YAML/JSON"
    assert what != "unknown", f"{snippet.where}: a YAML block of no known kind: say in this test what it is"
    doc = parsed(snippet)
    if what == "settings":
        load(snippet, doc, tmp_path)
    elif what == "converter":
        parse_converter_config(doc)
    elif what == "helm_values":
        errors = [f"{'.'.join(map(str, e.absolute_path))}: {e.message}"
                  for e in jsonschema.Draft202012Validator(json.loads(SCHEMA.read_text())).iter_errors(doc)]
        assert errors == [], f"{snippet.where}: the values do not satisfy the chart's schema"
        if "config" in doc:
            load(snippet, doc["config"], tmp_path)
    elif what == "prometheus":
        # promtool as Debian builds it has no Kubernetes discovery, so the shape is checked here
        for job in doc["scrape_configs"]:
            assert isinstance(job.get("job_name"), str), f"{snippet.where}: a scrape config without a job_name"
            assert set(job) <= SCRAPE_KEYS, f"{snippet.where}: not Prometheus scrape keys: {set(job) - SCRAPE_KEYS}"
            for rule in job.get("relabel_configs", []) + job.get("metric_relabel_configs", []):
                assert set(rule) <= RELABEL_KEYS and rule.get("action", "replace") in RELABEL_ACTIONS, \
                    f"{snippet.where}: not a Prometheus relabel rule: {rule}"


BODY = re.compile(r"""(?:-d|--data(?:-raw|-binary)?)\s+'([^']*)'""")
BODIES = [(s, m.group(1)) for path in DOCS for s in snippets(path) if s.lang in ("sh", "bash", "")
          for m in BODY.finditer(s.text) if m.group(1).lstrip().startswith(("{", "["))]


@pytest.mark.parametrize("snippet,body", BODIES, ids=[f"{s.where}#{i}" for i, (s, _) in enumerate(BODIES)])
def test_a_json_body_in_a_command_parses(snippet: Snippet, body: str) -> None:
    try:
        json.loads(body)
    except ValueError as exc:
        pytest.fail(f"{snippet.where}: the JSON body of a command does not parse ({exc}): {body}", pytrace=False)


def test_the_docs_have_snippets_of_each_kind_the_product_reads() -> None:
    kinds = {kind(s) for s in ALL}
    assert {"settings", "helm_values", "prometheus"} <= kinds
    assert len(BODIES) >= 2
    assert any(s.where.startswith("docs/imports.md") for s in ALL if kind(s) == "settings")


def test_a_converter_with_its_arguments_out_of_order_fails_the_settings_snippet(tmp_path: Path) -> None:
    """The check sees what a user would: the converter of a source snippet is compiled when it loads."""
    doc = {"sources": [{"name": "clicks", "project": 424242, "bucket": "acme-events", "converter": {
        "converterConfig": {"convertToAmplitudeFunc": {"time": ["parse_time_to_ms", "ts", "yyyy-MM-dd HH:mm:ss"]}}}}]}
    with pytest.raises(pytest.fail.Exception) as err:
        load(Snippet(ROOT / "docs" / "imports.md", 1, "yaml", ""), doc, tmp_path)
    assert "date pattern 'ts': letter 't' is not supported" in str(err.value)


def test_the_converter_error_docs_imports_md_quotes_is_the_one_the_loader_gives(tmp_path: Path) -> None:
    text = (ROOT / "docs" / "imports.md").read_text()
    quoted = re.search(r"with the path and the\s+operator \(`([^`]*)`\)", text)
    assert quoted is not None, "docs/imports.md no longer quotes the loader's error for a misspelt operator"
    (example,) = [s for s in snippets(ROOT / "docs" / "imports.md") if kind(s) == "settings"]
    doc = parsed(example)
    doc["sources"][0]["converter"]["converterConfig"]["convertToAmplitudeFunc"]["time"][0] = "parse_tme_to_ms"
    with pytest.raises(pytest.fail.Exception) as err:
        load(example, doc, tmp_path)
    head, _, tail = " ".join(quoted.group(1).split()).partition(" ... ")
    assert head in str(err.value) and tail in str(err.value), (quoted.group(1), str(err.value))
