{{/*
The Ray cluster spec shared by the RayService and the GRPO RayJob.
Args: dict "root" $ "pools" <list> "serve" <bool: expose the Serve port>.
*/}}
{{- define "r1p.rayClusterSpec" -}}
{{- $root := .root -}}
{{- $v := $root.Values -}}
{{- $image := include "r1p.image" $root -}}
rayVersion: {{ $v.rayVersion | quote }}
enableInTreeAutoscaling: true
autoscalerOptions:
  version: {{ $v.autoscaler.version }}
  upscalingMode: {{ $v.autoscaler.upscalingMode }}
  idleTimeoutSeconds: {{ $v.autoscaler.idleTimeoutSeconds }}
  image: {{ include "r1p.imageOr" (dict "img" $v.autoscaler.image "root" $root "field" "autoscaler.image") }}
  imagePullPolicy: {{ $v.image.pullPolicy }}
  resources:
    {{- toYaml $v.autoscaler.resources | nindent 4 }}
  # KubeRay injects the autoscaler sidecar with no securityContext unless given here.
  securityContext:
    {{- include "r1p.containerSecurityContext" $root | nindent 4 }}
{{- if $v.rayAuth.enabled }}
authOptions:
  mode: token
  secretName: {{ include "r1p.authSecret" $root }}
{{- end }}
{{- if $v.gcsFaultTolerance.enabled }}
gcsFaultToleranceOptions:
  {{- if eq $v.gcsFaultTolerance.backend "rocksdb" }}
  backend: rocksdb
  {{- else }}
  redisAddress: {{ $v.gcsFaultTolerance.redisAddress | quote }}
  {{- with $v.gcsFaultTolerance.redisPasswordSecret.name }}
  redisPassword:
    valueFrom:
      secretKeyRef:
        name: {{ . }}
        key: {{ $v.gcsFaultTolerance.redisPasswordSecret.key }}
  {{- end }}
  {{- with $v.gcsFaultTolerance.externalStorageNamespace }}
  externalStorageNamespace: {{ . | quote }}
  {{- end }}
  {{- end }}
{{- end }}
{{- if $v.networkPolicy.kuberayNetworkPolicy }}
networkPolicy:
  mode: DenyAllIngress
{{- end }}
headGroupSpec:
  rayStartParams:
    # The head never gets GPUs; Serve's proxy and controller and GCS live here.
    num-gpus: "0"
    dashboard-host: 0.0.0.0
    metrics-export-port: "8080"
  template:
    metadata:
      labels:
        {{- include "r1p.selectorLabels" $root | nindent 8 }}
        r1p.io/role: ray-head
      annotations:
        # Settings are read when the Serve app is built: a change rolls a new cluster rather
        # than racing the kubelet's lazy ConfigMap refresh.
        checksum/settings: {{ include "r1p.settings" $root | sha256sum }}
    spec:
      securityContext:
        {{- include "r1p.podSecurityContext" $root | nindent 8 }}
      {{- with $v.image.pullSecrets }}
      imagePullSecrets:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $v.head.nodeSelector }}
      nodeSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $v.head.tolerations }}
      tolerations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      containers:
        - name: ray-head
          image: {{ $image }}
          imagePullPolicy: {{ $v.image.pullPolicy }}
          ports:
            - {containerPort: 6379, name: gcs}
            - {containerPort: 8265, name: dashboard}
            - {containerPort: 10001, name: client}
            - {containerPort: 8080, name: metrics}
            {{- if .serve }}
            - {containerPort: {{ $v.serve.port }}, name: serve}
            {{- end }}
          env:
            {{- include "r1p.rayEnv" $root | nindent 12 }}
            # Ray Client's proxier (the controller's ray:// endpoint) forks one server per client
            # from a thread-busy gRPC process, and gRPC's fork handlers then abort that child now
            # and then (ray-project/ray#63202: 1 connect in 12 here, 0 in 30 with this). The fork
            # is always followed by exec, the case gRPC documents this switch for.
            - name: GRPC_ENABLE_FORK_SUPPORT
              value: "false"
          resources:
            {{- toYaml $v.head.resources | nindent 12 }}
          securityContext:
            {{- include "r1p.containerSecurityContext" $root | nindent 12 }}
          volumeMounts:
            {{- include "r1p.rayVolumeMounts" $root | nindent 12 }}
      volumes:
        {{- include "r1p.rayVolumes" $root | nindent 8 }}
