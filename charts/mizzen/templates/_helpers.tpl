{{/* The release's name prefix: the release name, or RELEASE-mizzen when it does not contain "mizzen". */}}
{{- define "mizzen.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "mizzen.operator" -}}{{ include "mizzen.fullname" . }}-operator{{- end -}}
{{- define "mizzen.registry" -}}{{ include "mizzen.fullname" . }}-registry{{- end -}}

{{- define "mizzen.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "mizzen.operator" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* Labels on everything the chart makes. */}}
{{- define "mizzen.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/part-of: mizzen
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "mizzen.operatorSelector" -}}
app.kubernetes.io/name: mizzen-operator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "mizzen.registrySelector" -}}
app.kubernetes.io/name: mizzen-registry
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* The registry's URL inside the cluster: the chart's own, or operator.registryUrl. */}}
{{- define "mizzen.registryUrl" -}}
{{- if .Values.registry.enabled -}}
http://{{ include "mizzen.registry" . }}.{{ .Release.Namespace }}.svc:5000
{{- else -}}
{{- .Values.operator.registryUrl -}}
{{- end -}}
{{- end -}}

{{/* The hardened container securityContext every container gets. */}}
{{- define "mizzen.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities: {drop: [ALL]}
{{- end -}}

{{- define "mizzen.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
seccompProfile: {type: RuntimeDefault}
{{- end -}}

{{/* Whether the operator runs with leader election: asked for, or more than one replica. */}}
{{- define "mizzen.leaderElection" -}}
{{- if or .Values.leaderElection.enabled (gt (int .Values.replicaCount) 1) -}}true{{- end -}}
{{- end -}}
