{{/*
The RayService is named after the release: KubeRay derives <name>-head-svc and <name>-serve-svc
from it, and refuses RayService names over 47 characters or that are not DNS-1035 labels.
*/}}
{{- define "r1p.name" -}}
{{- if gt (len .Release.Name) 47 -}}
{{- fail (printf "release name %q: KubeRay allows at most 47 characters for a RayService name" .Release.Name) -}}
{{- end -}}
{{- if not (regexMatch "^[a-z]([-a-z0-9]*[a-z0-9])?$" .Release.Name) -}}
{{- fail (printf "release name %q: must be a DNS-1035 label (KubeRay names the RayService after it)" .Release.Name) -}}
{{- end -}}
{{- .Release.Name -}}
{{- end -}}

{{- define "r1p.labels" -}}
app.kubernetes.io/name: r1-platform
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "r1p.selectorLabels" -}}
app.kubernetes.io/name: r1-platform
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* The engine image of the current mode. */}}
{{- define "r1p.image" -}}
{{- $img := index .Values.image .Values.mode -}}
{{- printf "%s:%s" $img.repository $img.tag -}}
{{- end -}}

{{/* An optional image override ({repository, tag}) falling back to the engine image. */}}
{{- define "r1p.imageOr" -}}
{{- $img := .img -}}
{{- if $img.repository -}}
{{- if or (not $img.tag) (eq $img.tag "latest") -}}
{{- fail (printf "%s.tag: pin a version (never empty or latest)" .field) -}}
{{- end -}}
{{- printf "%s:%s" $img.repository $img.tag -}}
{{- else -}}
{{- include "r1p.image" .root -}}
{{- end -}}
{{- end -}}

{{- define "r1p.authSecret" -}}
{{- default (printf "%s-ray-auth" .Release.Name) .Values.rayAuth.secretName -}}
{{- end -}}

{{- define "r1p.settingsConfigMap" -}}
{{- printf "%s-settings" .Release.Name -}}
{{- end -}}

{{- define "r1p.containerSecurityContext" -}}
{{ toYaml .Values.containerSecurityContext }}
{{- end -}}

{{- define "r1p.podSecurityContext" -}}
{{ toYaml .Values.podSecurityContext }}
{{- end -}}

