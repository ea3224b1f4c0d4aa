"""The Ray Serve application: a FastAPI ingress in front of the registry's champion (and challenger).

Routes (under ``serving.route_prefix``):

    POST /v1/predict    one record or a list; typed by the model's input schema (422 names the field)
    POST /v1/feedback   true outcomes by request id (API key)
    POST /v1/admin/refresh  re-read the registry aliases now, on the replica that gets it (API key)
    GET  /v1/model      versions served, lineage, input schema, last load errors
    GET  /healthz       the process answers          GET /readyz   the champion predicts
    GET  /docs, /openapi.json

What keeps it safe under load: requests are batched (``@serve.batch``); each replica takes at most
``max_ongoing_requests``; each proxy queues at most ``max_queued_requests`` and sheds the rest at once
with 503/429 and ``Retry-After``; the proxy answers 408 after ``request_timeout_s``; bodies over
``max_body_bytes`` get 413 before they are parsed. Model calls run off the event loop with the same
deadline (``model_calls``): a hung call gets 504 even when a client's ``x-request-timeout-seconds``
header switched the proxy's timeout off, and the replica keeps answering. Nothing a request carries is
ever unpickled.

``build_app(settings)`` makes the application; ``app_builder({"config": PATH})`` is the import path that
``serve deploy`` and KubeRay's ``serveConfigV2`` use (see ``raymlops serve-config``).
"""

# No ``from __future__ import annotations`` here: FastAPI reads the route annotations at runtime, and the
# request model is built per deployment inside ``build_app``.

import asyncio
import hmac
import json
import logging
import math
import random
import time
import uuid
from typing import Any

import numpy as np
from fastapi import Depends, FastAPI, HTTPException, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from ray import serve

from raymlops.errors import ModelPackageError
from raymlops.model.inputs import frame_from_rows, probe_record, record_model
from raymlops.registry.store import CHAMPION, Registry
from raymlops.serving.admission import SloAdmission
from raymlops.serving.api_key import load_api_key
from raymlops.serving.model_calls import ModelCallTimeout, ModelCalls
from raymlops.serving.rollout import ModelSlots
from raymlops.serving.schema import (FeedbackRequest, FeedbackResponse, PredictResponse, feedback_labels,
                                     predict_request_model, predictions_for)
from raymlops.serving.serve_config import DEPLOYMENT, HEALTH_CHECK_TIMEOUT_S, deployment_options
from raymlops.serving.settings import ServeSettings, settings_for

log = logging.getLogger("raymlops.serving")
MAX_SAMPLED_ROWS = 64  # rows of one request handed to the monitor
MODEL_CALL_THREADS = 4  # per replica; more hung calls than this queue (and time out) behind them
STARTUP_CACHE_CHECKS = 5  # a node's confirmed champion is trusted at start for this many watch intervals


def _process_age_s() -> float:
    """Seconds since this replica's process started: its start cost beyond our ``__init__``."""
    import psutil

    return round(time.time() - psutil.Process().create_time(), 3)


class ErrorDetail(BaseModel):
    detail: str = Field(description="What was wrong, in words.")


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for the errors a route can answer (422 is documented by FastAPI itself)."""
    return {code: {"model": ErrorDetail, "description": ERROR_MEANINGS[code]} for code in codes}


ERROR_MEANINGS = {
    400: "The body is not JSON.",
    401: "No API key was sent, or the service has none configured.",
    403: "The API key was not accepted.",
    408: "Not answered within serving.request_timeout_s (Serve's proxy).",
    409: "The registry points at a version this replica cannot load; it keeps serving the current one.",
    413: "The body is larger than serving.max_body_bytes.",
    503: "Shed under overload (see Retry-After), not ready yet, or the monitor is restarting.",
    504: "The model did not answer within serving.request_timeout_s.",
}


def _jsonable(row: dict[str, Any]) -> dict[str, Any]:
    return {k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in row.items()}


class BodyLimit:
    """ASGI middleware: refuse bodies over ``limit`` bytes with 413, by header or while streaming."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            return await self._refuse(send)
        seen = 0

        async def limited() -> dict:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise _TooLarge()
            return message

        try:
            await self.app(scope, limited, send)
        except _TooLarge:
            await self._refuse(send)

    async def _refuse(self, send: Any) -> None:
        body = (b'{"detail":"request body is larger than %d bytes (serving.max_body_bytes)"}' % self.limit)
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


