"""The Helm chart, rendered by a real helm: object counts, the facts operators rely on, valid manifests."""

from __future__ import annotations

import math
import os

import jsonschema
import kubernetes_validate
import pytest
import yaml

from stream.settings import load_settings
from tests.ops.conftest import CHART, RULES, VALUE_SETS, render, run, tool

# Kubernetes versions whose schemas (bundled by kubernetes-validate) every built-in object must satisfy:
# the chart's floor (Chart.yaml kubeVersion >=1.25), a common one and the newest bundled.
KUBERNETES_VERSIONS = ("1.25", "1.29", "1.37")

EXPECTED_KINDS = {
    "default": {"ConfigMap": 1, "Deployment": 1, "HorizontalPodAutoscaler": 1, "PodDisruptionBudget": 2,
                "Secret": 1, "Service": 2, "ServiceAccount": 1, "StatefulSet": 1},
    "irsa-servicemonitor": {"ConfigMap": 2, "Deployment": 1, "HorizontalPodAutoscaler": 1, "PodDisruptionBudget": 2,
                            "PrometheusRule": 1, "Secret": 1, "Service": 2, "ServiceAccount": 1, "ServiceMonitor": 2,
                            "StatefulSet": 1},
    "split-stages-existing-secret": {"ConfigMap": 1, "Deployment": 1, "PodDisruptionBudget": 2, "PrometheusRule": 1,
                                     "Service": 2, "ServiceAccount": 1, "ServiceMonitor": 1, "StatefulSet": 1},
}
EXPECTED_NAMES = {
    "default": ["ConfigMap/stream-config", "Deployment/stream-api", "HorizontalPodAutoscaler/stream-api",
                "PodDisruptionBudget/stream-api", "PodDisruptionBudget/stream-worker", "Secret/stream-admin",
                "Service/stream-api", "Service/stream-worker", "ServiceAccount/stream", "StatefulSet/stream-worker"],
    "irsa-servicemonitor": ["ConfigMap/stream-config", "ConfigMap/stream-dashboard", "Deployment/stream-api",
                            "HorizontalPodAutoscaler/stream-api", "PodDisruptionBudget/stream-api",
                            "PodDisruptionBudget/stream-worker", "PrometheusRule/stream", "Secret/stream-admin",
                            "Service/stream-api",
                            "Service/stream-worker", "ServiceAccount/stream", "ServiceMonitor/stream-api",
                            "ServiceMonitor/stream-worker", "StatefulSet/stream-worker"],
    "split-stages-existing-secret": ["ConfigMap/stream-config", "Deployment/stream-ingest",
                                     "PodDisruptionBudget/stream-ingest", "PodDisruptionBudget/stream-worker",
                                     "PrometheusRule/stream", "Service/stream-ingest", "Service/stream-worker",
                                     "ServiceAccount/stream", "ServiceMonitor/stream-worker",
                                     "StatefulSet/stream-worker"],
}


def test_each_value_set_renders_exactly_its_objects(rendered):
    assert rendered.kinds() == EXPECTED_KINDS[rendered.name]
    assert sorted(f"{d['kind']}/{d['metadata']['name']}" for d in rendered.docs) == EXPECTED_NAMES[rendered.name]
    assert {d["metadata"].get("namespace") for d in rendered.docs} == {None}   # helm sets it at install


def test_the_only_secret_rendered_is_the_generated_admin_token(rendered):
    import base64
    secrets = rendered.of_kind("Secret")
    if rendered.name == "split-stages-existing-secret":
        assert secrets == []
    else:
        (admin,) = secrets
        assert admin["metadata"]["name"] == "stream-admin"
        assert admin["metadata"]["annotations"] == {"helm.sh/resource-policy": "keep"}
        assert list(admin["data"]) == ["STREAM_ADMIN__TOKEN"]
        token = base64.b64decode(admin["data"]["STREAM_ADMIN__TOKEN"]).decode()
        assert len(token) == 40 and token.isalnum()
    text = yaml.safe_dump_all(rendered.docs)
    assert "sasl_password" not in text and "AWS_SECRET_ACCESS_KEY" not in text


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_builtin_object_satisfies_the_kubernetes_schema(rendered, version):
    builtin = [d for d in rendered.docs if d["apiVersion"] != "monitoring.coreos.com/v1"]
    for doc in builtin:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{doc['kind']}/{doc['metadata']['name']} against Kubernetes {version}: "
                        f"{'.'.join(map(str, exc.path))}: {exc.message}")


