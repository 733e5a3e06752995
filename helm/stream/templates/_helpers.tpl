{{/* Chart name, truncated to the 63 characters of a DNS label. */}}
{{- define "stream.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Release-scoped name: <release>-stream, or the release name alone when it already holds the chart name. */}}
{{- define "stream.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "stream.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels of every object. */}}
{{- define "stream.labels" -}}
helm.sh/chart: {{ include "stream.chart" . }}
app.kubernetes.io/name: {{ include "stream.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: stream
{{- end }}

{{/* Selector labels of one component: (dict "root" $ "component" "worker"). */}}
{{- define "stream.selectorLabels" -}}
app.kubernetes.io/name: {{ include "stream.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* All labels of one component's objects and pods. */}}
{{- define "stream.componentLabels" -}}
{{ include "stream.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "stream.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "stream.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "stream.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}

{{/*
The stream.yaml the pods read: .Values.config (the settings tree of examples/stream.yaml) with the keys the
chart builds on filled in: worker.data_dir (the volume's mount path) and worker.http_port (probes, metrics).
Every template that needs one of these values reads it from here, so the file and the manifests agree.
*/}}
{{- define "stream.settings" -}}
{{- $cfg := deepCopy (.Values.config | default dict) }}
{{- $worker := get $cfg "worker" | default dict }}
{{- $_ := set $worker "data_dir" ($worker.data_dir | default "/var/lib/stream") }}
{{- $_ := set $worker "http_port" ($worker.http_port | default 9108) }}
{{- $_ := set $cfg "worker" $worker }}
{{- toYaml $cfg }}
{{- end }}

{{/* Seconds Kubernetes waits after SIGTERM: worker.shutdown_timeout_s (default 30), rounded up, plus .margin. */}}
{{- define "stream.workerTerminationGracePeriod" -}}
{{- $cfg := include "stream.settings" .root | fromYaml }}
{{- $timeout := $cfg.worker.shutdown_timeout_s | default 30 }}
{{- add (ceil $timeout | int) .margin }}
{{- end }}

{{/* The api.port of the settings (default 8080). */}}
{{- define "stream.apiPort" -}}
{{- $cfg := include "stream.settings" . | fromYaml }}
{{- dig "api" "port" 8080 $cfg | int }}
{{- end }}

{{/* Pod annotations: a checksum of stream.yaml, so that a change of config rolls the pods. */}}
{{- define "stream.podAnnotations" -}}
checksum/config: {{ include "stream.settings" .root | sha256sum }}
{{- with .extra }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Environment of a stream container: credentials from the existing Secret, the admin token for workers
(dict "root" $ "admin" true), then extra ones. */}}
{{- define "stream.envFrom" -}}
{{- $root := .root -}}
{{- $admin := and .admin $root.Values.admin.generateToken -}}
{{- if or $root.Values.existingSecret $root.Values.extraEnvFrom $admin }}
envFrom:
  {{- with $root.Values.existingSecret }}
  - secretRef:
      name: {{ . }}
  {{- end }}
  {{- if $admin }}
  - secretRef:
      name: {{ include "stream.fullname" $root }}-admin
  {{- end }}
  {{- with $root.Values.extraEnvFrom }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- end }}
{{- end }}

{{/* Preferred or required anti-affinity between the pods of one component (dict "root" $ "component" "worker" "mode" "soft"). */}}
{{- define "stream.podAntiAffinity" -}}
{{- if eq .mode "soft" }}
podAntiAffinity:
  preferredDuringSchedulingIgnoredDuringExecution:
    - weight: 100
      podAffinityTerm:
        topologyKey: kubernetes.io/hostname
        labelSelector:
          matchLabels:
            {{- include "stream.selectorLabels" . | nindent 12 }}
{{- else if eq .mode "hard" }}
podAntiAffinity:
  requiredDuringSchedulingIgnoredDuringExecution:
    - topologyKey: kubernetes.io/hostname
      labelSelector:
        matchLabels:
          {{- include "stream.selectorLabels" . | nindent 10 }}
{{- end }}
{{- end }}

{{/*
Scheduling and security of a pod (dict "root" $ "component" "worker" "values" .Values.worker): service account,
security context, pull secrets, node selection, affinity.
*/}}
{{- define "stream.podCommon" -}}
{{- $root := .root }}
serviceAccountName: {{ include "stream.serviceAccountName" $root }}
automountServiceAccountToken: {{ $root.Values.serviceAccount.automountServiceAccountToken }}
{{- with $root.Values.podSecurityContext }}
securityContext:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $root.Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with .values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.topologySpreadConstraints }}
topologySpreadConstraints:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- if .values.affinity }}
affinity:
  {{- toYaml .values.affinity | nindent 2 }}
{{- else if and .values.podAntiAffinity (ne .values.podAntiAffinity "none") }}
affinity:
  {{- include "stream.podAntiAffinity" (dict "root" $root "component" .component "mode" .values.podAntiAffinity) | trim | nindent 2 }}
{{- end }}
{{- end }}

{{/* The stages the worker StatefulSet runs, comma-separated: config.worker.stages (every stage by default, the
order of stream.settings.WorkerSettings.stages), without ingest when ingest.separate runs it in its own Deployment. */}}
{{- define "stream.workerStages" -}}
{{- $cfg := include "stream.settings" . | fromYaml }}
{{- $stages := $cfg.worker.stages | default (list "ingest" "dedupe" "export" "import" "cohorts" "mirror" "profiles") }}
{{- if .Values.ingest.separate }}
{{- $stages = without $stages "ingest" }}
{{- if not $stages }}
{{- fail "config.worker.stages names only ingest, and ingest.separate runs it in the ingest Deployment: the worker StatefulSet would run no stage. Add the others (dedupe, export, import, cohorts, mirror, profiles) to config.worker.stages, or remove it to run every stage" }}
{{- end }}
{{- end }}
{{- join "," $stages }}
{{- end }}

{{/* A container running `stream worker` (dict "root" $ "values" .Values.worker "stages" "dedupe,export"): --stages
overrides config.worker.stages when given. */}}
{{- define "stream.workerContainer" -}}
{{- $root := .root }}
{{- $cfg := include "stream.settings" $root | fromYaml }}
- name: worker
  image: {{ include "stream.image" $root }}
  imagePullPolicy: {{ $root.Values.image.pullPolicy }}
  args:
    - worker
    - -c
    - /etc/stream/stream.yaml
    {{- with .stages }}
    - --stages
    - {{ . }}
    {{- end }}
  {{- with include "stream.envFrom" (dict "root" $root "admin" true) | trim }}
  {{- . | nindent 2 }}
  {{- end }}
  {{- with $root.Values.extraEnv }}
  env:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  ports:
    - name: http
      containerPort: {{ $cfg.worker.http_port }}
      protocol: TCP
  startupProbe:
    httpGet:
      path: /healthz
      port: http
    {{- toYaml .values.startupProbe | nindent 4 }}
  livenessProbe:
    httpGet:
      path: /healthz
      port: http
    {{- toYaml .values.livenessProbe | nindent 4 }}
  readinessProbe:
    httpGet:
      path: /readyz
      port: http
    {{- toYaml .values.readinessProbe | nindent 4 }}
  {{- with .values.resources }}
  resources:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $root.Values.securityContext }}
  securityContext:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  volumeMounts:
    - name: config
      mountPath: /etc/stream
      readOnly: true
    - name: data
      mountPath: {{ $cfg.worker.data_dir }}
    - name: tmp
      mountPath: /tmp
{{- end }}
