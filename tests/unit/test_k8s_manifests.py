"""KubeRay manifests: everything `raymlops k8s render` writes (and the copies in cluster/kuberay/) is valid
against KubeRay 1.7's CRD schemas and the Kubernetes schemas, and carries the config it was rendered from."""

from __future__ import annotations

import copy
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

from raymlops.config import load_config
from raymlops.ops.kuberay import CONFIG_FILE, MLFLOW_URI, render, write_manifests
from raymlops.serving.serve_config import IMPORT_PATH, check_serve_config
from tests.helpers import REPO, SMOKE_CONFIG

CRDS = REPO / "tests" / "data" / "kuberay-crds"
K8S_VERSION = "1.31"
IMAGE = "raymlops:0.1.0"
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # the same safe loader, in C when PyYAML has libyaml


@pytest.fixture(scope="module")
def crd_schemas() -> dict[str, dict]:
    schemas = {}
    for path in CRDS.glob("ray.io_*.yaml"):
        crd = yaml.load(path.read_text(), Loader=_LOADER)  # 3.3 MB of CRDs: libyaml reads them 8x faster
        (v1,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
        schemas[crd["spec"]["names"]["kind"]] = v1["schema"]["openAPIV3Schema"]
    assert set(schemas) == {"RayCluster", "RayJob", "RayService"}
    return schemas


def problems(doc: dict, crd_schemas: dict) -> list[str]:
    if doc["apiVersion"] == "ray.io/v1":
        return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
                for e in jsonschema.Draft7Validator(crd_schemas[doc["kind"]]).iter_errors(doc)]
    try:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        return [str(exc)]
    return []


@pytest.mark.parametrize("config", ["configs/flights.yaml", "configs/smoke.yaml"])
@pytest.mark.parametrize("gpu", [False, True])
def test_every_rendered_manifest_is_valid(config, gpu, crd_schemas):
    docs = render(load_config(REPO / config), image=IMAGE, project_root=REPO, namespace="ml", gpu=gpu)
    kinds = [d["kind"] for d in docs]
    assert {"RayCluster", "RayJob", "RayService", "Deployment", "StatefulSet", "PersistentVolumeClaim"} <= set(kinds)
    for doc in docs:
        assert problems(doc, crd_schemas) == [], (doc["kind"], doc["metadata"]["name"])
        assert doc["metadata"]["namespace"] == "ml"
    groups = [g["groupName"] for g in next(d for d in docs if d["kind"] == "RayCluster")["spec"]["workerGroupSpecs"]]
    assert groups == (["cpu", "gpu"] if gpu else ["cpu"])


def test_the_validator_is_not_a_rubber_stamp(crd_schemas):
    docs = render(load_config(SMOKE_CONFIG), image=IMAGE, project_root=REPO)
    cluster = copy.deepcopy(next(d for d in docs if d["kind"] == "RayCluster"))
    cluster["spec"]["enableInTreeAutoscaling"] = "yes"
    cluster["spec"]["authOptions"]["mode"] = "open"
    found = problems(cluster, crd_schemas)
    assert any("enableInTreeAutoscaling" in p for p in found) and any("authOptions/mode" in p for p in found)
    deployment = copy.deepcopy(next(d for d in docs if d["kind"] == "Deployment"))
    deployment["spec"]["replicas"] = "one"
    assert problems(deployment, crd_schemas)


def test_the_checked_in_manifests_are_what_render_writes(tmp_path, crd_schemas):
    docs = render(load_config(REPO / "configs" / "flights.yaml"), image=IMAGE, project_root=REPO, gpu=True)
    written = write_manifests(docs, tmp_path)
    shipped = REPO / "cluster" / "kuberay"
    for path in written:
        assert (shipped / path.name).read_text() == path.read_text(), (
            f"cluster/kuberay/{path.name} is stale: run raymlops k8s render configs/flights.yaml "
            f"--image {IMAGE} --gpu -o cluster/kuberay")
        for doc in yaml.safe_load_all(path.read_text()):
            assert problems(doc, crd_schemas) == []


def test_manifests_carry_the_pipeline_config_token_auth_and_the_serve_config(tmp_path):
    cfg = load_config(REPO / "configs" / "flights.yaml")
    docs = {(d["kind"], d["metadata"]["name"]): d for d in render(cfg, image=IMAGE, project_root=REPO)}
    pipeline = docs[("ConfigMap", "raymlops-config")]["data"]["pipeline.yaml"]
    (tmp_path / "pipeline.yaml").write_text(pipeline)
    in_cluster = load_config(tmp_path / "pipeline.yaml")  # what the pods read is a valid config
    assert in_cluster.workdir == "/data/raymlops" and in_cluster.registry.tracking_uri == MLFLOW_URI
    assert in_cluster.data.sources[0].path == "/app/examples/flights/data/flights/2013-0[1-4].parquet"
    assert in_cluster.serving.api_key_file is None and in_cluster.retraining == cfg.retraining
    for kind in ("RayCluster", "RayJob", "RayService"):
        (doc,) = [d for (k, _), d in docs.items() if k == kind]
        spec = doc["spec"].get("rayClusterSpec") or doc["spec"].get("rayClusterConfig") or doc["spec"]
        assert spec["authOptions"] == {"mode": "token"} and spec["rayVersion"] == "2.60.0"
    job = next(d for (k, _), d in docs.items() if k == "RayJob")
    assert job["spec"]["entrypoint"] == f"raymlops run {CONFIG_FILE} --address auto"
    service = next(d for (k, _), d in docs.items() if k == "RayService")
    serve = yaml.safe_load(service["spec"]["serveConfigV2"])
    check_serve_config(serve)  # Serve's own schema
    (app,) = serve["applications"]
    assert app["import_path"] == IMPORT_PATH and app["args"] == {"config": CONFIG_FILE}
    assert serve["http_options"]["host"] == "0.0.0.0"
    mlflow = docs[("Deployment", "mlflow")]["spec"]["template"]["spec"]["containers"][0]
    assert "--app-name basic-auth" in mlflow["command"][-1]
    # Secrets are referenced, never written: not in a value, not on a command line (ps would show it)
    assert "mlflow@postgres:5432" in mlflow["command"][-1] and "PASSWORD" not in mlflow["command"][-1].upper()
    from_secrets = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in mlflow["env"]}
    assert from_secrets == {"PGPASSWORD": {"name": "raymlops-db", "key": "password"},
                            "MLFLOW_AUTH_ADMIN_USERNAME": {"name": "raymlops-mlflow", "key": "username"},
                            "MLFLOW_AUTH_ADMIN_PASSWORD": {"name": "raymlops-mlflow", "key": "password"}}
    head = next(d for (k, _), d in docs.items() if k == "RayCluster")["spec"]["headGroupSpec"]["template"]["spec"]
    ray_env = {e["name"]: e.get("valueFrom", {}).get("secretKeyRef") for e in head["containers"][0]["env"]}
    assert ray_env["MLFLOW_TRACKING_PASSWORD"] == {"name": "raymlops-mlflow", "key": "password"}
    for doc in docs.values():
        def values(node):
            if isinstance(node, dict):
                for key, value in node.items():
                    if key == "value" and isinstance(value, str):
                        yield value
                    yield from values(value)
            elif isinstance(node, list):
                for item in node:
                    yield from values(item)
        for value in values(doc):
            assert "password" not in value.lower(), value
