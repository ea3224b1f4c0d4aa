"""KubeRay manifests for a pipeline: the same config as a RayCluster, a RayJob, a RayService, and the
MLflow server, PostgreSQL, shared storage and Prometheus scrape config they use.

Everything is rendered from the pipeline config, so what runs on Kubernetes is what ran on a laptop:

- ``raymlops-config`` (ConfigMap): the pipeline config, with the working folder on the shared volume
  (``/data/raymlops``), MLflow at ``http://mlflow:5000``, and services listening on the pod's address
  (Kubernetes Services and NetworkPolicies decide who reaches them; the API key still guards
  state-changing routes). Local source paths inside the project are re-rooted at ``/app`` (the project
  as the image holds it); object-store URIs are kept.
- ``RayCluster`` (head + an autoscaling CPU worker group, and a GPU group with ``--gpu``), Ray's token
  auth on (``authOptions.mode: token``), the shared volume on every node.
- ``RayJob``: ``raymlops run`` on the config, on a cluster of its own that goes away when it finishes.
- ``RayService``: ``serveConfigV2`` is exactly what ``raymlops serve-config`` writes; upgrades start a new
  cluster and switch traffic when it is ready (``upgradeStrategy.type: NewCluster``).
- MLflow server (Deployment + Service, PostgreSQL backend, artifacts on the shared volume, basic auth),
  PostgreSQL (StatefulSet + Service), the shared volume claim, and a Prometheus scrape config.

Secrets are referenced, never rendered nor put on a command line: ``raymlops-db`` (``password``),
``raymlops-mlflow`` (``username``, ``password``: MLflow's admin, which every Ray pod signs in as) and
``raymlops-api`` (``key``) are created by the operator (see ``cluster/kuberay/README.md``).

Example::

    docs = render(cfg, image="registry.example.com/raymlops:0.1.0", project_root=".")
    write_manifests(docs, "out/k8s")
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from raymlops.config import FileSourceConfig, PipelineConfig
from raymlops.serving.serve_config import serve_config
from raymlops.workspace import write_text_atomic

RAY_VERSION = "2.60.0"
APP_ROOT = "/app"
CONFIG_MOUNT = "/etc/raymlops"
CONFIG_FILE = f"{CONFIG_MOUNT}/pipeline.yaml"
DATA_MOUNT = "/data"
MLFLOW_URI = "http://mlflow:5000"
PORTS = {"gcs-server": 6379, "dashboard": 8265, "client": 10001, "serve": 8000, "metrics": 8080, "monitor": 9108}


def cluster_config(cfg: PipelineConfig, project_root: Path) -> dict[str, Any]:
    """The pipeline config as the cluster sees it (a plain dict, ready for YAML)."""
    data = cfg.model_dump(mode="json", exclude={"base_dir"})
    data["workdir"] = f"{DATA_MOUNT}/raymlops"
    data["registry"]["tracking_uri"] = MLFLOW_URI
    # Inside a pod loopback is unreachable from the Kubernetes Service in front of it, so the pods listen on
    # every interface of their own network namespace: exposure is the Services' (ClusterIP, not public),
    # and Ray's token and the API key still guard them. The local default stays 127.0.0.1.
    data["serving"]["host"] = "0.0.0.0"
    data["serving"]["api_key_env"] = "RAYMLOPS_API_KEY"
    data["serving"]["api_key_file"] = None
    data["monitoring"]["metrics_host"] = "0.0.0.0"
    data["monitoring"]["metrics_port"] = PORTS["monitor"]
    for src, model in zip(data["data"]["sources"], cfg.data.sources, strict=True):
        if isinstance(model, FileSourceConfig):
            paths = model.path if isinstance(model.path, list) else [model.path]
            moved = [_in_image(cfg.resolve_path(p), project_root) for p in paths]
            src["path"] = moved if isinstance(model.path, list) else moved[0]
    return data


def _in_image(path: str, project_root: Path) -> str:
    if "://" in path:
        return path
    try:
        return f"{APP_ROOT}/{Path(path).resolve().relative_to(project_root.resolve()).as_posix()}"
    except ValueError:
        return path  # outside the project: it must exist at this path on every node (shared volume)


DB_SECRET, MLFLOW_SECRET, API_SECRET = "raymlops-db", "raymlops-mlflow", "raymlops-api"


def _secret_env(name: str, secret: str, key: str) -> dict[str, Any]:
    """An environment variable taken from a Kubernetes Secret: the value is never in a manifest, nor on a
    command line (where ``ps`` and the pod spec would show it)."""
    return {"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}


def _labels(name: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": name, "app.kubernetes.io/part-of": "raymlops"}


def _ray_container(name: str, image: str, cpu: str, memory: str, gpus: int = 0) -> dict[str, Any]:
    limits: dict[str, Any] = {"cpu": cpu, "memory": memory}
    if gpus:
        limits["nvidia.com/gpu"] = gpus
    return {
        "name": name, "image": image, "imagePullPolicy": "IfNotPresent",
        "resources": {"requests": {"cpu": cpu, "memory": memory}, "limits": limits},
        "env": [{"name": "MLFLOW_TRACKING_URI", "value": MLFLOW_URI},
                # MLflow runs with basic auth: every Ray process signs in with the raymlops-mlflow Secret
                _secret_env("MLFLOW_TRACKING_USERNAME", MLFLOW_SECRET, "username"),
                _secret_env("MLFLOW_TRACKING_PASSWORD", MLFLOW_SECRET, "password"),
                _secret_env("RAYMLOPS_API_KEY", API_SECRET, "key")],
        "volumeMounts": [{"name": "shared", "mountPath": DATA_MOUNT},
                         {"name": "config", "mountPath": CONFIG_MOUNT, "readOnly": True}],
    }


def _volumes() -> list[dict[str, Any]]:
    return [{"name": "shared", "persistentVolumeClaim": {"claimName": "raymlops-shared"}},
            {"name": "config", "configMap": {"name": "raymlops-config"}}]


def ray_cluster_spec(image: str, *, gpu: bool = False, max_workers: int = 4) -> dict[str, Any]:
    head = _ray_container("ray-head", image, "2", "8Gi")
    head["ports"] = [{"name": n, "containerPort": p} for n, p in PORTS.items()]
    workers = [{
        "groupName": "cpu", "replicas": 1, "minReplicas": 0, "maxReplicas": max_workers,
        "rayStartParams": {},
        "template": {"spec": {"containers": [_ray_container("ray-worker", image, "4", "16Gi")],
                              "volumes": _volumes()}},
    }]
    if gpu:
        workers.append({
            "groupName": "gpu", "replicas": 0, "minReplicas": 0, "maxReplicas": 2,
            "rayStartParams": {},
            "template": {"spec": {
                "containers": [_ray_container("ray-worker", image, "8", "32Gi", gpus=1)],
                "volumes": _volumes(),
                "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]}},
        })
    return {
        "rayVersion": RAY_VERSION,
        "enableInTreeAutoscaling": True,
        "autoscalerOptions": {"upscalingMode": "Default", "idleTimeoutSeconds": 300},
        "authOptions": {"mode": "token"},
        "headGroupSpec": {
            # The Jobs API must answer the head's ClusterIP Service (token auth on); the head schedules no work.
            "rayStartParams": {"dashboard-host": "0.0.0.0", "num-cpus": "0"},
            "template": {"metadata": {"labels": _labels("ray-head")},
                         "spec": {"containers": [head], "volumes": _volumes()}},
        },
        "workerGroupSpecs": workers,
    }


def render(cfg: PipelineConfig, *, image: str, project_root: str | Path = ".",
           namespace: str | None = None, gpu: bool = False, max_workers: int = 4) -> list[dict[str, Any]]:
    """Every manifest, as dicts in the order ``kubectl apply`` should see them."""
    root = Path(project_root)
    name = cfg.model_name.replace("_", "-").lower()
    pipeline = cluster_config(cfg, root)
    meta = {"namespace": namespace} if namespace else {}
    spec = ray_cluster_spec(image, gpu=gpu, max_workers=max_workers)
    serve_doc = serve_config(cfg.model_copy(update={"serving": cfg.serving.model_copy(update={"host": "0.0.0.0"})}),
                             CONFIG_FILE)
    docs: list[dict[str, Any]] = [
        {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
         "metadata": {"name": "raymlops-shared", "labels": _labels("raymlops-shared"), **meta},
         "spec": {"accessModes": ["ReadWriteMany"], "resources": {"requests": {"storage": "100Gi"}}}},
        {"apiVersion": "v1", "kind": "ConfigMap",
         "metadata": {"name": "raymlops-config", "labels": _labels("raymlops-config"), **meta},
         "data": {"pipeline.yaml": yaml.safe_dump(pipeline, sort_keys=False)}},
        *postgres(meta), *mlflow_server(image, meta),
        {"apiVersion": "ray.io/v1", "kind": "RayCluster",
         "metadata": {"name": f"{name}-cluster", "labels": _labels("raycluster"), **meta}, "spec": spec},
        {"apiVersion": "ray.io/v1", "kind": "RayJob",
         "metadata": {"name": f"{name}-train", "labels": _labels("rayjob"), **meta},
         "spec": {"entrypoint": f"raymlops run {CONFIG_FILE} --address auto",
                  "shutdownAfterJobFinishes": True, "ttlSecondsAfterFinished": 3600,
                  "submissionMode": "K8sJobMode", "rayClusterSpec": copy.deepcopy(spec)}},
        {"apiVersion": "ray.io/v1", "kind": "RayService",
         "metadata": {"name": f"{name}-serve", "labels": _labels("rayservice"), **meta},
         "spec": {"upgradeStrategy": {"type": "NewCluster"},
                  "serveConfigV2": yaml.safe_dump(serve_doc, sort_keys=False),
                  "rayClusterConfig": copy.deepcopy(spec)}},
        prometheus_config(meta),
    ]
    return docs


def postgres(meta: dict[str, Any]) -> list[dict[str, Any]]:
    labels = _labels("postgres")
    return [
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "postgres", "labels": labels, **meta},
         "spec": {"selector": labels, "ports": [{"name": "postgres", "port": 5432}], "clusterIP": "None"}},
        {"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "postgres", "labels": labels, **meta},
         "spec": {"serviceName": "postgres", "replicas": 1, "selector": {"matchLabels": labels},
                  "template": {"metadata": {"labels": labels}, "spec": {"containers": [{
                      "name": "postgres", "image": "postgres:16",
                      "env": [{"name": "POSTGRES_DB", "value": "mlflow"}, {"name": "POSTGRES_USER", "value": "mlflow"},
                              {"name": "POSTGRES_PASSWORD",
                               "valueFrom": {"secretKeyRef": {"name": "raymlops-db", "key": "password"}}},
                              {"name": "PGDATA", "value": "/var/lib/postgresql/data/pgdata"}],
                      "ports": [{"name": "postgres", "containerPort": 5432}],
                      "readinessProbe": {"exec": {"command": ["pg_isready", "-U", "mlflow"]}, "periodSeconds": 5},
                      "volumeMounts": [{"name": "pgdata", "mountPath": "/var/lib/postgresql/data"}]}]}},
                  "volumeClaimTemplates": [{"metadata": {"name": "pgdata"}, "spec": {
                      "accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "20Gi"}}}}]}},
    ]


def mlflow_server(image: str, meta: dict[str, Any]) -> list[dict[str, Any]]:
    """MLflow's tracking server on PostgreSQL with basic auth on (it is reachable beyond loopback here)."""
    labels = _labels("mlflow")
    # No secret on the command line: PostgreSQL's client reads PGPASSWORD, and MLflow's auth app creates its
    # admin from MLFLOW_AUTH_ADMIN_USERNAME/PASSWORD (MLflow ships no default admin password).
    command = ("exec mlflow server --app-name basic-auth --host 0.0.0.0 --port 5000 "
               "--backend-store-uri postgresql+psycopg2://mlflow@postgres:5432/mlflow "
               f"--artifacts-destination {DATA_MOUNT}/mlartifacts --serve-artifacts")
    return [
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "mlflow", "labels": labels, **meta},
         "spec": {"selector": labels, "ports": [{"name": "http", "port": 5000, "targetPort": 5000}]}},
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "mlflow", "labels": labels, **meta},
         "spec": {"replicas": 1, "selector": {"matchLabels": labels},
                  "template": {"metadata": {"labels": labels}, "spec": {
                      "containers": [{
                          "name": "mlflow", "image": image, "command": ["/bin/sh", "-c", command],
                          "env": [_secret_env("PGPASSWORD", DB_SECRET, "password"),
                                  _secret_env("MLFLOW_AUTH_ADMIN_USERNAME", MLFLOW_SECRET, "username"),
                                  _secret_env("MLFLOW_AUTH_ADMIN_PASSWORD", MLFLOW_SECRET, "password")],
                          "ports": [{"name": "http", "containerPort": 5000}],
                          "readinessProbe": {"httpGet": {"path": "/health", "port": 5000}, "periodSeconds": 10},
                          "volumeMounts": [{"name": "shared", "mountPath": DATA_MOUNT}]}],
                      "volumes": [{"name": "shared", "persistentVolumeClaim": {"claimName": "raymlops-shared"}}]}}}},
    ]