class _TooLarge(Exception):
    pass


class AdmitBySlo:
    """ASGI middleware: admission by ``monitoring.latency_slo_ms`` (``serving/admission.py``) for predictions.

    A prediction beyond the replica's learned limit gets ``serving.shed_status`` with ``Retry-After`` before
    its body is read (nothing was done: it may be retried anywhere); an admitted one's time in the replica,
    body parsing included, moves the limit when it is answered with 200. The floor is twice what one model
    call takes together (a batch, or the model-call threads without batching): one call running and the next
    one filling, so the model never waits for requests to come through the proxy. Made in each replica's process
    (Starlette builds its middleware there), which keeps its gate on ``state.admission`` for ``/v1/model``.
    """

    def __init__(self, app: Any, state: Any, serving: Any, monitoring: Any) -> None:
        together = serving.batching.max_batch_size if serving.batching.enabled else MODEL_CALL_THREADS
        self.app = app
        self.gate = SloAdmission(monitoring.latency_slo_ms / 1000, floor=min(2 * together, serving.max_ongoing_requests),
                                 ceiling=serving.max_ongoing_requests)
        state.admission = self.gate
        self.status = serving.shed_status
        body = b'{"detail":"shed: this replica has as many requests as keep its latency within ' \
               b'monitoring.latency_slo_ms; retry after Retry-After seconds"}'
        retry_after = str(math.ceil(serving.retry_after_s)).encode()  # whole seconds, as HTTP (and Serve) says
        self.shed_start = {"type": "http.response.start", "status": self.status, "headers": [
            (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
            (b"retry-after", retry_after)]}
        self.shed_body = {"type": "http.response.body", "body": body}

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope.get("method") != "POST" or not scope["path"].endswith("/v1/predict"):
            return await self.app(scope, receive, send)
        ticket = self.gate.enter()
        if ticket is None:
            await send(self.shed_start)
            await send(self.shed_body)
            return
        status = 0

        async def noting_status(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, noting_status)
        finally:  # a failed or cancelled call says nothing about how long a good answer takes
            self.gate.leave(ticket, measured=status == 200)


def _presented_key(request: Request) -> str | None:
    auth = request.headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip()
    return request.headers.get("x-api-key")


async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    """422 naming each bad field and why, without echoing the input back (it may hold NaN, or be huge)."""
    detail = [{"loc": list(e.get("loc", [])), "msg": str(e.get("msg", "")), "type": str(e.get("type", ""))}
              for e in exc.errors()[:50]]
    return JSONResponse({"detail": detail}, status_code=422)


LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


def keep_replica_grpc_on_loopback() -> None:
    """Bind this replica's inter-deployment gRPC server to 127.0.0.1 instead of every interface.

    Ray Serve 2.60 starts it on ``[::]:0`` in every replica, whatever the HTTP host. When the service is
    configured for loopback (the default) on a node that is itself loopback (raymlops' embedded Ray), no
    other machine may reach it. Called in the replica before Serve starts that server; on a real cluster
    (node address not loopback) it does nothing, since proxies on other nodes must reach the replica.
    """
    import ray
    import ray.serve._private.replica as replica_module

    if ray.util.get_node_ip_address() not in LOOPBACK_HOSTS:
        return
    original = replica_module.add_port_to_grpc_server
    if getattr(original, "_raymlops_loopback", False):
        return

    def add_port(server, address):
        return original(server, "127.0.0.1:0" if address == "[::]:0" else address)

    add_port._raymlops_loopback = True
    replica_module.add_port_to_grpc_server = add_port


def build_app(settings: ServeSettings) -> Any:
    """The Serve application for one model (``settings``: see ``serving.settings.settings_for``)."""
    serving, schema, model_name = settings.serving, settings.input_schema, settings.model
    Record = record_model(schema, name="Record")
    PredictRequest = predict_request_model(Record, serving.max_records_per_request)
    api = FastAPI(title=f"raymlops: {model_name}", version="1",
                  description=f"Predictions of the registered model {model_name!r} (champion alias).")
    api.add_middleware(BodyLimit, limit=serving.max_body_bytes)
    if serving.admission == "slo":  # outermost: a shed prediction is not even read
        api.add_middleware(AdmitBySlo, state=api.state, serving=serving, monitoring=settings.monitoring)
    api.add_exception_handler(RequestValidationError, _validation_error)

    def key_check(required: bool):
        def check(request: Request) -> None:
            if not required:
                return
            expected = request.app.state.api_key
            if expected is None:
                raise HTTPException(401, "this service has no API key configured (set "
                                         f"{serving.api_key_env} or serving.api_key_file); "
                                         "state-changing routes are disabled")
            presented = _presented_key(request)
            if not presented:
                raise HTTPException(401, "API key required: send 'Authorization: Bearer KEY' or 'X-API-Key: KEY'",
                                    headers={"WWW-Authenticate": "Bearer"})
            if not hmac.compare_digest(presented.encode(), expected.encode()):
                raise HTTPException(403, "API key not accepted")
        return Depends(check)

    predict_key = key_check(serving.require_key_for_predict)
    admin_key = key_check(True)

    async def score_rows(calls: ModelCalls, model: Any, rows: list[dict[str, Any]]) -> np.ndarray:
        """Rows to features on the event loop (our own code, bounded); the model itself in a model-call
        thread, under the deadline. Only the forward pass moves: it releases the GIL, while pandas work in
        a second thread fought the event loop for it (half the requests/s at 32 clients,
        benchmarks/serve_bench.py). Validated records become feature arrays directly (~0.1 ms); the typed
        frame (~20 ms) only for the values that path leaves to it."""
        features = model.features.transform_records(rows)
        if features is None:
            features = model.features.transform_frame(frame_from_rows(rows, schema))
        return await calls.run(model.predict_features, features)

    @serve.ingress(api)
    class ModelServer:
        def __init__(self) -> None:
            if serving.host in LOOPBACK_HOSTS:
                keep_replica_grpc_on_loopback()
            api.state.api_key = load_api_key(serving)
            if api.state.api_key is None:
                log.warning("no API key configured: /v1/feedback and /v1/admin/* refuse every request")
            started = time.monotonic()
            self.registry = Registry.for_workdir(settings.workdir, settings.tracking_uri)
            self.slots = ModelSlots(self.registry, model_name, schema,
                                    trusted_builders=settings.trusted_builders)
            # A replacement replica starts from the champion its node confirmed with the registry within
            # the last few checks (no MLflow on the way to serving), and checks the registry right after.
            self.checked = not self.slots.start_from_cache(max_age_s=STARTUP_CACHE_CHECKS * serving.watch_interval_s)
            if self.checked:
                self.slots.refresh()  # raises (and the replica fails to start) when no champion can be served
            self.startup = {"from": "registry" if self.checked else "node cache",
                            "init_s": 0.0, "process_s": _process_age_s()}
            self.calls = ModelCalls(MODEL_CALL_THREADS, serving.request_timeout_s)
            # The probe must fail before Serve's own health-check timeout does, with a message that says why.
            self.probe_timeout_s = min(serving.request_timeout_s, HEALTH_CHECK_TIMEOUT_S / 2)
            self.probe = frame_from_rows(
                                         [Record.model_validate(probe_record(schema)).model_dump()], schema)
            self.rng = random.Random()
            self.canary_share = serving.canary_share
            self.watch_interval_s = serving.watch_interval_s
            self.batching = serving.batching.enabled
            monitoring = settings.monitoring
            self.sample_rate = monitoring.sample_rate if monitoring.enabled else 0.0
            self.monitor = None
            if monitoring.enabled:
                from raymlops.monitoring.monitor import get_monitor
                self.monitor = get_monitor(model_name, settings.workdir, monitoring, settings.task)
            self.samples: list[dict[str, Any]] = []
            self.in_flight: list[tuple[Any, int]] = []  # hand-overs not yet known to have arrived
            self.lost = 0  # samples whose hand-over failed (the monitor was down): reported, not hidden
            self.announced: set[str] = set()
            self._announce()
            self.tasks: list[asyncio.Task] = []
            self.replica = uuid.uuid4().hex[:8]
            self.startup["init_s"] = round(time.monotonic() - started, 3)

        # ----------------------------------------------------------------------- configuration
        async def reconfigure(self, user_config: dict[str, Any]) -> None:
            """Live settings (``user_config``): changing them never restarts a replica."""
            self.canary_share = float(user_config.get("canary_share", self.canary_share))
            self.watch_interval_s = float(user_config.get("watch_interval_s", self.watch_interval_s))
            batching = user_config.get("batching", {})
            self.batching = bool(batching.get("enabled", self.batching))
            self._score_batch.set_max_batch_size(int(batching.get("max_batch_size", serving.batching.max_batch_size)))
            self._score_batch.set_batch_wait_timeout_s(
                float(batching.get("wait_timeout_s", serving.batching.wait_timeout_s)))
            if not self.tasks:
                self.tasks = [asyncio.create_task(self._watch()), asyncio.create_task(self._flush_loop())]

        async def _watch(self) -> None:
            while True:
                if self.checked:  # a replica that started from its node's copy checks the registry at once
                    await asyncio.sleep(self.watch_interval_s)
                self.checked = True
                try:
                    for event in await asyncio.to_thread(self.slots.refresh):
                        log.warning("replica %s: %s", self.replica, event)
                    self._announce()
                except Exception as exc:  # the registry being away must not stop serving
                    log.error("replica %s: registry check failed: %s", self.replica, exc)

        async def _flush_loop(self) -> None:
            while True:
                await asyncio.sleep(0.25)
                self._flush()

        def _flush(self) -> Any:
            if not self.samples or self.monitor is None:
                return None
            self._count_lost()
            self._announce()  # no-op unless a version is new or the monitor restarted
            batch, self.samples = self.samples, []
            # Fire and forget: never awaited on the request path; a dead monitor loses samples, not requests.
            ref = self.monitor.record.remote(batch, self.replica, self.lost)
            self.in_flight.append((ref, len(batch)))
            return ref

        def _count_lost(self) -> None:
            import ray

            if not self.in_flight:
                return
            ready, _ = ray.wait([r for r, _ in self.in_flight], num_returns=len(self.in_flight), timeout=0)
            done = set(ready)
            for ref, n in self.in_flight:
                if ref in done:
                    try:
                        ray.get(ref, timeout=0)
                    except Exception:  # the monitor died or restarted: these samples never arrived
                        self.lost += n
                        self.announced.clear()  # and tell the new one what it judges against
            self.in_flight = [(r, n) for r, n in self.in_flight if r not in done][-1000:]

        def _announce(self) -> None:
            """Give the monitor the training reference profile of each version this replica serves."""
            if self.monitor is None:
                return
            for served in (self.slots.champion, self.slots.challenger):
                if served is not None and served.version not in self.announced:
                    self.monitor.set_reference.remote(served.version, served.reference_profile)
                    self.announced.add(served.version)

        async def check_health(self) -> None:
            """Serve's health check: the champion must predict a finite score for a valid record, in time.

            A model that hangs fails it, and Serve replaces the replica (its stuck threads go with it).
            """
            await self._probe()

        async def _probe(self) -> float:
            served = self.slots.current(CHAMPION)
            try:
                scores = await self.calls.run(served.model.predict_frame, self.probe, timeout_s=self.probe_timeout_s)
            except ModelCallTimeout as exc:
                raise ModelPackageError(f"champion v{served.version} did not score the probe record: {exc}") from None
            score = float(np.max(scores[0]))  # a multiclass model's row: its most probable class's probability
            if not math.isfinite(score):
                raise ModelPackageError(f"champion v{served.version} predicts {score} for a valid record")
            return score

        # ----------------------------------------------------------------------------- scoring
        @serve.batch(max_batch_size=serving.batching.max_batch_size,
                     batch_wait_timeout_s=serving.batching.wait_timeout_s)
        async def _score_batch(self, items: list[tuple[str, list[dict[str, Any]]]]) -> list[tuple[str, str, np.ndarray]]:
            """One frame per alias for the whole batch: building frames costs about as much as scoring them."""
            out: list[Any] = [None] * len(items)
            for alias in {a for a, _ in items}:
                idx = [i for i, (a, _) in enumerate(items) if a == alias]
                served = self.slots.current(alias)
                scores = await score_rows(self.calls, served.model, [r for i in idx for r in items[i][1]])
                start = 0
                for i in idx:
                    n = len(items[i][1])
                    out[i] = (served.alias, served.version, scores[start:start + n])
                    start += n
            return out

        async def _score(self, alias: str, rows: list[dict[str, Any]]) -> tuple[str, str, np.ndarray]:
            if self.batching:
                return await self._score_batch((alias, rows))
            served = self.slots.current(alias)
            return served.alias, served.version, await score_rows(self.calls, served.model, rows)

        # ------------------------------------------------------------------------------ routes
        @api.post("/v1/predict", response_model=PredictResponse, dependencies=[predict_key],
                  summary="Score one record or a list of records", responses=_errors(400, 401, 403, 408, 413, 503, 504))
        async def predict(self, body: PredictRequest, response: Response) -> PredictResponse:  # type: ignore[valid-type]
            started = time.perf_counter()
            rows = body.rows()
            alias = self.slots.pick(self.canary_share, self.rng.random()).alias
            try:
                alias, version, scores = await self._score(alias, rows)
            except ModelCallTimeout as exc:
                raise HTTPException(504, f"{exc} (serving.request_timeout_s)") from None
            finite = np.isfinite(np.asarray(scores, dtype=float))
            if not finite.all():  # inputs far outside anything trained on can overflow a network's arithmetic
                bad = np.flatnonzero(~finite.reshape(len(rows), -1).all(axis=1)).tolist()
                one = body.record is not None
                raise HTTPException(422, [{"loc": ["body", "record"] if one else ["body", "records", bad[0]],
                                           "msg": f"the model's score is not a finite number for {len(bad)} "
                                                  f"record(s) {bad[:5]}: their values lie too far outside the "
                                                  "training data to score", "type": "value_error.unscorable"}])
            request_id = uuid.uuid4().hex
            values = ([[float(p) for p in row] for row in scores] if np.ndim(scores) == 2
                      else [float(s) for s in scores])
            if self.sample_rate and self.rng.random() < self.sample_rate:
                self.samples.append({"request_id": request_id, "scores": values, "version": version, "alias": alias,
                                     "time": time.time(), "latency_s": time.perf_counter() - started,
                                     "records": [_jsonable(r) for r in rows[:MAX_SAMPLED_ROWS]]})
            response.headers["X-Model-Version"] = version
            response.headers["X-Request-Id"] = request_id
            return PredictResponse(request_id=request_id, model=model_name, version=version, alias=alias,
                                   predictions=predictions_for(settings.task, values, list(settings.classes)))

        @api.post("/v1/feedback", response_model=FeedbackResponse, dependencies=[admin_key],
                  summary="Report true outcomes of earlier predictions", responses=_errors(400, 401, 403, 408, 413, 503))
        async def feedback(self, body: FeedbackRequest) -> FeedbackResponse:
            if self.monitor is None:
                raise HTTPException(503, "monitoring is disabled for this model (monitoring.enabled: false)")
            labels, problem = feedback_labels(settings.task, body.items, list(settings.classes))
            if problem:  # one bad label would poison every later live-quality figure of that version
                index, message = problem  # shaped like every other 422 (FastAPI's validation errors)
                raise HTTPException(422, [{"loc": ["body", "items", index, "label"], "msg": message,
                                           "type": "value_error"}])
            from ray.exceptions import ActorUnavailableError, RayActorError

            pending = self._flush()
            try:
                if pending is not None:
                    await pending  # this replica's latest samples first, so their labels can join
                result = await self.monitor.feedback.remote(
                    [item.model_dump() | {"label": label} for item, label in zip(body.items, labels)])
            except (RayActorError, ActorUnavailableError) as exc:
                # Nothing was recorded: saying so (503 + Retry-After) lets clients retry safely.
                raise HTTPException(503, f"the monitor is restarting, nothing was recorded; retry ({type(exc).__name__})",
                                    headers={"Retry-After": "1"}) from None
            return FeedbackResponse(**result)

        @api.post("/v1/admin/refresh", dependencies=[admin_key], summary="Re-read the registry aliases now",
                  responses=_errors(401, 403, 408, 409, 503))
        async def refresh(self) -> dict[str, Any]:
            try:
                events = await asyncio.to_thread(self.slots.refresh)
            except ModelPackageError as exc:
                raise HTTPException(409, str(exc)) from exc
            return {"replica": self.replica, "events": events, **self.slots.describe()}

        @api.get("/v1/monitor", dependencies=[predict_key], responses=_errors(401, 403, 408, 503),
                 summary="The monitor's latest drift window and live quality per version (raymlops status)")
        async def monitor_view(self) -> Any:
            from ray.exceptions import ActorUnavailableError, RayActorError

            if self.monitor is None:
                raise HTTPException(503, "monitoring is disabled for this model (monitoring.enabled: false)")
            try:
                evidence = await asyncio.wait_for(self.monitor.evidence.remote(False), timeout=10)
            except (RayActorError, ActorUnavailableError, asyncio.TimeoutError) as exc:
                raise HTTPException(503, f"the monitor did not answer ({type(exc).__name__}); retry",
                                    headers={"Retry-After": "1"}) from None
            return Response(json.dumps(evidence, default=str), media_type="application/json")

        @api.get("/v1/model", summary="What this replica serves", responses=_errors(408, 503))
        async def model_info(self) -> dict[str, Any]:
            return {"model": model_name, "replica": self.replica, "canary_share": self.canary_share,
                    "input_schema": schema, "task": settings.task, **self.slots.describe(),
                    # Model calls running, abandoned past their deadline (still running) and timed out in all;
                    # tasks on this replica's event loop: both return to their resting level after a hang ends.
                    "model_calls": self.calls.stats(), "event_loop_tasks": len(asyncio.all_tasks()),
                    # Admission by the latency SLO: the limit it learned, requests inside, shed so far.
                    "admission": api.state.admission.stats() if getattr(api.state, "admission", None) else None,
                    # Where this replica's first model came from, and how long its start took.
                    "startup": self.startup}

        @api.get("/healthz", summary="Liveness", responses=_errors(408, 503))
        async def healthz(self) -> dict[str, str]:
            return {"status": "ok"}

        @api.get("/readyz", summary="Readiness: the champion predicts", responses=_errors(408, 503))
        async def readyz(self) -> Any:
            try:
                await self._probe()
            except Exception as exc:
                return JSONResponse({"status": "not ready", "detail": str(exc)}, status_code=503)
            return {"status": "ready", "version": self.slots.current(CHAMPION).version}

    return serve.deployment(ModelServer, name=DEPLOYMENT, **deployment_options(serving)).bind()


def app_builder(args: dict[str, str]) -> Any:
    """Import path for ``serve deploy`` / KubeRay: ``raymlops.serving.app:app_builder`` with ``{config: PATH}``."""
    from raymlops.config import load_config

    return build_app(settings_for(load_config(args["config"])))
