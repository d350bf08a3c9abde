{{/* The namespace of the components: namespace.name, else the release's. */}}
{{- define "ssi.namespace" -}}
{{- $ns := .Values.namespace.name | default .Release.Namespace -}}
{{- if has $ns (list "default" "kube-public" "kube-node-lease") -}}
{{- fail (printf "the components may not go into namespace %s (the privileged driver, the webhook's key, and a namespace the webhook would stop reviewing): install with --namespace secrets-store-integration" $ns) -}}
{{- end -}}
{{- if and .Values.namespace.create (eq $ns .Release.Namespace) -}}
{{- fail "namespace.create needs namespace.name to be another namespace than the release's: Helm needs the release's namespace to exist before it installs anything" -}}
{{- end -}}
{{- $ns -}}
{{- end -}}

{{/* The image of one component: <repository>/<name>:<tag or appVersion>. */}}
{{- define "ssi.image" -}}
{{- if not .root.Values.images.repository -}}
{{- fail "images.repository is required: the registry and repository you pushed the images to (docs/install.md, section 1), or secrets-store-integration for images loaded into the nodes with kind load or ctr import" -}}
{{- end -}}
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
- name: {{ $name | quote }}
  value: {{ $value | toString | quote }}
{{- end }}
{{- end -}}

{{- /* `<bindAddress>:<port>`, with an IPv6 address in brackets. */}}
{{- define "ssi.listen" -}}
{{- if eq .root.Values.bindAddress "::" -}}
[::]:{{ .port }}
{{- else -}}
{{ .root.Values.bindAddress }}:{{ .port }}
{{- end -}}
{{- end }}

{{- /* The PriorityClass of a component: its own value, else the chart's class, else none. */}}
{{- define "ssi.priorityClassName" -}}
{{- if .own -}}
{{ .own }}
{{- else if .root.Values.priorityClass.create -}}
secrets-store-integration-critical
{{- end -}}
{{- end }}
