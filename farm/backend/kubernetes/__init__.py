"""A Kubernetes cluster as a backend: each job is a Job, placed by the labels the cluster's nodes already carry.

Placement. ``kubernetes.io/arch`` picks the architecture, and Node Feature Discovery's
``feature.node.kubernetes.io/cpu-cpuid.<FLAG>`` labels pick the ISA tier: a target's ``cpu_features`` become a
nodeSelector (each label ``"true"``), and its ``cpu_excludes`` become node affinity ``NotIn ["true"]`` requirements,
since a nodeSelector cannot say "not": the AVX2 tier never lands on an AVX-512 node, the VNNI tier never on an AMX
one. A GPU target asks for ``nvidia.com/gpu`` (the device plugin's resource) and tolerates the taint clusters put on
GPU nodes. There is no masking and no QEMU on a cluster: a target runs natively on a node of its tier, or not at all.

Images. The target's image is built (or found) on the controller's Docker engine, as for local targets, and pushed
to the registry named in targets.toml as ``<registry>/farm-<target>:<content hash>``; the tag is the content, so a
push happens once per content and ``IfNotPresent`` is always right.

Inputs and results travel through the API server only (no shared volume, no node access, no extra service):

- Inputs: an init container (``receive``, the target's own image and Python) waits until the controller has
  streamed a tar of the job's read-only mounts into an emptyDir through ``pods/exec`` (stdin, length-framed, so it
  works on the v4 and v5 exec protocols alike); the job container then mounts each part read-only (subPath). Not a
  ConfigMap or Secret: those stop at 1 MiB (a model and its artifacts are usually more), and they would keep the
  user's model in etcd, readable by anyone who may read ConfigMaps there, after the job is gone.
- Results: a second container (``collect``) holds the job's writable emptyDirs and waits; once the job container has
  ended, for whatever reason (exit, crash, its budget, the OOM killer), the controller execs a tar of them out of
  ``collect`` and unpacks it into the mounts' source folders. Not the pod's log: the kubelet rotates logs (10 MiB by
  default) and results hold a model's size (optimized.onnx); and a separate container, unlike a tar written by the
  job itself at its end, survives the job's own OOM kill (each container is its own cgroup), so partial results come
  back as they do from a local container.
- The budget: Kubernetes has no per-container deadline, so the job container's command is wrapped in
  ``python -m farm.job.pod.budget``, in the image's Python, which stops the job at its budget (exit 124, reported
  as timed out) while ``collect`` keeps its results. The Job's ``activeDeadlineSeconds`` (budget plus time to
  start, receive and collect) is the backstop for a controller that died; ``ttlSecondsAfterFinished`` and ``sweep``
  remove what is left.

Hardening, as for local containers: every container runs as 65534 (runAsNonRoot), with a read-only root filesystem,
no privilege escalation, every capability dropped, not privileged, the RuntimeDefault seccomp profile, memory and
CPU limits equal to requests, ``/tmp`` an emptyDir with a size limit, no service account token, no service links,
and a NetworkPolicy that denies all ingress and egress of the job's pod (``network_mode="none"``; enforced where
the cluster's network plugin enforces NetworkPolicy). The pod passes the "restricted" Pod Security Standard. What
Kubernetes cannot set per pod: a pids limit (the kubelet's ``podPidsLimit`` applies).

Everything farm creates carries ``farm.run`` (the Job's name), ``farm.target`` and ``farm.host.owner`` (a label-safe
digest; the controller process itself, as farm/host/owner.py writes it, is the ``farm.host.owner`` annotation). The
NetworkPolicy is owned by its Job, so deleting the Job, by farm, by the TTL controller or by hand, removes it too.

The ``kubernetes`` client is imported only inside the functions that talk to a cluster, so that ``farm`` starts as
fast without it; building manifests needs no client.

The modules: ``placement`` (labels, nodes, where a target may run), ``manifests`` (the Job and its NetworkPolicy),
``client`` (the API, its objects and failures), ``transfer`` (files in and out through ``pods/exec``), ``jobrun``
(one Job from creation to deletion), ``backend`` (``KubernetesBackend``, the Backend protocol). What runs in the
pod's containers besides the job is farm/job/pod/ (standard library only, shipped in every image).
"""
