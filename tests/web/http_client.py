"""A blocking HTTP client for tests against a running bus."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from typing import Any

from prometheus_client.parser import text_string_to_metric_families


class BusHTTP:
    def __init__(self, port: int, token: str | None = None) -> None:
        self.base = f"http://127.0.0.1:{port}"
        self.token = token

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.base + path, data=data, method=method)
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                code, raw, kind = response.status, response.read(), response.headers["content-type"]
        except urllib.error.HTTPError as e:
            code, raw, kind = e.code, e.read(), e.headers["content-type"]
        if method == "HEAD":
            return code, raw
        return code, json.loads(raw) if kind == "application/json" else raw.decode()

    def get(self, path: str) -> tuple[int, Any]:
        return self.call("GET", path)

    def post(self, path: str, body: Any = None) -> tuple[int, Any]:
        return self.call("POST", path, body if body is not None else {})

    def wait(self, path: str, code: int, timeout: float = 60.0) -> Any:
        """Poll C{path} until it answers C{code}; its body."""
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            try:
                got, body = self.get(path)
                if got == code:
                    return body
                last = (got, body)
            except OSError as e:
                last = e
            time.sleep(0.2)
        raise AssertionError(f"{path} did not answer {code} within {timeout}s; last: {last!r}")

    def metrics(self) -> dict[tuple[str, tuple], float]:
        code, text = self.get("/metrics")
        assert code == 200, text
        return {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        }

    def wait_for_metric(self, key: tuple[str, tuple], value: float, timeout: float = 60.0) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            metrics = self.metrics()
            if metrics.get(key) == value or time.monotonic() > deadline:
                return metrics
            time.sleep(0.2)
