{{/* The sidecar's pod template pieces, for (list $ workload). The chart's
README shows them as a snippet to paste into an agent's pod template; the
example Deployment (sidecar.workloads[].example) is built from them. */}}

{{- define "tollgate.sidecar.name" -}}
{{ include "tollgate.fullname" (index . 0) }}-sidecar-{{ (index . 1).serviceAccount }}
{{- end -}}

{{- define "tollgate.sidecar.identity" -}}
{{- $ := index . 0 -}}{{- $w := index . 1 -}}
spiffe://{{ $.Values.trustDomain }}/ns/{{ $w.namespace }}/sa/{{ $w.serviceAccount }}
{{- end -}}

{{- define "tollgate.sidecar.config" -}}
{{- $ := index . 0 -}}
listeners:
  # Everything in this pod is one workload: its service account.
  - name: agent
    address: 127.0.0.1:3128
    identity:
      static: {{ include "tollgate.sidecar.identity" . }}
  # Where the init container's iptables rules send the pod's outbound TCP
  # 80/443, one listener per address family (docs/transparent.md).
  - name: redirected
    kind: transparent
    address: 127.0.0.1:15001
    identity:
      static: {{ include "tollgate.sidecar.identity" . }}
  - name: redirected6
    kind: transparent
    address: "[::1]:15001"
    identity:
      static: {{ include "tollgate.sidecar.identity" . }}
admin:
  # The kubelet probes the pod's address.
  address: 0.0.0.0:9901
{{ include "tollgate.remoteProxyConfig" $ }}
{{- end -}}

{{/* initContainers: the rules, then tollgate itself as a native sidecar
(restartPolicy: Always), started and healthy before the agent starts. */}}
{{- define "tollgate.sidecar.initContainers" -}}
{{- $ := index . 0 -}}
- name: tollgate-iptables
  image: {{ include "tollgate.image" (list $.Values.iptablesImage $.Chart) }}
  imagePullPolicy: {{ $.Values.iptablesImage.pullPolicy }}
  # Exactly what tests/tests/transparent.rs runs in a network namespace:
  # TCP 80/443 to 127.0.0.1:15001 / [::1]:15001, except uid 1337.
  command: ["/usr/local/bin/tollgate"]
  args: ["iptables", "--apply"]
  resources:
    requests: { cpu: 10m, memory: 16Mi }
    limits: { memory: 64Mi }
  securityContext:
    # iptables needs root and NET_ADMIN in the pod's network namespace; this
    # container exits once the rules are in, before the agent starts.
    runAsNonRoot: false
    runAsUser: 0
    runAsGroup: 0
    readOnlyRootFilesystem: true
    allowPrivilegeEscalation: false
    privileged: false
    capabilities:
      drop: ["ALL"]
      add: ["NET_ADMIN"]
    seccompProfile:
      type: RuntimeDefault
  volumeMounts:
    - { name: tollgate-run, mountPath: /run }
- name: tollgate
  image: {{ include "tollgate.image" (list $.Values.image $.Chart) }}
  imagePullPolicy: {{ $.Values.image.pullPolicy }}
  restartPolicy: Always
  args: ["run", "--config", "/etc/tollgate/config/tollgate.yaml"]
  ports:
    - name: admin
      containerPort: 9901
  {{- include "tollgate.probes" $ | nindent 2 }}
  resources:
    {{- toYaml $.Values.sidecar.resources | nindent 4 }}
  securityContext:
    # The uid the rules exempt: tollgate's own connections go out directly.
    runAsUser: {{ $.Values.sidecar.uid }}
    runAsGroup: {{ $.Values.sidecar.uid }}
    {{- include "tollgate.containerSecurity" $ | nindent 4 }}
  volumeMounts:
    - { name: tollgate-config, mountPath: /etc/tollgate/config, readOnly: true }
    - { name: tollgate-catalog, mountPath: /etc/tollgate/catalog, readOnly: true }
    - { name: tollgate-no-policies, mountPath: /etc/tollgate/no-policies, readOnly: true }
    # The CA key, for this container alone.
    - { name: tollgate-ca, mountPath: /etc/tollgate/ca, readOnly: true }
    {{- range $name, $c := $.Values.credentials }}
    - { name: tollgate-credential-{{ $name }}, mountPath: /etc/tollgate/credentials/{{ $name }}, readOnly: true }
    {{- end }}
{{- end -}}

{{/* What an agent container adds: the CA certificate, nothing else. */}}
{{- define "tollgate.sidecar.agentEnv" -}}
- { name: SSL_CERT_FILE, value: /etc/tollgate-ca/ca.crt }
- { name: REQUESTS_CA_BUNDLE, value: /etc/tollgate-ca/ca.crt }
- { name: NODE_EXTRA_CA_CERTS, value: /etc/tollgate-ca/ca.crt }
{{- end -}}

{{- define "tollgate.sidecar.volumes" -}}
{{- $ := index . 0 -}}
- name: tollgate-run
  emptyDir: { medium: Memory, sizeLimit: 1Mi }
- name: tollgate-config
  configMap: { name: {{ include "tollgate.sidecar.name" . }} }
- name: tollgate-catalog
  configMap: { name: {{ include "tollgate.fullname" $ }}-catalog }
- name: tollgate-no-policies
  emptyDir: { sizeLimit: 1Mi }
- name: tollgate-ca
  secret:
    secretName: {{ $.Values.ca.secretName }}
    defaultMode: 0440
- name: tollgate-ca-cert
  configMap: { name: {{ $.Values.ca.configMapName }} }
{{- range $name, $c := $.Values.credentials }}
- name: tollgate-credential-{{ $name }}
  secret:
    secretName: {{ $c.secretName }}
    defaultMode: 0440
    optional: true
{{- end }}
{{- end -}}
