"""Write helm/stream/values.schema.json: the chart's values, with `config` the JSON schema of stream's settings.

    .venv/bin/python helm/generate_values_schema.py           # rewrite the file
    .venv/bin/python helm/generate_values_schema.py --check   # exit 1 if the committed file is stale

`config` is ``stream.settings.Settings.model_json_schema()``: the same tree as examples/stream.yaml, so a
wrong or unknown key fails `helm install` / `helm template` with its path. The settings' ``$defs`` move
to the root of the document, where their ``#/$defs/...`` references point. No ``$schema`` keyword:
Helm 3's and Helm 4's validators both read the document as their default draft. The rest of the chart's values
are described below, by hand; keep them in step with helm/stream/values.yaml (tests/ops checks both).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

SCHEMA_PATH = Path(__file__).resolve().parent / "stream" / "values.schema.json"


def _obj(properties: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """A closed object: unknown keys are typos."""
    return {"type": "object", "additionalProperties": False, "properties": properties, **extra}


STRING = {"type": "string"}
BOOL = {"type": "boolean"}
MAP = {"type": "object"}
STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
LIST = {"type": "array"}
OBJECT_LIST = {"type": "array", "items": {"type": "object"}}
COUNT = {"type": "integer", "minimum": 0}
POSITIVE = {"type": "integer", "minimum": 1}
INT_OR_PERCENT = {"anyOf": [{"type": "integer", "minimum": 0}, {"type": "string", "pattern": "^[0-9]+%$"}]}
DURATION = {"type": "string", "pattern": "^([0-9]+(ms|s|m|h))+$"}
ANTI_AFFINITY = {"type": "string", "enum": ["soft", "hard", "none"]}
PROBE = _obj({"initialDelaySeconds": COUNT, "periodSeconds": POSITIVE, "timeoutSeconds": POSITIVE,
              "successThreshold": POSITIVE, "failureThreshold": POSITIVE})
PDB = _obj({"enabled": BOOL, "maxUnavailable": INT_OR_PERCENT})
SCHEDULING = {
    "podAntiAffinity": ANTI_AFFINITY, "affinity": MAP, "nodeSelector": STRING_MAP, "tolerations": OBJECT_LIST,
    "topologySpreadConstraints": OBJECT_LIST, "priorityClassName": STRING, "podAnnotations": STRING_MAP,
    "podLabels": STRING_MAP,
}

CHART_VALUES: dict[str, Any] = {
    # set by a parent chart when this one is a dependency
    "global": MAP,
    "nameOverride": STRING,
    "fullnameOverride": STRING,
    "image": _obj({"repository": {"type": "string", "minLength": 1}, "tag": STRING,
                   "pullPolicy": {"type": "string", "enum": ["Always", "IfNotPresent", "Never"]}}),
    "imagePullSecrets": OBJECT_LIST,
    "serviceAccount": _obj({"create": BOOL, "name": STRING, "annotations": STRING_MAP,
                            "automountServiceAccountToken": BOOL}),
    "existingSecret": STRING,
    "admin": _obj({"generateToken": BOOL}),
    "extraEnv": OBJECT_LIST,
    "extraEnvFrom": OBJECT_LIST,
    "podSecurityContext": MAP,
    "securityContext": MAP,
    "worker": _obj({
        "replicas": COUNT,
        "podManagementPolicy": {"type": "string", "enum": ["Parallel", "OrderedReady"]},
        "terminationGraceMarginSeconds": COUNT,
        "resources": MAP,
        "persistence": _obj({"enabled": BOOL, "size": {"type": "string", "minLength": 1}, "storageClassName": STRING,
                             "accessModes": {"type": "array", "items": STRING, "minItems": 1},
                             "annotations": STRING_MAP}),
        **SCHEDULING,
        "startupProbe": PROBE, "livenessProbe": PROBE, "readinessProbe": PROBE,
        "pdb": PDB,
        "service": _obj({"annotations": STRING_MAP}),
    }),
    "ingest": _obj({
        "separate": BOOL,
        "replicas": COUNT,
        "terminationGraceMarginSeconds": COUNT,
        "resources": MAP,
        **SCHEDULING,
        "startupProbe": PROBE, "livenessProbe": PROBE, "readinessProbe": PROBE,
        "pdb": PDB,
    }),
    "api": _obj({
        "enabled": BOOL,
        "replicas": COUNT,
        "processes": {"type": "integer", "minimum": 1, "maximum": 64},   # stream api --processes
        "resources": MAP,
        "service": _obj({"type": {"type": "string", "enum": ["ClusterIP", "NodePort", "LoadBalancer"]},
                         "port": {"type": "integer", "minimum": 1, "maximum": 65535}, "annotations": STRING_MAP}),
        "autoscaling": _obj({"enabled": BOOL, "minReplicas": POSITIVE, "maxReplicas": POSITIVE,
                             "targetCPUUtilizationPercentage": {"type": "integer", "minimum": 1, "maximum": 100}}),
        "pdb": PDB,
        "terminationGracePeriodSeconds": COUNT,
        "preStopSleepSeconds": COUNT,
        **SCHEDULING,
        "livenessProbe": PROBE, "readinessProbe": PROBE,
    }),
    "metrics": _obj({
        "serviceMonitor": _obj({"enabled": BOOL, "interval": DURATION, "scrapeTimeout": DURATION,
                                "labels": STRING_MAP}),
        "prometheusRule": _obj({"enabled": BOOL, "labels": STRING_MAP, "runbookUrl": STRING}),
        "dashboard": _obj({"enabled": BOOL, "labels": STRING_MAP, "annotations": STRING_MAP}),
    }),
}


def values_schema() -> dict[str, Any]:
    from stream.settings import Settings

    settings = Settings.model_json_schema()
    defs = settings.pop("$defs")
    settings["description"] = ("stream.yaml: the settings tree of examples/stream.yaml (stream/settings.py); "
                               "every key is in docs/CONFIG.md.")
    return {
        "title": "stream chart values",
        **_obj({"config": settings, **CHART_VALUES}),
        "$defs": defs,
    }


def render() -> str:
    return json.dumps(values_schema(), indent=2, sort_keys=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        if SCHEMA_PATH.read_text() != text:
            print(f"{SCHEMA_PATH} is stale: run python helm/generate_values_schema.py", file=sys.stderr)
            return 1
        return 0
    SCHEMA_PATH.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
