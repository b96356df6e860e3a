{{/* Names, labels and the values several templates derive. */}}

{{- define "danmu.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "danmu.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
danmu.io/region: {{ .Values.region | quote }}
{{- end -}}

{{/* Selector labels of one component: (dict "ctx" $ "component" "gateway"). */}}
{{- define "danmu.selectorLabels" -}}
app.kubernetes.io/name: {{ .ctx.Chart.Name }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "danmu.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{/* NATS URLs of this region: natsUrl, else the client Service of the NATS chart. */}}
{{- define "danmu.natsUrl" -}}
{{- if .Values.natsUrl -}}
{{- .Values.natsUrl -}}
{{- else -}}
{{- printf "nats://%s-nats:4222" .Release.Name -}}
{{- end -}}
{{- end -}}

{{- define "danmu.natsSecret" -}}
{{- .Values.natsAuth.existingSecret | default (printf "%s-nats" (include "danmu.fullname" .)) -}}
{{- end -}}
{{- define "danmu.signingSecret" -}}
{{- .Values.signingKey.existingSecret | default (printf "%s-signing-key" (include "danmu.fullname" .)) -}}
{{- end -}}
{{- define "danmu.apiKeysSecret" -}}
{{- .Values.apiKeys.existingSecret | default (printf "%s-api-keys" (include "danmu.fullname" .)) -}}
{{- end -}}

{{/* Seconds: drain, then twice the linger (gateway::run's grace), then the margin. */}}
{{- define "danmu.gatewayGrace" -}}
{{- add .Values.gateway.drainPeriodSeconds (mul 2 .Values.gateway.closeLingerSeconds) .Values.gateway.terminationGraceExtraSeconds -}}
{{- end -}}

{{/* The scheduling, security and pull settings of one component's pods, for the pod spec:
(dict "ctx" $ "component" "gateway"). affinity and topologySpreadConstraints default to spreading
replicas over nodes and zones; a component's own values replace the defaults whole. */}}
{{- define "danmu.podSpec" -}}
{{- $v := index .ctx.Values .component -}}
{{- with .ctx.Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $v.priorityClassName }}
priorityClassName: {{ . | quote }}
{{- end }}
{{- with .ctx.Values.podSecurityContext }}
securityContext:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- if $v.affinity }}
affinity:
  {{- toYaml $v.affinity | nindent 2 }}
{{- else }}
affinity:
  podAntiAffinity:
    preferredDuringSchedulingIgnoredDuringExecution:
      - weight: 100
        podAffinityTerm:
          topologyKey: kubernetes.io/hostname
          labelSelector:
            matchLabels:
              {{- include "danmu.selectorLabels" . | nindent 14 }}
{{- end }}
{{- if $v.topologySpreadConstraints }}
topologySpreadConstraints:
  {{- toYaml $v.topologySpreadConstraints | nindent 2 }}
{{- else }}
topologySpreadConstraints:
  - maxSkew: 1
    topologyKey: topology.kubernetes.io/zone
    whenUnsatisfiable: ScheduleAnyway
    labelSelector:
      matchLabels:
        {{- include "danmu.selectorLabels" . | nindent 8 }}
{{- end }}
{{- with $v.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $v.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* The pod template's metadata of one component: (dict "ctx" $ "component" "gateway").
Labels: the selector labels and the chart's, then the component's podLabels, then the top-level
podLabels (earlier wins: nobody can change the selector). Annotations: checksums of the config and
of the Secrets' values, so a change of either rolls the pods, then podAnnotations likewise. */}}
{{- define "danmu.podMetadata" -}}
{{- $v := index .ctx.Values .component -}}
{{- $labels := merge (dict) (include "danmu.selectorLabels" . | fromYaml) (include "danmu.labels" .ctx | fromYaml) ($v.podLabels | default dict) (.ctx.Values.podLabels | default dict) -}}
{{- $checksums := dict
  "checksum/config" (include (print .ctx.Template.BasePath "/config.yaml") .ctx | sha256sum)
  "checksum/secrets" (include "danmu.secretsChecksum" .ctx) -}}
{{- $annotations := merge (dict) $checksums ($v.podAnnotations | default dict) (.ctx.Values.podAnnotations | default dict) -}}
labels:
  {{- toYaml $labels | nindent 2 }}
annotations:
  {{- toYaml $annotations | nindent 2 }}
{{- end -}}

{{/* What the services read from Secrets, as values (an existing Secret's contents are not
read at render time: rename it to roll the pods). */}}
{{- define "danmu.secretsChecksum" -}}
{{- list .Values.natsAuth.existingSecret .Values.natsAuth.seeds .Values.signingKey .Values.apiKeys | toJson | sha256sum -}}
{{- end -}}

{{/* The helm test's NATS user: rendered when tests are on and a password is given. */}}
{{- define "danmu.smokeUser" -}}
{{- if and .Values.tests.enabled (or .Values.tests.natsPassword .Values.tests.existingSecret) -}}
true
{{- end -}}
{{- end -}}

{{- define "danmu.testSecret" -}}
{{- .Values.tests.existingSecret | default (printf "%s-test" (include "danmu.fullname" .)) -}}
{{- end -}}

{{/* The bcrypt hash of the helm test user's password, for the NATS config and the test Secret.
Given (natsPasswordHash, with existingSecret), or kept: the chart's test Secret stores the hash
next to the password, and while the password is unchanged an upgrade reuses it (lookup), so the
NATS config does not change. Drawn otherwise (first install, a new password, helm template), once
per render: the first call keeps it in .Values.tests for the other templates. */}}
{{- define "danmu.smokePasswordHash" -}}
{{- if .Values.tests.existingSecret -}}
{{- .Values.tests.natsPasswordHash -}}
{{- else -}}
{{- if not (hasKey .Values.tests "renderedHash") -}}
{{- $hash := "" -}}
{{- $secret := lookup "v1" "Secret" .Release.Namespace (include "danmu.testSecret" .) -}}
{{- $data := dig "data" dict $secret -}}
{{- if and (hasKey $data "nats-password-bcrypt") (eq (index $data "nats-password" | default "" | b64dec) .Values.tests.natsPassword) -}}
{{- $hash = index $data "nats-password-bcrypt" | b64dec -}}
{{- else -}}
{{- $hash = bcrypt .Values.tests.natsPassword -}}
{{- end -}}
{{- $_ := set .Values.tests "renderedHash" $hash -}}
{{- end -}}
{{- .Values.tests.renderedHash -}}
{{- end -}}
{{- end -}}
