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

{{/* Pod anti-affinity (spread replicas over nodes) and topology spread over zones. */}}
{{- define "danmu.spread" -}}
affinity:
  podAntiAffinity:
    preferredDuringSchedulingIgnoredDuringExecution:
      - weight: 100
        podAffinityTerm:
          topologyKey: kubernetes.io/hostname
          labelSelector:
            matchLabels:
              {{- include "danmu.selectorLabels" . | nindent 14 }}
topologySpreadConstraints:
  - maxSkew: 1
    topologyKey: topology.kubernetes.io/zone
    whenUnsatisfiable: ScheduleAnyway
    labelSelector:
      matchLabels:
        {{- include "danmu.selectorLabels" . | nindent 8 }}
{{- end -}}