# kubernetes-validate knows only built-in kinds. The Prometheus Operator's CRDs are checked against the part of
# their schema the chart uses (field names and types as in monitoring.coreos.com/v1), closed to unknown fields,
# so a misspelt field fails here as it would at `kubectl apply`.
_LABELS = {"type": "object", "additionalProperties": {"type": "string"}}
_METADATA = {"type": "object", "required": ["name", "labels"], "additionalProperties": False,
             "properties": {"name": {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", "maxLength": 63},
                            "labels": _LABELS, "annotations": _LABELS}}
SERVICE_MONITOR = {
    "type": "object", "required": ["apiVersion", "kind", "metadata", "spec"], "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"}, "kind": {"const": "ServiceMonitor"}, "metadata": _METADATA,
        "spec": {"type": "object", "required": ["selector", "endpoints"], "additionalProperties": False, "properties": {
            "namespaceSelector": {"type": "object", "additionalProperties": False,
                                  "properties": {"matchNames": {"type": "array", "items": {"type": "string"}}}},
            "selector": {"type": "object", "additionalProperties": False, "properties": {
                "matchLabels": _LABELS,
                "matchExpressions": {"type": "array", "items": {
                    "type": "object", "required": ["key", "operator"], "additionalProperties": False,
                    "properties": {"key": {"type": "string"}, "operator": {"enum": ["In", "NotIn", "Exists",
                                                                                    "DoesNotExist"]},
                                   "values": {"type": "array", "items": {"type": "string"}}}}}}},
            "endpoints": {"type": "array", "minItems": 1, "items": {
                "type": "object", "required": ["port"], "additionalProperties": False, "properties": {
                    "port": {"type": "string"}, "path": {"type": "string"},
                    "interval": {"type": "string", "pattern": "^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?"
                                                              "(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"},
                    "scrapeTimeout": {"type": "string"},
                    "relabelings": {"type": "array", "items": {
                        "type": "object", "additionalProperties": False, "properties": {
                            "action": {"enum": ["replace", "keep", "drop", "labelmap", "labeldrop", "labelkeep"]},
                            "targetLabel": {"type": "string"}, "replacement": {"type": "string"},
                            "sourceLabels": {"type": "array"}, "regex": {"type": "string"}}}}}}}}}}}
PROMETHEUS_RULE = {
    "type": "object", "required": ["apiVersion", "kind", "metadata", "spec"], "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"}, "kind": {"const": "PrometheusRule"}, "metadata": _METADATA,
        "spec": {"type": "object", "required": ["groups"], "additionalProperties": False, "properties": {
            "groups": {"type": "array", "items": {
                "type": "object", "required": ["name", "rules"], "additionalProperties": False, "properties": {
                    "name": {"type": "string", "minLength": 1},
                    "rules": {"type": "array", "items": {
                        "type": "object", "required": ["alert", "expr"], "additionalProperties": False,
                        "properties": {"alert": {"type": "string"}, "expr": {"type": "string"},
                                       "for": {"type": "string"}, "labels": _LABELS,
                                       "annotations": _LABELS}}}}}}}}}}


def test_operator_objects_satisfy_their_crd_fields(rendered):
    for doc in rendered.of_kind("ServiceMonitor"):
        jsonschema.Draft202012Validator(SERVICE_MONITOR).validate(doc)
    for doc in rendered.of_kind("PrometheusRule"):
        jsonschema.Draft202012Validator(PROMETHEUS_RULE).validate(doc)


def test_rendered_stream_yaml_is_a_valid_settings_tree(rendered, tmp_path, monkeypatch):
    for key in [k for k in os.environ if k.startswith("STREAM_")]:
        monkeypatch.delenv(key)
    (cm,) = [d for d in rendered.of_kind("ConfigMap") if d["metadata"]["name"] == "stream-config"]
    path = tmp_path / "stream.yaml"
    path.write_text(cm["data"]["stream.yaml"])
    settings = load_settings(path)
    expected = {
        "default": {"bootstrap": "kafka-bootstrap:9092", "data_dir": "/var/lib/stream", "port": 9108,
                    "shutdown": 30, "destinations": [], "partitions": 12},
        "irsa-servicemonitor": {"bootstrap": "b-1.msk.example.internal:9094,b-2.msk.example.internal:9094",
                                "data_dir": "/var/lib/stream", "port": 9108, "shutdown": 45.5,
                                "destinations": ["amplitude-raw"], "partitions": 24},
        "split-stages-existing-secret": {"bootstrap": "kafka-0.kafka:9093,kafka-1.kafka:9093,kafka-2.kafka:9093",
                                         "data_dir": "/data/stream", "port": 9200, "shutdown": 30,
                                         "destinations": ["shop-raw", "app-raw"], "partitions": 48},
    }[rendered.name]
    assert settings.kafka.bootstrap_servers == expected["bootstrap"]
    assert str(settings.worker.data_dir) == expected["data_dir"]
    assert settings.worker.http_port == expected["port"]
    assert settings.worker.shutdown_timeout_s == expected["shutdown"]
    assert [d.name for d in settings.destinations] == expected["destinations"]
    assert settings.topics.partitions == expected["partitions"]
    assert settings.kafka.sasl_password is None
    if rendered.name == "irsa-servicemonitor":
        (dest,) = settings.destinations
        assert dest.max_object_bytes == 268435456   # a large integer survives Helm's float64 values
        assert dest.encryption.type == "sse-kms"