def prometheus_config(meta: dict[str, Any]) -> dict[str, Any]:
    """Scrape Ray's metrics (8080) and the model monitor (9108) on the pods of every RayCluster."""
    scrape = {"scrape_configs": [
        {"job_name": name, "kubernetes_sd_configs": [{"role": "pod"}],
         "relabel_configs": [
             {"source_labels": ["__meta_kubernetes_pod_label_ray_io_is_ray_node"], "regex": "yes", "action": "keep"},
             {"source_labels": ["__meta_kubernetes_pod_container_port_number"], "regex": str(port),
              "action": "keep"}]}
        for name, port in (("ray", PORTS["metrics"]), ("raymlops", PORTS["monitor"]))]}
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "raymlops-prometheus", "labels": _labels("prometheus"), **meta},
            "data": {"prometheus.yml": yaml.safe_dump(scrape, sort_keys=False)}}


def write_manifests(docs: list[dict[str, Any]], out: str | Path) -> list[Path]:
    """One file per kind (``raycluster.yaml``, ``rayservice.yaml``, ...), each written atomically."""
    out = Path(out)
    files: dict[str, list[dict[str, Any]]] = {}
    for doc in docs:
        files.setdefault(_file_for(doc), []).append(doc)
    written = []
    for file, group in files.items():
        text = "# Rendered by `raymlops k8s render`; edit the pipeline config, not this file.\n" + \
            yaml.safe_dump_all(group, sort_keys=False)
        written.append(write_text_atomic(out / file, text))
    return written


def _file_for(doc: dict[str, Any]) -> str:
    name = doc["metadata"]["name"]
    if doc["apiVersion"] == "ray.io/v1":
        return f"{doc['kind'].lower()}.yaml"
    if name in ("postgres", "mlflow"):
        return f"{name}.yaml"
    return {"raymlops-shared": "storage.yaml", "raymlops-config": "config.yaml",
            "raymlops-prometheus": "prometheus.yaml"}[name]


__all__ = ["cluster_config", "render", "write_manifests"]
