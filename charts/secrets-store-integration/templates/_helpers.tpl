{{/* The namespace of the components: namespace.name, else the release's. */}}
{{- define "ssi.namespace" -}}
{{- .Values.namespace.name | default .Release.Namespace -}}
{{- end -}}

{{/* The image of one component: <repository>/<name>:<tag or appVersion>. */}}
{{- define "ssi.image" -}}
{{- $tag := .root.Values.images.tag | default .root.Chart.AppVersion -}}
{{- printf "%s/%s:%s" .root.Values.images.repository .name $tag -}}
{{- end -}}

{{/* Labels every object carries. */}}
{{- define "ssi.labels" -}}
app.kubernetes.io/part-of: secrets-store-integration
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* extraEnv as container env entries. */}}
{{- define "ssi.extraEnv" -}}
{{- range $name, $value := . }}
- name: {{ $name }}
  value: {{ $value | toString | quote }}
{{- end }}
{{- end -}}