def _worker_pod(r):
    return r.one("StatefulSet", "stream-worker")["spec"]["template"]["spec"]


def test_worker_statefulset_keeps_state_on_a_volume_per_pod(rendered):
    sts = rendered.one("StatefulSet", "stream-worker")
    pod = sts["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    data_dir = {"split-stages-existing-secret": "/data/stream"}.get(rendered.name, "/var/lib/stream")
    (claim,) = sts["spec"]["volumeClaimTemplates"]
    assert claim["metadata"]["name"] == "data"
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert claim["spec"]["resources"]["requests"]["storage"] == {
        "default": "20Gi", "irsa-servicemonitor": "50Gi", "split-stages-existing-secret": "100Gi"}[rendered.name]
    assert claim["spec"].get("storageClassName") == {"split-stages-existing-secret": "gp3"}.get(rendered.name)
    assert {m["name"]: m["mountPath"] for m in container["volumeMounts"]} == {
        "config": "/etc/stream", "data": data_dir, "tmp": "/tmp"}
    assert [v["name"] for v in pod["volumes"]] == ["config", "tmp"]      # data comes from the claim template
    assert sts["spec"]["serviceName"] == "stream-worker"
    assert sts["spec"]["replicas"] == {"default": 2, "irsa-servicemonitor": 4,
                                       "split-stages-existing-secret": 6}[rendered.name]
    assert sts["spec"]["podManagementPolicy"] == "Parallel"


def test_worker_probes_ports_args_and_grace_period_follow_the_config(rendered):
    pod = _worker_pod(rendered)
    (container,) = pod["containers"]
    port = {"split-stages-existing-secret": 9200}.get(rendered.name, 9108)
    assert container["ports"] == [{"name": "http", "containerPort": port, "protocol": "TCP"}]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    # split: every stage but ingest, which the ingest Deployment runs; otherwise config.worker.stages (all)
    stages = ["--stages", "dedupe,export,import,cohorts,mirror,profiles"] \
        if rendered.name == "split-stages-existing-secret" else []
    assert container["args"] == ["worker", "-c", "/etc/stream/stream.yaml", *stages]
    # ceil(worker.shutdown_timeout_s) + worker.terminationGraceMarginSeconds (30)
    shutdown = {"irsa-servicemonitor": 45.5}.get(rendered.name, 30)
    assert pod["terminationGracePeriodSeconds"] == math.ceil(shutdown) + 30 == {
        "irsa-servicemonitor": 76}.get(rendered.name, 60)
    service = rendered.one("Service", "stream-worker")["spec"]
    assert service["clusterIP"] == "None" and service["publishNotReadyAddresses"] is True
    assert service["ports"] == [{"name": "http", "port": port, "targetPort": "http", "protocol": "TCP"}]


def test_every_pod_runs_as_non_root_with_a_read_only_root(rendered):
    pods = [d["spec"]["template"]["spec"] for d in rendered.docs if d["kind"] in ("StatefulSet", "Deployment")]
    assert pods
    for pod in pods:
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] == 10001
        assert pod["securityContext"]["fsGroup"] == 10001
        assert pod["automountServiceAccountToken"] is False
        assert pod["serviceAccountName"] == "stream"
        for c in pod["containers"]:
            assert c["securityContext"]["readOnlyRootFilesystem"] is True
            assert c["securityContext"]["allowPrivilegeEscalation"] is False
            assert c["securityContext"]["capabilities"] == {"drop": ["ALL"]}