workerGroupSpecs:
{{- range $p := .pools }}
  {{- include "r1p.workerGroup" (dict "root" $root "pool" $p "image" $image) | nindent 2 }}
{{- end }}
{{- end -}}

{{/*
One worker group per pool. The group-level labels/resources declare the accelerator type so
autoscaler v2 can scale the group from zero (Ray's own detection names neither A100-80G nor
A100-40G); `pool:<name>` units are the platform's per-pool placement handle.
*/}}
{{- define "r1p.workerGroup" -}}
{{- $v := .root.Values -}}
{{- $p := .pool -}}
{{- $gpu := eq $v.mode "gpu" -}}
{{- $products := (fromYaml (.root.Files.Get "generated/gpu-products.yaml")).gpuProducts -}}
- groupName: {{ $p.name }}
  replicas: {{ $p.replicas }}
  minReplicas: {{ $p.minReplicas }}
  maxReplicas: {{ $p.maxReplicas }}
  {{- /* hasKey, not default: 0 (release idle nodes at once) is a real setting */}}
  idleTimeoutSeconds: {{ ternary $p.idleTimeoutSeconds $v.autoscaler.idleTimeoutSeconds (hasKey $p "idleTimeoutSeconds") }}
  rayStartParams: {}
  labels:
    ray.io/accelerator-type: {{ $p.gpu | quote }}
    r1p.pool: {{ $p.name | quote }}
  resources:
    {{- if $gpu }}
    {{ printf "accelerator_type:%s" $p.gpu | quote }}: "1"
    {{- else }}
    # cpu mode: the simulated-fleet convention, one unit per would-be GPU and no "GPU".
    {{ printf "accelerator_type:%s" $p.gpu | quote }}: {{ $p.gpusPerNode | quote }}
    {{- end }}
    {{ printf "pool:%s" $p.name | quote }}: {{ $p.gpusPerNode | quote }}
  template:
    metadata:
      labels:
        {{- include "r1p.selectorLabels" .root | nindent 8 }}
        r1p.io/role: ray-worker
        r1p.pool: {{ $p.name | quote }}
      annotations:
        checksum/settings: {{ include "r1p.settings" .root | sha256sum }}
    spec:
      securityContext:
        {{- include "r1p.podSecurityContext" .root | nindent 8 }}
      {{- with $v.image.pullSecrets }}
      imagePullSecrets:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- if $p.nodeSelector }}
      nodeSelector:
        {{- toYaml $p.nodeSelector | nindent 8 }}
      {{- else if $gpu }}
      affinity:
        nodeAffinity:
          requiredDuringSchedulingIgnoredDuringExecution:
            nodeSelectorTerms:
              - matchExpressions:
                  - key: nvidia.com/gpu.product
                    operator: In
                    values:
                      {{- toYaml (index $products $p.gpu) | nindent 22 }}
      {{- end }}
      {{- if hasKey $p "tolerations" }}
      {{- with $p.tolerations }}
      tolerations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- else if $gpu }}
      tolerations:
        - {key: nvidia.com/gpu, operator: Exists, effect: NoSchedule}
      {{- end }}
      containers:
        - name: ray-worker
          image: {{ .image }}
          imagePullPolicy: {{ $v.image.pullPolicy }}
          ports:
            - {containerPort: 8080, name: metrics}
            - {containerPort: {{ $v.serve.port }}, name: serve}
          env:
            {{- include "r1p.rayEnv" .root | nindent 12 }}
          {{- $res := deepCopy (default dict $p.resources) }}
          {{- if $gpu }}
          {{- $_ := set $res "limits" (merge (dict "nvidia.com/gpu" (int $p.gpusPerNode)) (default dict $res.limits)) }}
          {{- $_ := set $res "requests" (merge (dict "nvidia.com/gpu" (int $p.gpusPerNode)) (default dict $res.requests)) }}
          {{- end }}
          {{- with $res }}
          resources:
            {{- toYaml . | nindent 12 }}
          {{- end }}
          securityContext:
            {{- include "r1p.containerSecurityContext" .root | nindent 12 }}
          volumeMounts:
            {{- include "r1p.rayVolumeMounts" .root | nindent 12 }}
      volumes:
        {{- include "r1p.rayVolumes" .root | nindent 8 }}
{{- end -}}
