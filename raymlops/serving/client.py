"""A small HTTP client for a raymlops model service.

Every call is retried on 503/429 (the service shed the request or could not record it: nothing was done),
waiting what ``Retry-After`` says (capped); ``predict`` is idempotent, so it is also retried on connection
errors and on 500/502 (a replica that died mid-request). Every error is a ``ServingError`` carrying the HTTP
status and the server's message.

Example::

    client = Client("http://127.0.0.1:8000", api_key=os.environ.get("RAYMLOPS_API_KEY"))
    result = client.predict([{"carrier": "UA", "origin": "EWR", ...}])
    client.feedback([(result["request_id"], 0, 1.0)])
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any

import requests

from raymlops.errors import ServingError

RETRY_STATUSES = (429, 503)
FAILED_STATUSES = (500, 502)


class Client:
    def __init__(self, url: str, api_key: str | None = None, *, timeout_s: float = 30.0, retries: int = 3,
                 max_retry_wait_s: float = 5.0) -> None:
        self.url = url.rstrip("/")
        self.api_key = api_key
        self.timeout_s = timeout_s
        self.retries = retries
        self.max_retry_wait_s = max_retry_wait_s
        self.session = requests.Session()
        if api_key:
            self.session.headers["Authorization"] = f"Bearer {api_key}"

    def close(self) -> None:
        self.session.close()

    def clone(self) -> Client:
        """A client with the same settings and its own connection pool (one per thread: sessions are not
        thread-safe)."""
        return Client(self.url, self.api_key, timeout_s=self.timeout_s, retries=self.retries,
                      max_retry_wait_s=self.max_retry_wait_s)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, method: str, path: str, *, json: Any = None, idempotent: bool) -> dict[str, Any]:
        attempt = 0
        while True:
            try:
                resp = self.session.request(method, f"{self.url}{path}", json=json, timeout=self.timeout_s)
            except requests.ConnectionError as exc:
                # A refused/reset connection: retried for idempotent calls only (the server may have acted).
                if not idempotent or attempt >= self.retries:
                    raise ServingError(f"{method} {path}: cannot reach {self.url}: {exc}") from exc
                attempt += 1
                time.sleep(min(0.1 * 2 ** attempt, self.max_retry_wait_s))
                continue
            except requests.Timeout as exc:
                raise ServingError(f"{method} {path}: no answer within {self.timeout_s} s", status=None) from exc
            if idempotent and resp.status_code in FAILED_STATUSES and attempt < self.retries:
                # The replica died mid-request (Serve answers 500/502): a prediction is safe to repeat; a timeout
                # (408/504) is not retried, or a hung model would cost several timeouts.
                attempt += 1
                time.sleep(min(0.1 * 2 ** attempt, self.max_retry_wait_s))
                continue
            if resp.status_code in RETRY_STATUSES and attempt < self.retries:  # refused, so nothing was done
                attempt += 1
                time.sleep(self._retry_wait(resp, attempt))
                continue
            if resp.status_code >= 400:
                raise ServingError(f"{method} {path}: HTTP {resp.status_code}: {_detail(resp)}",
                                   status=resp.status_code)
            return resp.json()

    def _retry_wait(self, resp: requests.Response, attempt: int) -> float:
        header = resp.headers.get("Retry-After", "")
        wait = float(header) if header.replace(".", "", 1).isdigit() else 0.1 * 2 ** attempt
        return min(wait, self.max_retry_wait_s)

    def predict(self, records: Mapping[str, Any] | Iterable[Mapping[str, Any]]) -> dict[str, Any]:
        """One record (a mapping) or several; returns the service's answer (request_id, version, predictions)."""
        body = {"record": dict(records)} if isinstance(records, Mapping) else {"records": [dict(r) for r in records]}
        return self._call("POST", "/v1/predict", json=body, idempotent=True)

    def feedback(self, items: Iterable[tuple[str, int, float] | Mapping[str, Any]]) -> dict[str, Any]:
        """True outcomes: ``(request_id, index, label)`` tuples or mappings with those keys."""
        body = [dict(i) if isinstance(i, Mapping) else {"request_id": i[0], "index": i[1], "label": i[2]}
                for i in items]
        return self._call("POST", "/v1/feedback", json={"items": body}, idempotent=False)

    def model_info(self) -> dict[str, Any]:
        return self._call("GET", "/v1/model", idempotent=True)

    def ready(self) -> dict[str, Any]:
        return self._call("GET", "/readyz", idempotent=True)

    def refresh(self) -> dict[str, Any]:
        return self._call("POST", "/v1/admin/refresh", idempotent=False)


def _detail(resp: requests.Response) -> str:
    try:
        detail = resp.json().get("detail", resp.text)
    except ValueError:
        return resp.text[:500]
    if isinstance(detail, list):  # FastAPI validation errors: say where and what, briefly
        return "; ".join(f"{'.'.join(str(p) for p in d.get('loc', []))}: {d.get('msg')}" for d in detail[:10])
    return str(detail)[:1000]
