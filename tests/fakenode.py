"""A fake node agent speaking the generic http driver contract, for multi-process tests.

Unlike per-test ordered expectations, it keeps state (signing or not) and counts calls, so
tests can assert "exactly one activation" across responder restarts. Hooks let a test hold a
request open (to kill the responder mid-step). Every change of the signing state is recorded
as an interval, so a test can prove that two nodes never signed at once; and the node can
misbehave as real agents do: a fence that claims success but changes nothing, an activation
that lands only after the caller gave up.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable

from pytest_httpserver import HTTPServer
from werkzeug import Request, Response


class FakeNode:
    def __init__(self, name: str, *, signing: bool, token: str) -> None:
        self.name = name
        self.token = token
        self.calls: dict[str, int] = {"status": 0, "fence": 0, "activate": 0}
        self.lock = threading.Lock()
        self.before_reply: dict[str, Callable[[], None]] = {}
        self.fence_lies = False  # answer {"signing": false} to a fence and keep signing
        self.activate_lands_after: float | None = None  # answer late, then start signing
        self.intervals: list[list[float | None]] = []
        self._signing = False
        self.signing = signing
        self.server = HTTPServer(host="127.0.0.1", port=0, threaded=True)
        for path, fn in (
            ("/status", self._status),
            ("/fence", self._fence),
            ("/activate", self._activate),
        ):
            self.server.expect_request(path).respond_with_handler(fn)

    @property
    def signing(self) -> bool:
        return self._signing

    @signing.setter
    def signing(self, on: bool) -> None:
        """Flip the signing state, opening or closing a signing interval."""
        if on == self._signing:
            return
        self._signing = on
        if on:
            self.intervals.append([time.time(), None])
        else:
            self.intervals[-1][1] = time.time()

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

    def _reply(self, what: str, signing: bool | None = None) -> Response:
        hook = self.before_reply.get(what)
        if hook is not None:
            hook()
        body = {"signing": self.signing if signing is None else signing}
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
            if self.fence_lies:
                return self._reply("fence", signing=False)
            self.signing = False
        return self._reply("fence")

    def _activate(self, request: Request) -> Response:
        if not self._authorized(request):
            return Response("", status=401)
        with self.lock:
            self.calls["activate"] += 1
        if self.activate_lands_after is not None:
            time.sleep(self.activate_lands_after)  # a slow import: the caller has given up
        with self.lock:
            self.signing = True
        return self._reply("activate")
