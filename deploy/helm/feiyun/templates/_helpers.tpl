{{/* The release's name for every object; pods are <fullname>-0, -1, ... */}}
{{- define "feiyun.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* The headless Service that gives each pod the DNS name its peers reach it at. */}}
{{- define "feiyun.peers" -}}
{{- printf "%s-peers" (include "feiyun.fullname" .) -}}
{{- end -}}

{{- define "feiyun.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "feiyun.labels" -}}
{{ include "feiyun.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "feiyun.secretName" -}}
{{- default (include "feiyun.fullname" .) .Values.existingSecret -}}
{{- end -}}

{{/* An anti-affinity term over one topology key, soft or hard. */}}
{{- define "feiyun.antiAffinityTerm" -}}
{{- $term := dict "topologyKey" .key "labelSelector" (dict "matchLabels" (fromYaml (include "feiyun.selectorLabels" .ctx))) -}}
{{- if eq .mode "required" -}}
{{- toYaml (list $term) -}}
{{- else -}}
{{- toYaml (list (dict "weight" 100 "podAffinityTerm" $term)) -}}
{{- end -}}
{{- end -}}
