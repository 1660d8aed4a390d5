{{/* vim: set filetype=mustache: */}}

{{/* Chart name, overridable. */}}
{{- define "grader-service.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full resource name: <release>-<name>, or <release> when it already contains the name. */}}
{{- define "grader-service.fullname" -}}
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

{{- define "grader-service.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Selector labels of the service pods. */}}
{{- define "grader-service.selectorLabels" -}}
app.kubernetes.io/name: {{ include "grader-service.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: service
{{- end }}

{{/* Labels of every object of the chart (without component). */}}
{{- define "grader-service.labels" -}}
helm.sh/chart: {{ include "grader-service.chart" . }}
app.kubernetes.io/name: {{ include "grader-service.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: grader-service
{{- end }}

{{/*
Labels the kube executor puts on grading pods. Fixed by the executor, not by nameOverride:
the NetworkPolicy that isolates grading pods selects exactly these.
*/}}
{{- define "grader-service.gradingSelectorLabels" -}}
app.kubernetes.io/name: grader-service
app.kubernetes.io/component: autograde
{{- end }}

{{- define "grader-service.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "grader-service.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "grader-service.secretName" -}}
{{- default (include "grader-service.fullname" .) .Values.existingSecret.name }}
{{- end }}

{{- define "grader-service.apiTokenKey" -}}
{{- if .Values.existingSecret.name }}{{ .Values.existingSecret.apiTokenKey }}{{ else }}api-token{{ end }}
{{- end }}

{{- define "grader-service.dbUrlKey" -}}
{{- if .Values.existingSecret.name }}{{ .Values.existingSecret.dbUrlKey }}{{ else }}db-url{{ end }}
{{- end }}

{{- define "grader-service.claimName" -}}
{{- default (printf "%s-data" (include "grader-service.fullname" .)) .Values.persistence.existingClaim }}
{{- end }}

{{/* image reference from {repository, tag, digest}; call with (dict "image" ... "root" $) */}}
{{- define "grader-service.imageRef" -}}
{{- $tag := default .root.Chart.AppVersion .image.tag }}
{{- if .image.digest }}
{{- printf "%s@%s" .image.repository .image.digest }}
{{- else }}
{{- printf "%s:%s" .image.repository $tag }}
{{- end }}
{{- end }}

{{/* Path of the health endpoint under the base URL. */}}
{{- define "grader-service.healthPath" -}}
{{- printf "%sapi/v1/health" .Values.config.baseUrl }}
{{- end }}

{{/* Path of the liveness endpoint (no database) under the base URL. */}}
{{- define "grader-service.livePath" -}}
{{- printf "%sapi/v1/health/live" .Values.config.baseUrl }}
{{- end }}

{{/* Path of the metrics endpoint under the base URL. */}}
{{- define "grader-service.metricsPath" -}}
{{- printf "%sapi/v1/metrics" .Values.config.baseUrl }}
{{- end }}

{{/* "true" when the service gets a scrape token (from the values or generated for the ServiceMonitor). */}}
{{- define "grader-service.usesMetricsToken" -}}
{{- if or .Values.metrics.token .Values.metrics.serviceMonitor.enabled }}true{{ end }}
{{- end }}

{{- define "grader-service.metricsTokenKey" -}}
{{- if .Values.existingSecret.name }}{{ .Values.existingSecret.metricsTokenKey }}{{ else }}metrics-token{{ end }}
{{- end }}

{{- define "grader-service.usesSqlite" -}}
{{- if eq .Values.database.type "sqlite" }}true{{ end }}
{{- end }}

{{- define "grader-service.usesKube" -}}
{{- if eq .Values.config.executor "kube" }}true{{ end }}
{{- end }}

{{/*
Python literal for a value from values.yaml: dicts, lists, strings, numbers, booleans, null.
Strings are JSON-quoted, which is also a valid Python string literal; whole-valued numbers
render as ints (YAML numbers arrive as float64).
*/}}
{{- define "grader-service.py" -}}
{{- $v := . }}
{{- if kindIs "invalid" $v }}None
{{- else if kindIs "bool" $v }}{{ ternary "True" "False" $v }}
{{- else if kindIs "string" $v }}{{ toJson $v }}
{{- else if or (kindIs "float64" $v) (kindIs "float32" $v) }}
{{- if eq (floor $v) $v }}{{ int64 $v }}{{ else }}{{ $v }}{{ end }}
{{- else if or (kindIs "int" $v) (kindIs "int64" $v) (kindIs "int32" $v) (kindIs "uint64" $v) }}{{ $v }}
{{- else if kindIs "map" $v }}
{{- if not $v }}{}{{ else }}{ {{- range $i, $k := keys $v | sortAlpha }}{{ if $i }}, {{ end }}{{ toJson $k }}: {{ include "grader-service.py" (index $v $k) }}{{ end }}}{{ end }}
{{- else if kindIs "slice" $v }}[{{ range $i, $e := $v }}{{ if $i }}, {{ end }}{{ include "grader-service.py" $e }}{{ end }}]
{{- else }}{{ fail (printf "grader-service: cannot render %v (%s) as Python" $v (kindOf $v)) }}
{{- end }}
{{- end }}

{{/*
Python float (cores) for a CPU amount given as a number (0.5) or a Kubernetes quantity string
("500m", "2"); None when unset. The executor's cpu traits are Floats.
*/}}
{{- define "grader-service.pyCpu" -}}
{{- $v := . }}
{{- if kindIs "invalid" $v }}None
{{- else }}
{{- if kindIs "string" $v }}
{{- if hasSuffix "m" $v }}{{ $v = divf (trimSuffix "m" $v | float64) 1000 }}{{ else }}{{ $v = float64 $v }}{{ end }}
{{- end }}
{{- $f := float64 $v }}
{{- if eq (floor $f) $f }}{{ int64 $f }}.0{{ else }}{{ $f }}{{ end }}
{{- end }}
{{- end }}

{{/* Python string literal for a memory quantity given as string ("512Mi") or number (bytes). */}}
{{- define "grader-service.pyQuantity" -}}
{{- if kindIs "invalid" . }}None
{{- else if kindIs "string" . }}{{ toJson . }}
{{- else }}{{ include "grader-service.py" . | toJson }}
{{- end }}
{{- end }}

{{/* Refuse configurations that cannot work, with a message that says why. */}}
{{- define "grader-service.validate" -}}
{{- if and (gt (int .Values.replicas) 1) (eq .Values.database.type "sqlite") }}
{{- fail (printf "\n\ngrader-service: replicas=%d needs PostgreSQL. SQLite is a single file on one volume and cannot be shared by several replicas: set database.type=postgresql and database.url (or existingSecret), or keep replicas=1.\n" (int .Values.replicas)) }}
{{- end }}
{{- if and (eq .Values.database.type "postgresql") (not .Values.existingSecret.name) (not .Values.database.url) }}
{{- fail "\n\ngrader-service: database.type=postgresql needs database.url (postgresql+psycopg://USER:PASSWORD@HOST:5432/DB) or existingSecret.name with the URL under existingSecret.dbUrlKey.\n" }}
{{- end }}
{{- if and .Values.database.url (hasPrefix "sqlite" .Values.database.url) }}
{{- fail "\n\ngrader-service: database.url is for PostgreSQL. For SQLite leave it empty and set database.type=sqlite; the file lives in config.dataDir.\n" }}
{{- end }}
{{- if not (and (hasPrefix "/" .Values.config.baseUrl) (hasSuffix "/" .Values.config.baseUrl)) }}
{{- fail (printf "\n\ngrader-service: config.baseUrl must start and end with '/', got %q.\n" .Values.config.baseUrl) }}
{{- end }}
{{- $prefix := printf "/services/%s/" .Values.jupyterhub.serviceName }}
{{- if and (eq .Values.config.authenticator "jupyterhub") (not (hasSuffix $prefix .Values.config.baseUrl)) }}
{{- fail (printf "\n\ngrader-service: under JupyterHub the proxy forwards [<hub base url>]%s unchanged, so config.baseUrl must end with it (got %q).\n" $prefix .Values.config.baseUrl) }}
{{- end }}
{{- end }}
