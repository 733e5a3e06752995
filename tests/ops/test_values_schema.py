"""values.schema.json: generated from the settings tree, and the chart's own values.yaml satisfies it."""

from __future__ import annotations

import importlib.util
import json

import jsonschema
import yaml

from stream.settings import Settings
from tests.ops.conftest import CHART, ROOT, VALUE_SETS


def _generator():
    spec = importlib.util.spec_from_file_location("generate_values_schema", ROOT / "helm" / "generate_values_schema.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_schema_is_the_generated_one():
    committed = (CHART / "values.schema.json").read_text()
    assert committed == _generator().render(), "stale: run .venv/bin/python helm/generate_values_schema.py"


def test_config_is_the_settings_schema():
    schema = json.loads((CHART / "values.schema.json").read_text())
    settings = Settings.model_json_schema()
    assert schema["$defs"] == settings["$defs"]
    assert schema["properties"]["config"]["properties"] == settings["properties"]
    assert schema["properties"]["config"]["additionalProperties"] is False


def test_values_yaml_and_every_test_value_set_satisfy_the_schema():
    schema = json.loads((CHART / "values.schema.json").read_text())
    validator = jsonschema.Draft202012Validator(schema)
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    assert list(validator.iter_errors(defaults)) == []
    for path in filter(None, VALUE_SETS.values()):
        assert list(validator.iter_errors(yaml.safe_load(path.read_text()))) == [], path.name


def test_schema_describes_every_top_level_value():
    schema = json.loads((CHART / "values.schema.json").read_text())
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    assert set(defaults) == set(schema["properties"]) - {"global"}
    for section in ("worker", "ingest", "api", "metrics", "serviceAccount", "image"):
        assert set(defaults[section]) == set(schema["properties"][section]["properties"]), section