def test_config_checksum_rolls_every_pod_and_changes_with_the_config(rendered):
    checksums = {d["spec"]["template"]["metadata"]["annotations"]["checksum/config"]
                 for d in rendered.docs if d["kind"] in ("StatefulSet", "Deployment")}
    assert len(checksums) == 1
    others = {render(name).one("StatefulSet", "stream-worker")["spec"]["template"]["metadata"]["annotations"][
        "checksum/config"] for name in VALUE_SETS if name != rendered.name}
    assert checksums.isdisjoint(others)


def test_credentials_come_from_the_existing_secret_or_irsa(rendered):
    containers = [c for d in rendered.docs if d["kind"] in ("StatefulSet", "Deployment")
                  for c in d["spec"]["template"]["spec"]["containers"]]
    env_from = [c.get("envFrom") for c in containers]
    sa = rendered.one("ServiceAccount", "stream")
    if rendered.name == "split-stages-existing-secret":
        assert env_from == [[{"secretRef": {"name": "stream-credentials"}}]] * 2
    else:   # the workers get the admin token; the HTTP API does not need it
        workers = [c.get("envFrom") for d in rendered.of_kind("StatefulSet")
                   for c in d["spec"]["template"]["spec"]["containers"]]
        assert workers == [[{"secretRef": {"name": "stream-admin"}}]]
        assert sorted(env_from, key=str) == sorted([None, [{"secretRef": {"name": "stream-admin"}}]], key=str)
    if rendered.name == "irsa-servicemonitor":
        assert sa["metadata"]["annotations"] == {
            "eks.amazonaws.com/role-arn": "arn:aws:iam::123456789012:role/stream-export"}
    else:
        assert "annotations" not in sa["metadata"]


