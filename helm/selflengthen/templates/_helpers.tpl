{{/* Labels of every object of the release. */}}
{{- define "selflengthen.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: selflengthen
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* The restricted container security context shared by every container of the release. */}}
{{- define "selflengthen.containerSecurityContext" -}}
allowPrivilegeEscalation: false
capabilities:
  drop: ["ALL"]
privileged: false
readOnlyRootFilesystem: true
runAsNonRoot: true
{{- end }}

{{/* The pod security context: uid 10001 (the project's images create it), RuntimeDefault seccomp. */}}
{{- define "selflengthen.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* The account the runs' pods use: KFP's runner in its namespace (standalone), else runner.serviceAccount here. */}}
{{- define "selflengthen.runnerSubject" -}}
kind: ServiceAccount
{{- if eq .Values.kubeflow.mode "standalone" }}
name: {{ .Values.kubeflow.runnerAccount }}
namespace: {{ .Values.kubeflow.namespace }}
{{- else }}
name: {{ .Values.runner.serviceAccount.name }}
namespace: {{ .Release.Namespace }}
{{- end }}
{{- end }}

{{/* Ingress sources of the model servers and MinIO: the namespace's pods, and the KFP namespace's in standalone mode. */}}
{{- define "selflengthen.stepSources" -}}
- podSelector: {}
{{- if eq .Values.kubeflow.mode "standalone" }}
- namespaceSelector:
    matchLabels:
      kubernetes.io/metadata.name: {{ .Values.kubeflow.namespace }}
{{- end }}
{{- end }}