{{/*
Value checks the schema cannot express (cross-field), each naming the field it rejects.
*/}}
{{- define "r1p.validate" -}}
{{- $poolNames := dict -}}
{{- $gpus := dict -}}
{{- range $i, $p := .Values.pools -}}
{{- if hasKey $poolNames $p.name -}}
{{- fail (printf "pools[%d].name: duplicate pool name %q" $i $p.name) -}}
{{- end -}}
{{- $_ := set $poolNames $p.name true -}}
{{- $_ := set $gpus $p.gpu true -}}
{{- if lt (int $p.minReplicas) 0 -}}{{- fail (printf "pools[%d].minReplicas: must be >= 0" $i) -}}{{- end -}}
{{- if lt (int $p.replicas) 0 -}}{{- fail (printf "pools[%d].replicas: must be >= 0" $i) -}}{{- end -}}
{{- if gt (int $p.minReplicas) (int $p.maxReplicas) -}}
{{- fail (printf "pools[%d].minReplicas: %d is greater than maxReplicas %d" $i (int $p.minReplicas) (int $p.maxReplicas)) -}}
{{- end -}}
{{- if or (lt (int $p.replicas) (int $p.minReplicas)) (gt (int $p.replicas) (int $p.maxReplicas)) -}}
{{- fail (printf "pools[%d].replicas: %d is outside [minReplicas, maxReplicas] = [%d, %d]" $i (int $p.replicas) (int $p.minReplicas) (int $p.maxReplicas)) -}}
{{- end -}}
{{- end -}}
{{- $ids := dict -}}
{{- $hf := dict -}}
{{- range $i, $m := .Values.models -}}
{{- if not $m.id -}}{{- fail (printf "models[%d].id: every model needs an id" $i) -}}{{- end -}}
{{- if hasKey $ids $m.id -}}{{- fail (printf "models[%d].id: duplicate model id %q" $i $m.id) -}}{{- end -}}
{{- $_ := set $ids $m.id true -}}
{{- $min := int (default 1 $m.minReplicas) -}}
{{- if hasKey $m "minReplicas" -}}{{- $min = int $m.minReplicas -}}{{- end -}}
{{- $max := int (default (max $min 1) $m.maxReplicas) -}}
{{- if lt $min 0 -}}{{- fail (printf "models[%d].minReplicas: must be >= 0" $i) -}}{{- end -}}
{{- if gt $min $max -}}
{{- fail (printf "models[%d].minReplicas: %d is greater than maxReplicas %d" $i $min $max) -}}
{{- end -}}
{{- if not $m.gpuTypes -}}{{- fail (printf "models[%d].gpuTypes: list at least one GPU type" $i) -}}{{- end -}}
{{- $first := first $m.gpuTypes -}}
{{- if not (hasKey $gpus $first) -}}
{{- fail (printf "models[%d].gpuTypes[0]: no pool has GPU %q, so the model could never be placed" $i $first) -}}
{{- end -}}
{{- $same := list -}}
{{- range $.Values.pools -}}{{- if eq .gpu $first -}}{{- $same = append $same .name -}}{{- end -}}{{- end -}}
{{- if $m.pool -}}
{{- if not (has $m.pool $same) -}}
{{- fail (printf "models[%d].pool: %q is not a pool with GPU %s (gpuTypes[0]); pools with it: %s" $i $m.pool $first (join ", " $same)) -}}
{{- end -}}
{{- else if gt (len $same) 1 -}}
{{- /* The controller resolves model@<gpu> only when one pool has that GPU. */ -}}
{{- fail (printf "models[%d].pool: %d pools have GPU %s (%s); set pool to the one the model starts on" $i (len $same) $first (join ", " $same)) -}}
{{- end -}}
{{- $tp := int (default 1 $m.tensorParallelSize) -}}
{{- $pp := int (default 1 $m.pipelineParallelSize) -}}
{{- if gt $tp 1 -}}
{{- $fits := false -}}
{{- range $.Values.pools -}}
{{- if and (eq .gpu $first) (ge (int .gpusPerNode) $tp) -}}{{- $fits = true -}}{{- end -}}
{{- end -}}
{{- if not $fits -}}
{{- fail (printf "models[%d].tensorParallelSize: %d GPUs per replica, but no %s pool has that many GPUs per node" $i $tp $first) -}}
{{- end -}}
{{- end -}}
{{- if gt $pp 1 -}}
{{- /* TP ranks stay inside a node; PP stages spread over nodes of one pool, so a replica
       needs ceil(tp*pp / gpusPerNode) nodes of that pool at its maxReplicas. */ -}}
{{- $room := false -}}
{{- range $.Values.pools -}}
{{- if and (eq .gpu $first) (or (not $m.pool) (eq .name $m.pool)) (ge (int .gpusPerNode) $tp) (ge (mul (int .maxReplicas) (int .gpusPerNode)) (mul $tp $pp)) -}}{{- $room = true -}}{{- end -}}
{{- end -}}
{{- if not $room -}}
{{- fail (printf "models[%d].pipelineParallelSize: a TP%dxPP%d replica needs %d %s GPUs with %d per node, more than any such pool's maxReplicas x gpusPerNode" $i $tp $pp (mul $tp $pp) $first $tp) -}}
{{- end -}}
{{- end -}}
{{- with $m.hfTokenSecret -}}{{- $_ := set $hf (printf "%s/%s" .name .key) true -}}{{- end -}}
{{- end -}}
{{- if gt (len $hf) 1 -}}
{{- fail "models[].hfTokenSecret: all models must reference the same Secret key (one HF_TOKEN per pod)" -}}
{{- end -}}
{{- if and .Values.gcsFaultTolerance.enabled (eq .Values.gcsFaultTolerance.backend "redis") (not .Values.gcsFaultTolerance.redisAddress) -}}
{{- fail "gcsFaultTolerance.redisAddress: required when gcsFaultTolerance.enabled with backend redis" -}}
{{- end -}}
{{- if and .Values.grpo.enabled (eq .Values.grpo.mode "cluster") (not .Values.rayAuth.enabled) -}}
{{- /* not an error: documented, the submitter simply sends no token */ -}}
{{- end -}}
{{- end -}}

{{/* The one HF token Secret reference of the models, if any. */}}
{{- define "r1p.hfTokenSecret" -}}
{{- range .Values.models -}}{{- with .hfTokenSecret -}}{{ toJson . }}{{- break -}}{{- end -}}{{- end -}}
{{- end -}}

{{/*
The platform settings document (r1platform.config.Settings), as YAML. Secrets never appear
here: API keys reach the pods as R1P_API_KEYS from apiKeys.existingSecret.
*/}}
{{- define "r1p.settings" -}}
{{- $gpu := eq .Values.mode "gpu" -}}
{{- /* Models in values order: the first one is the primary (its engine lives in the ingress),
       and a dict through toYaml would come out sorted. */ -}}
