"""The serving benchmarks' servers: a trained smoke model, request records, and each server as a child
process of the benchmark (raymlops on Ray Serve, the plain FastAPI app, ``mlflow models serve``).

Run as a script it is raymlops' server: it starts a local Ray, then deploys and undeploys on the JSON
commands it reads on stdin and answers on stdout (``python benchmarks/servers.py CONFIG PORT``), so one
Ray serves several deployments in turn while the load generator stays in the benchmark's process.
"""

from __future__ import annotations

import json
import math
import os
import queue
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness import REPO

BASELINES = REPO / "benchmarks" / "baselines"
PY = sys.executable
PROTO = "@@BENCH "
HDR = {"content-type": "application/json"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{Path(PY).parent}{os.pathsep}{env.get('PATH', '')}"  # uvicorn and mlflow of this venv
    env["PYTHONPATH"] = f"{REPO}{os.pathsep}{env.get('PYTHONPATH', '')}".rstrip(os.pathsep)
    env["RAYMLOPS_PROGRESS"] = "0"
    return env | (extra or {})


class Proc:
    """A server process in its own process group, its output in a log file; with ``commands``, it takes
    JSON lines on stdin and answers with ``PROTO`` lines on stdout (``servers.py`` as a script)."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path, commands: bool = False):
        self.log = log
        self.logf = open(log, "w")  # noqa: SIM115 - closed in stop()
        pipe = subprocess.PIPE if commands else None
        self.p = subprocess.Popen(args, env=env, cwd=REPO, stdout=pipe or self.logf, stderr=self.logf,
                                  stdin=pipe or subprocess.DEVNULL, text=True, start_new_session=True)
        self.lines: queue.Queue = queue.Queue()
        if commands:
            threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        for line in self.p.stdout:
            if line.startswith(PROTO):
                self.lines.put(json.loads(line[len(PROTO):]))
            else:
                self.logf.write(line)
        self.lines.put({"event": "exit"})

    def send(self, cmd: dict[str, Any], timeout: float = 240) -> dict[str, Any]:
        self.p.stdin.write(json.dumps(cmd) + "\n")
        self.p.stdin.flush()
        return self.expect(timeout)

    def expect(self, timeout: float = 240) -> dict[str, Any]:
        try:
            msg = self.lines.get(timeout=timeout)
        except queue.Empty:
            raise RuntimeError(f"no answer from the server in {timeout:.0f} s (log: {self.log})") from None
        if msg.get("event") in ("error", "exit"):
            raise RuntimeError(f"server: {msg.get('error', 'exited')} (log: {self.log})")
        return msg

    def stop(self, timeout: float = 60) -> None:
        if self.p.poll() is None:
            try:
                if self.p.stdin:
                    self.p.stdin.write(json.dumps({"cmd": "stop"}) + "\n")
                    self.p.stdin.flush()
                else:
                    self.p.send_signal(signal.SIGINT)
                self.p.wait(timeout)
            except (subprocess.TimeoutExpired, OSError):
                os.killpg(self.p.pid, signal.SIGKILL)  # only the group this benchmark started
                self.p.wait(10)
        self.logf.close()


def start_raymlops(cfg_path: Path, port: int, log: Path, env: dict[str, str] | None = None) -> Proc:
    proc = Proc([PY, __file__, str(cfg_path), str(port)], server_env(env), log, commands=True)
    proc.expect(180)  # Ray is up
    return proc


def wait_http(url: str, timeout: float) -> None:
    deadline, last = time.monotonic() + timeout, ""
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, OSError) as exc:
            last = str(exc)
        time.sleep(0.3)
    raise RuntimeError(f"{url} not ready in {timeout:.0f} s ({last})")


def post_json(url: str, payload: Any) -> Any:
    req = urllib.request.Request(url, data=json.dumps(payload).encode(), headers=HDR, method="POST")
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


# ------------------------------------------------------------------------------ model and requests
@dataclass(frozen=True)
class BenchModel:
    """A trained smoke model and the requests every target gets."""

    folder: Path  # the temp folder (or --workdir) holding the workdir and the config
    cfg_path: Path
    package: Path
    schema: dict[str, Any]
    records: list[dict[str, Any]]

    def bodies(self, wrap: str = "record") -> list[bytes]:
        """One record per request body: raymlops' ``{"record": ...}`` or MLflow's ``{"dataframe_records": [...]}``."""
        return [json.dumps({wrap: r if wrap == "record" else [r]}).encode() for r in self.records]


def prepare_model(workdir: str | None) -> BenchModel:
    """Train the smoke model in a new temp folder, or in ``workdir`` unless one was trained there already."""
    from raymlops.model.packaging import verify_package

    folder = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="serve-bench-"))
    folder.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    cfg_path, package = train(folder)
    schema = verify_package(package)["input_schema"]
    model = BenchModel(folder, cfg_path, package, schema, make_records(schema))
    print(f"model ready in {time.perf_counter() - t0:.0f} s ({folder}); {len(model.records)} request records",
          flush=True)
    return model


def train(tmp: Path) -> tuple[Path, Path]:
    """The smoke config trained for 2 epochs in ``tmp`` (version 1, the champion): (config path, package)."""
    import yaml

    from raymlops.config import load_config
    from raymlops.data.stage import run_data_stage
    from raymlops.runtime.session import ray_runtime
    from raymlops.training.stage import run_training_stage

    pipeline = tmp / "pipeline.yaml"
    if pipeline.is_file():  # --workdir: trained by an earlier run
        return pipeline, tmp / "work" / "packages" / "bench" / "model"
    cfg_path = REPO / "configs" / "smoke.yaml"
    data = yaml.safe_load(cfg_path.read_text())
    for src in data["data"]["sources"]:
        src["path"] = str((cfg_path.parent / src["path"]).resolve())
    data["workdir"] = str(tmp / "work")
    data["training"]["epochs"] = 2
    pipeline.write_text(yaml.safe_dump(data, sort_keys=False))
    cfg = load_config(pipeline)
    with ray_runtime(num_cpus=2):
        trained = run_training_stage(cfg, run_data_stage(cfg), run_name="bench")
    if str(trained.version) != "1":
        raise RuntimeError(f"expected version 1 to be the fresh champion, got {trained.version}")
    return pipeline, Path(trained.package_dir)


def make_records(schema: dict[str, Any], n: int = 256) -> list[dict[str, Any]]:
    """``n`` real records (smoke flights joined with the weather), each one the API accepts."""
    import pandas as pd

    from raymlops.model.inputs import record_model

    record = record_model(schema)
    smoke = REPO / "examples" / "smoke"
    df = pd.read_csv(smoke / "flights.csv").merge(pd.read_csv(smoke / "weather.csv"), on=["origin", "time_hour"],
                                                  how="left").sample(frac=1.0, random_state=0)
    cast = {"int": int, "float": float}
    out = []
    for row in df[list(schema)].to_dict("records"):
        rec = {c: None if v is None or (isinstance(v, float) and math.isnan(v)) else cast.get(schema[c].get("type"), str)(v)
               for c, v in row.items()}
        try:
            record.model_validate(rec)
        except ValueError:  # pydantic's ValidationError: keep only records the API accepts
            continue
        out.append(rec)
        if len(out) == n:
            break
    return out


def log_mlflow_model(cfg_path: Path, package: Path, schema: dict[str, Any]) -> tuple[str, str]:
    """The package logged as an MLflow pyfunc "from code" (``baselines/mlflow_model.py``): (model URI, tracking URI)."""
    import mlflow
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    from raymlops.config import load_config
    from raymlops.registry.store import Registry

    kinds = {"int": "long", "float": "double", "bool": "boolean"}
    sig = ModelSignature(inputs=Schema([ColSpec(kinds.get(s.get("type"), "string"), col,
                                                required=not s.get("nullable", True)) for col, s in schema.items()]))
    cfg = load_config(cfg_path)
    tracking = Registry.for_config(cfg).tracking_uri
    mlflow.set_tracking_uri(tracking)
    name = "serve-bench-baseline"
    if mlflow.get_experiment_by_name(name) is None:  # artifacts in the bench workdir, not ./mlruns
        mlflow.create_experiment(name, artifact_location=(cfg.workdir_path / "mlruns").resolve().as_uri())
    mlflow.set_experiment(name)
    with mlflow.start_run(run_name="pyfunc-from-code"):
        info = mlflow.pyfunc.log_model(name="model", python_model=str(BASELINES / "mlflow_model.py"),
                                       artifacts={"package": str(package)}, signature=sig, pip_requirements=["mlflow"])
    return info.model_uri, tracking


# ------------------------------------------------------------------------------ raymlops' server
def serve_commands(config_path: str, port: int) -> None:
    """Start Ray, then deploy / undeploy / stop on the JSON commands read on stdin."""
    import logging

    def tell(**kw: Any) -> None:
        sys.stdout.write(PROTO + json.dumps(kw, default=str) + "\n")
        sys.stdout.flush()

    from raymlops.config import load_config
    from raymlops.runtime.session import ray_runtime

    cfg = load_config(config_path)
    with ray_runtime(num_cpus=2):
        from ray import serve

        from raymlops.serving.deploy import deploy

        logging.getLogger("ray.serve").setLevel(logging.WARNING)
        tell(event="ray_up")
        try:
            for line in sys.stdin:
                cmd = json.loads(line)
                if cmd["cmd"] == "stop":
                    break
                try:
                    if cmd["cmd"] == "undeploy":
                        serve.delete(cfg.serving.app_name or cfg.model_name)
                        tell(event="undeployed")
                        continue
                    c = cfg if cmd.get("monitoring", True) else cfg.model_copy(
                        update={"monitoring": cfg.monitoring.model_copy(update={"enabled": False})})
                    t0 = time.perf_counter()
                    url = deploy(c, port=port, **cmd.get("overrides", {}))
                    tell(event="ready", url=url, deploy_s=time.perf_counter() - t0)
                except Exception as exc:  # noqa: BLE001 - reported to the benchmark, which skips the variant
                    tell(event="error", error=f"{type(exc).__name__}: {exc}"[-3000:])
        finally:
            serve.shutdown()


if __name__ == "__main__":
    serve_commands(sys.argv[1], int(sys.argv[2]))