def test_api_runs_as_an_autoscaled_deployment_behind_a_service(rendered):
    if rendered.name == "split-stages-existing-secret":
        assert [d for d in rendered.docs if d["metadata"]["labels"].get("app.kubernetes.io/component") == "api"] == []
        return
    api = rendered.one("Deployment", "stream-api")
    assert "replicas" not in api["spec"]        # the HPA owns it
    pod = api["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert c["args"] == ["api", "-c", "/etc/stream/stream.yaml", "--host", "0.0.0.0", "--port", "8080"]
    assert c["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert c["lifecycle"] == {"preStop": {"exec": {"command": ["sleep", "5"]}}}
    assert c["resources"]["requests"]["cpu"] == "500m"     # the HPA's utilisation needs a request
    hpa = rendered.one("HorizontalPodAutoscaler", "stream-api")["spec"]
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "stream-api"}
    assert (hpa["minReplicas"], hpa["maxReplicas"], hpa["metrics"][0]["resource"]["target"]["averageUtilization"]) == {
        "default": (2, 10, 70), "irsa-servicemonitor": (3, 12, 60)}[rendered.name]
    assert rendered.one("Service", "stream-api")["spec"]["ports"] == [
        {"name": "http", "port": 8080, "targetPort": "http", "protocol": "TCP"}]
    assert rendered.one("PodDisruptionBudget", "stream-api")["spec"]["maxUnavailable"] == 1


def _api_args(*set_values: str) -> list[str] | str:
    """The API container's args as `helm template` renders them with these --set values (its stderr if it fails)."""
    args = [tool("helm"), "template", "stream", str(CHART), "--namespace", "analytics"]
    for v in set_values:
        args += ["--set", v]
    proc = run(*args, check=False)
    if proc.returncode != 0:
        return proc.stderr
    (api,) = [d for d in yaml.safe_load_all(proc.stdout) if d and d["kind"] == "Deployment"
              and d["metadata"]["name"] == "stream-api"]
    (c,) = api["spec"]["template"]["spec"]["containers"]
    return c["args"]


def test_api_processes_value_runs_that_many_serving_processes_per_pod():
    base = ["api", "-c", "/etc/stream/stream.yaml", "--host", "0.0.0.0", "--port", "8080"]
    assert _api_args("api.processes=1") == base
    assert _api_args("api.processes=4") == [*base, "--processes", "4"]
    refused = _api_args("api.processes=0")
    assert "at '/api/processes': minimum: got 0, want 1" in refused, refused


def test_pod_disruption_budgets_select_their_pods(rendered):
    for pdb in rendered.of_kind("PodDisruptionBudget"):
        component = pdb["metadata"]["name"].removeprefix("stream-")
        target = next(d for d in rendered.docs if d["kind"] in ("StatefulSet", "Deployment")
                      and d["metadata"]["name"] == pdb["metadata"]["name"])
        assert pdb["spec"]["selector"] == target["spec"]["selector"]
        assert target["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"] == component


def test_split_stages_run_ingest_as_a_stateless_deployment():
    r = render("split-stages-existing-secret")
    ingest = r.one("Deployment", "stream-ingest")
    pod = ingest["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert ingest["spec"]["replicas"] == 3
    assert c["args"] == ["worker", "-c", "/etc/stream/stream.yaml", "--stages", "ingest"]
    assert {v["name"]: v.get("emptyDir") for v in pod["volumes"] if v["name"] == "data"} == {"data": {}}
    assert pod["terminationGracePeriodSeconds"] == 60
    assert r.one("Service", "stream-ingest")["spec"]["ports"][0]["port"] == 9200
    anti = _worker_pod(r)["affinity"]["podAntiAffinity"]
    assert list(anti) == ["requiredDuringSchedulingIgnoredDuringExecution"]


def _worker_args(*sets: str) -> list[str] | str:
    """The worker StatefulSet's container args with the split value set and ``--set``s, or helm's error."""
    args = [tool("helm"), "template", "stream", str(CHART), "--values",
            str(VALUE_SETS["split-stages-existing-secret"])]
    for s in sets:
        args += ["--set", s]
    proc = run(*args, check=False)
    if proc.returncode != 0:
        return proc.stderr
    (sts,) = [d for d in yaml.safe_load_all(proc.stdout) if d and d["kind"] == "StatefulSet"]
    (c,) = sts["spec"]["template"]["spec"]["containers"]
    return c["args"]


def test_split_worker_runs_every_stage_of_the_config_but_ingest():
    from stream.settings import WorkerSettings
    base = ["worker", "-c", "/etc/stream/stream.yaml", "--stages"]
    # the chart's list of every stage is the settings' default, in its order
    every = WorkerSettings.model_fields["stages"].default
    assert _worker_args() == [*base, ",".join(s for s in every if s != "ingest")] == [
        *base, "dedupe,export,import,cohorts,mirror,profiles"]
    assert _worker_args("config.worker.stages={ingest,dedupe,cohorts}") == [*base, "dedupe,cohorts"]
    assert _worker_args("ingest.separate=false", "config.worker.stages={ingest,dedupe,cohorts}") == base[:3]
    refused = _worker_args("config.worker.stages={ingest}")
    assert "config.worker.stages names only ingest, and ingest.separate runs it in the ingest Deployment" in refused


def test_service_monitors_name_the_jobs_the_alert_rules_expect(rendered):
    monitors = {m["metadata"]["name"]: m for m in rendered.of_kind("ServiceMonitor")}
    expected = {"default": {}, "irsa-servicemonitor": {"stream-worker": ("stream-worker", ["worker", "ingest"]),
                                                       "stream-api": ("stream-api", ["api"])},
                "split-stages-existing-secret": {"stream-worker": ("stream-worker", ["worker", "ingest"])}}
    assert {name: (m["spec"]["endpoints"][0]["relabelings"][0]["replacement"],
                   m["spec"]["selector"]["matchExpressions"][0]["values"]) for name, m in monitors.items()} == \
        expected[rendered.name]
    for m in monitors.values():
        assert m["spec"]["namespaceSelector"] == {"matchNames": ["analytics"]}
        assert m["spec"]["endpoints"][0]["port"] == "http" and m["spec"]["endpoints"][0]["path"] == "/metrics"
        services = [s for s in rendered.of_kind("Service")
                    if all(s["metadata"]["labels"].get(k) == v
                           for k, v in m["spec"]["selector"]["matchLabels"].items())
                    and s["metadata"]["labels"]["app.kubernetes.io/component"]
                    in m["spec"]["selector"]["matchExpressions"][0]["values"]]
        assert services and all(s["spec"]["ports"][0]["name"] == "http" for s in services)


def test_prometheus_rule_is_the_rules_file(rendered):
    rules = rendered.of_kind("PrometheusRule")
    if rendered.name == "default":
        assert rules == []
        return
    (rule,) = rules
    source = yaml.safe_load(RULES.read_text())
    groups = rule["spec"]["groups"]
    if rendered.name == "irsa-servicemonitor":
        base = "https://git.example.com/data/stream/blob/main/docs/runbook.md"
        expected = yaml.safe_load(RULES.read_text().replace("docs/runbook.md", base))["groups"]
        assert groups == expected
        assert sum(len(g["rules"]) for g in groups) == 17
        assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    else:   # api.enabled=false: the API's rules are left out
        kept = [{**g, "rules": [r for r in g["rules"] if r["labels"]["component"] != "api"]} for g in source["groups"]]
        assert groups == kept
        assert [r["alert"] for g in groups for r in g["rules"]] == [
            "StreamExportBehind", "StreamExportDestinationFailing", "StreamExportStalled", "StreamExportDataLost",
            "StreamDeadLetterRateHigh", "StreamConsumerLagGrowing", "StreamProducerClockAhead",
            "StreamIdentityJournalNotPruned", "StreamWorkerDown", "StreamImportFilesFailing", "StreamImportStuck",
            "StreamAdminTokenGuessed", "StreamCohortSyncLate", "StreamCohortSyncFailing", "StreamMirrorMutationsWaiting"]


def test_dashboard_configmap_carries_the_dashboard_for_the_sidecar():
    r = render("irsa-servicemonitor")
    cm = r.one("ConfigMap", "stream-dashboard")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert cm["data"]["stream.json"] == (CHART / "dashboards" / "stream.json").read_text().rstrip("\n")


@pytest.mark.parametrize("value_set", sorted(VALUE_SETS))
def test_helm_lint_strict_passes(value_set):
    args = [tool("helm"), "lint", "--strict", str(CHART)]
    if VALUE_SETS[value_set] is not None:
        args += ["--values", str(VALUE_SETS[value_set])]
    out = run(*args).stdout
    assert "1 chart(s) linted, 0 chart(s) failed" in out


def test_helm_refuses_unknown_and_invalid_config_keys():
    proc = run(tool("helm"), "template", "stream", str(CHART), "--set", "config.kafka.bootstrap_server=x",
               "--set", "config.destinations[0].name=Bad_Name", check=False)
    assert proc.returncode == 1
    assert "at '/config/kafka': additional properties 'bootstrap_server' not allowed" in proc.stderr
    assert "at '/config/destinations/0': missing properties 'project', 'bucket'" in proc.stderr
    assert "at '/config/destinations/0/name': 'Bad_Name' does not match pattern" in proc.stderr


def test_packaged_chart_carries_the_rules_file(tmp_path):
    """rules/stream-alerts.yaml in the chart links to helm/rules/; `helm package` must store its content."""
    run(tool("helm"), "package", str(CHART), "--destination", str(tmp_path))
    (package,) = tmp_path.glob("stream-*.tgz")
    out = run(tool("helm"), "template", "stream", str(package), "--set", "metrics.prometheusRule.enabled=true",
              "--show-only", "templates/prometheusrule.yaml").stdout
    rule = yaml.safe_load(out)
    assert rule["spec"]["groups"] == yaml.safe_load(RULES.read_text())["groups"]


@pytest.mark.parametrize("value_set", sorted(VALUE_SETS))
def test_notes_name_the_workers_and_warn_without_destinations(value_set):
    args = [tool("helm"), "install", "stream", str(CHART), "--namespace", "analytics", "--dry-run=client"]
    if VALUE_SETS[value_set] is not None:
        args += ["--values", str(VALUE_SETS[value_set])]
    notes = run(*args).stdout.split("\nNOTES:\n", 1)[1]
    left_out = " (a stage with nothing to do in the config is left out)."
    every = "ingest, dedupe, export, import, cohorts, mirror, profiles"
    workers = {"default": f"Workers: StatefulSet stream-worker, 2 replica(s), stages {every}{left_out}",
               "irsa-servicemonitor": f"Workers: StatefulSet stream-worker, 4 replica(s), stages {every}{left_out}",
               "split-stages-existing-secret": "Workers: StatefulSet stream-worker, 6 replica(s), stages "
                                               "dedupe, export, import, cohorts, mirror, profiles; ingest runs in "
                                               f"Deployment stream-ingest, 3 replica(s){left_out}"}
    assert workers[value_set] in notes
    assert ("WARNING: config.destinations is empty" in notes) == (value_set == "default")
    assert "kubectl -n analytics exec stream-worker-0 -- stream check -c /etc/stream/stream.yaml" in notes
    imports = "1 source(s), imported by the worker pods (stream import status)" if value_set == \
        "irsa-servicemonitor" else "no source (config.sources)"
    assert f"S3 import: {imports}.\nCohort syncs: no cohort destination (config.cohort_destinations).\n" in notes
