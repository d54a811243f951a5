{{/* Names: the release name, or release-chart when it does not say tollgate. */}}
{{- define "tollgate.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "tollgate.labels" -}}
app.kubernetes.io/part-of: tollgate
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* Selector labels of one component: (list $ "decision"). */}}
{{- define "tollgate.selector" -}}
{{- $ := index . 0 -}}
app.kubernetes.io/name: tollgate
app.kubernetes.io/instance: {{ $.Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end -}}

{{- define "tollgate.image" -}}
{{- $img := index . 0 -}}{{- $chart := index . 1 -}}
{{- if $img.digest -}}
{{ $img.repository }}@{{ $img.digest }}
{{- else -}}
{{ $img.repository }}:{{ $img.tag | default $chart.AppVersion }}
{{- end -}}
{{- end -}}

{{- define "tollgate.decisionHost" -}}
{{ include "tollgate.fullname" . }}-decision.{{ .Release.Namespace }}.svc
{{- end -}}

{{/* What every tollgate container gets: nothing to escalate to. */}}
{{- define "tollgate.containerSecurity" -}}
runAsNonRoot: true
readOnlyRootFilesystem: true
allowPrivilegeEscalation: false
privileged: false
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "tollgate.probes" -}}
startupProbe:
  httpGet: { path: /healthz, port: admin }
  periodSeconds: 2
  failureThreshold: 30
livenessProbe:
  httpGet: { path: /healthz, port: admin }
  periodSeconds: 10
readinessProbe:
  httpGet: { path: /readyz, port: admin }
  periodSeconds: 5
{{- end -}}

{{/* Topology spread over nodes and zones: (list $ "decision"). */}}
{{- define "tollgate.spread" -}}
topologySpreadConstraints:
{{- range list "kubernetes.io/hostname" "topology.kubernetes.io/zone" }}
  - maxSkew: 1
    topologyKey: {{ . }}
    whenUnsatisfiable: ScheduleAnyway
    labelSelector:
      matchLabels:
        {{- include "tollgate.selector" $ | nindent 8 }}
{{- end }}
{{- end -}}

{{/* The credentials section of a configuration. */}}
{{- define "tollgate.credentialsConfig" -}}
{{- if .Values.credentials }}
credentials:
{{- range $name, $c := .Values.credentials }}
  {{ $name }}:
    dir: /etc/tollgate/credentials/{{ $name }}
    {{- with $c.key }}
    key: {{ . }}
    {{- end }}
    {{- with $c.inject }}
    inject: {{ toJson . }}
    {{- end }}
    services: {{ toJson $c.services }}
{{- end }}
{{- end }}
{{- end -}}

{{- define "tollgate.credentialMounts" -}}
{{- range $name, $c := .Values.credentials }}
- name: credential-{{ $name }}
  mountPath: /etc/tollgate/credentials/{{ $name }}
  readOnly: true
{{- end }}
{{- end -}}

{{/* Credential Secrets are optional: a missing one makes the requests that
need it fail with 503 credential_unavailable, not the pod fail to start. */}}
{{- define "tollgate.credentialVolumes" -}}
{{- range $name, $c := .Values.credentials }}
- name: credential-{{ $name }}
  secret:
    secretName: {{ $c.secretName }}
    defaultMode: 0440
    optional: true
{{- end }}
{{- end -}}

{{- define "tollgate.enforcementConfig" -}}
enforcement:
  mode: {{ .Values.enforcement.mode }}
  {{- if .Values.enforcement.tools }}
  tools: {{ toJson .Values.enforcement.tools }}
  {{- end }}
{{- end -}}

{{/* A proxy deciding remotely: what the gateway and the sidecars share. */}}
{{- define "tollgate.remoteProxyConfig" -}}
catalog: /etc/tollgate/catalog
# The decision service holds the policies; a proxy deciding remotely loads
# none of its own (an empty folder).
policies: /etc/tollgate/no-policies
tls:
  ca_dir: /etc/tollgate/ca
decision:
  endpoint: http://{{ include "tollgate.decisionHost" . }}:9191
approvals:
  hold: {{ .Values.decision.approvals.hold }}
audit:
  output: stdout
reload:
  watch: true
  interval: {{ .Values.reload.interval }}
{{- include "tollgate.credentialsConfig" . }}
{{- end -}}
