{{/* The tollgate configurations the chart renders. Each is checked by
tests/tests/deploy.rs with `tollgate validate`. */}}

{{- define "tollgate.decisionConfig.static" -}}
catalog: /etc/tollgate/catalog
policies: /etc/tollgate/policies
decision_service:
  # The pod's address: proxies, Envoy and the kubelet's probes reach it.
  address: 0.0.0.0:9191
  admin: 0.0.0.0:9902
  {{- if .Values.envoy.jwtIssuers }}
  identity:
    jwt: {{ toJson .Values.envoy.jwtIssuers }}
  {{- end }}
identity:
  trust_domains: [{{ .Values.trustDomain }}]
{{- if .Values.decision.adminTokenSecret }}
tasks:
  admin_token: { file: /etc/tollgate/admin/token }
  default_ttl: {{ .Values.decision.taskTtl.default }}
  max_ttl: {{ .Values.decision.taskTtl.max }}
{{- end }}
{{- if eq .Values.decision.store "redis" }}
{{- $r := .Values.decision.redis }}
state:
  redis:
    {{- if $r.evaluation.enabled }}
    url: redis://{{ include "tollgate.fullname" . }}-redis.{{ .Release.Namespace }}.svc:6379/0
    {{- else }}
    url: {{ $r.url }}
    {{- with $r.username }}
    username: {{ . }}
    {{- end }}
    {{- if $r.passwordSecret }}
    password: { file: /etc/tollgate/redis/password }
    {{- end }}
    {{- if $r.caSecret }}
    ca_file: /etc/tollgate/redis-ca/ca.crt
    {{- end }}
    {{- end }}
    key_prefix: {{ $r.keyPrefix }}
    timeout: {{ $r.timeout }}
{{- end }}
approvals:
  hold: {{ .Values.decision.approvals.hold }}
  ttl: {{ .Values.decision.approvals.ttl }}
  {{- with .Values.decision.approvals.approvers }}
  approvers:
    {{- range . }}
    - name: {{ .name }}
      token: { file: /etc/tollgate/approvers/{{ .name }}/token }
    {{- end }}
  {{- end }}
audit:
  output: stdout
reload:
  watch: true
  interval: {{ .Values.reload.interval }}
{{- end -}}
{{- /* Sections tollgate reloads without a restart: changing them does not
roll the pods (their checksum is left out of the pod annotation). */ -}}
{{- define "tollgate.decisionConfig.reloaded" -}}
{{- include "tollgate.enforcementConfig" . }}
{{- if .Values.envoy.enabled }}
{{- include "tollgate.credentialsConfig" . }}
{{- end }}
{{- end -}}

{{- define "tollgate.gatewayConfig" -}}
{{- $g := .Values.gateway -}}
listeners:
  # Agents reach it through the Service with HTTPS_PROXY and prove who they
  # are with their service-account token (the proxy URL's password).
  - name: gateway
    address: 0.0.0.0:{{ $g.port }}
    {{- if $g.tls.secretName }}
    tls: { cert: /etc/tollgate/tls/tls.crt, key: /etc/tollgate/tls/tls.key }
    {{- end }}
    identity:
      jwt: [kubernetes]
admin:
  address: 0.0.0.0:9901
identity:
  trust_domains: [{{ .Values.trustDomain }}]
  issuers:
    - name: kubernetes
      issuer: {{ $g.identity.issuer }}
      audiences: [{{ $g.identity.audience }}]
      kind: kubernetes
      trust_domain: {{ .Values.trustDomain }}
      {{- if eq $g.identity.jwks "discovery" }}
      jwks: { discovery: true }
      # The cluster's CA, from the kube-root-ca.crt ConfigMap.
      ca: /etc/tollgate/kube/ca.crt
      {{- else }}
      jwks: { file: /etc/tollgate/jwks/jwks.json }
      {{- end }}
{{ include "tollgate.remoteProxyConfig" . }}
{{- end -}}
