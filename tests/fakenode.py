"""A fake node agent speaking the generic http driver contract, for multi-process tests.

Unlike per-test ordered expectations, it keeps state (signing or not) and counts calls, so
tests can assert "exactly one activation" across responder restarts. Hooks let a test hold a
request open (to kill the responder mid-step).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable

from pytest_httpserver import HTTPServer
from werkzeug import Request, Response


class FakeNode:
    def __init__(self, name: str, *, signing: bool, token: str) -> None:
        self.name = name
        self.signing = signing
        self.token = token
        self.calls: dict[str, int] = {"status": 0, "fence": 0, "activate": 0}
        self.lock = threading.Lock()
        self.before_reply: dict[str, Callable[[], None]] = {}
        self.server = HTTPServer(host="127.0.0.1", port=0, threaded=True)
        for path, fn in (
            ("/status", self._status),
            ("/fence", self._fence),
            ("/activate", self._activate),
        ):
            self.server.expect_request(path).respond_with_handler(fn)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.port}"

    def start(self) -> FakeNode:
        self.server.start()
        return self

    def stop(self) -> None:
        self.server.clear()
        if self.server.is_running():
            self.server.stop()

    def _authorized(self, request: Request) -> bool:
        return request.headers.get("Authorization") == f"Bearer {self.token}"

    def _reply(self, what: str) -> Response:
        hook = self.before_reply.get(what)
        if hook is not None:
            hook()
        body = {"signing": self.signing}
        if what == "status":
            body["healthy"] = True
        return Response(json.dumps(body), status=200, content_type="application/json")

    def _status(self, request: Request) -> Response:
        with self.lock:
            self.calls["status"] += 1
        return self._reply("status") if self._authorized(request) else Response("", status=401)

    def _fence(self, request: Request) -> Response:
        if not self._authorized(request):
            return Response("", status=401)
        with self.lock:
            self.calls["fence"] += 1
            self.signing = False
        return self._reply("fence")

    def _activate(self, request: Request) -> Response:
        if not self._authorized(request):
            return Response("", status=401)
        with self.lock:
            self.calls["activate"] += 1
            self.signing = True
        return self._reply("activate")