models:
{{- range $m := .Values.models }}
{{- $min := 1 -}}
{{- if hasKey $m "minReplicas" -}}{{- $min = int $m.minReplicas -}}{{- end -}}
{{- $max := int (default (max $min 1) $m.maxReplicas) -}}
{{- $ms := dict
  "path" $m.path
  "max_model_len" (int $m.maxModelLen)
  "tensor_parallel_size" (int (default 1 $m.tensorParallelSize))
  "pipeline_parallel_size" (int (default 1 $m.pipelineParallelSize))
  "accelerator_type" (first $m.gpuTypes)
  "enforce_eager" (ternary $m.enforceEager (not $gpu) (hasKey $m "enforceEager"))
  "autoscaling" (dict "min_replicas" $min "max_replicas" $max)
-}}
{{- if $gpu -}}{{- $_ := set $ms "gpu_memory_utilization" (default 0.9 $m.gpuMemoryUtilization) -}}
{{- else if $m.gpuMemoryUtilization -}}{{- $_ := set $ms "gpu_memory_utilization" $m.gpuMemoryUtilization -}}{{- end -}}
{{- with $m.pool -}}{{- $_ := set $ms "pool" . -}}{{- end -}}
{{- /* Engine profile: unset on GPUs = the default of the GPU's generation and the model
       (r1platform.pools.engine_profiles); the CPU engines run float32. */ -}}
{{- if $m.dtype -}}{{- $_ := set $ms "dtype" $m.dtype -}}
{{- else if not $gpu -}}{{- $_ := set $ms "dtype" "float32" -}}{{- end -}}
{{- with $m.quantization -}}{{- $_ := set $ms "quantization" . -}}{{- end -}}
{{- with $m.kvCacheDtype -}}{{- $_ := set $ms "kv_cache_dtype" . -}}{{- end -}}
{{- with $m.maxNumSeqs -}}{{- $_ := set $ms "max_num_seqs" (int .) -}}{{- end -}}
{{- if hasKey $m "reasoningParser" -}}{{- $_ := set $ms "reasoning_parser" $m.reasoningParser -}}{{- end -}}
{{- with $m.engine -}}{{- $_ := set $ms "engine_extra" . -}}{{- end }}
  {{ $m.id | quote }}:
    {{- toYaml $ms | nindent 4 }}
{{- end }}
{{ toYaml (dict "serve" (dict
  "host" "0.0.0.0"
  "port" (int .Values.serve.port)
  "max_concurrent_per_key" (int .Values.serve.maxConcurrentPerKey)
  "max_n" (int .Values.serve.maxN)
  "request_timeout_s" .Values.serve.requestTimeoutS
  "placement" (ternary "gpu" "simulated" $gpu)
)) }}
{{- end -}}

{{/* Serve deployment names `model@<pool or gpu>`: what r1platform.serving.placement names them. */}}
{{- define "r1p.deploymentNames" -}}
{{- range .Values.models }}
- name: {{ printf "%s@%s" .id (.pool | default (first .gpuTypes)) | quote }}
{{- end -}}
{{- end -}}

{{/* Environment shared by every Ray container (head and workers). */}}
{{- define "r1p.rayEnv" -}}
- name: R1P_CONFIG
  value: /etc/r1p/settings.yaml
# Serve's token-streaming knobs must be in the environment before Ray starts.
- name: RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD
  value: "0"
- name: RAY_SERVE_USE_GRPC_BY_DEFAULT
  value: "0"
- name: RAY_SERVE_REQUEST_PATH_LOG_BUFFER_SIZE
  value: "1000"
- name: RAY_SERVE_LOG_TO_STDERR
  value: "0"
# Each HTTP proxy's guard for requests on an ingress replica that dies (serving/proxy_guard.py).
- name: RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH
  value: "r1platform.serving.proxy_guard:middlewares"
{{- if .Values.modelCache.existingClaim }}
- name: HF_HOME
  value: {{ printf "%s/.hf" .Values.modelCache.mountPath | quote }}
{{- end }}
{{- with .Values.apiKeys.existingSecret }}
- name: R1P_API_KEYS
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: {{ $.Values.apiKeys.key }}
{{- end }}
{{- with (include "r1p.hfTokenSecret" .) }}
{{- $ref := fromJson . }}
- name: HF_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ $ref.name }}
      key: {{ $ref.key }}
{{- end }}
{{- if eq .Values.mode "cpu" }}
- name: VLLM_TARGET_DEVICE
  value: cpu
{{- end }}
{{- end -}}

{{- define "r1p.rayVolumeMounts" -}}
- name: settings
  mountPath: /etc/r1p
  readOnly: true
- name: dshm
  mountPath: /dev/shm
{{- if .Values.modelCache.existingClaim }}
- name: model-cache
  mountPath: {{ .Values.modelCache.mountPath }}
  readOnly: {{ .Values.modelCache.readOnly }}
{{- end }}
{{- end -}}

{{- define "r1p.rayVolumes" -}}
- name: settings
  configMap:
    name: {{ include "r1p.settingsConfigMap" . }}
- name: dshm
  emptyDir:
    medium: Memory
    sizeLimit: {{ .Values.shm.sizeLimit }}
{{- if .Values.modelCache.existingClaim }}
- name: model-cache
  persistentVolumeClaim:
    claimName: {{ .Values.modelCache.existingClaim }}
    readOnly: {{ .Values.modelCache.readOnly }}
{{- end }}
{{- end -}}
