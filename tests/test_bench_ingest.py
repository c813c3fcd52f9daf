"""The ingestion bench measures what it says: figures from real runs, errors never hidden.

Goals are not asserted here (the machine is shared and noisy): only that the harness measured.
"""

from __future__ import annotations

import json
import shutil
import socket
import threading
from collections.abc import Iterator

import pytest

from bench import ingest
from bench.report import Row


def _wrk_line(**overrides: float) -> str:
    data = {
        "requests": 100, "duration_us": 1_000_000, "bytes": 1, "sent": 100, "answered": 100,
        "non2xx": 0, "connect": 0, "read": 0, "write": 0, "status": 0, "timeout": 0,
        "mean_us": 900.0, "p50_us": 800, "p90_us": 1500, "p99_us": 2500, "max_us": 9000,
    } | overrides  # fmt: skip
    return "Running 1s test\nWRK-RESULT " + json.dumps(data) + "\n"


def test_parse_wrk_reads_rate_and_percentiles() -> None:
    """The script's result line becomes a rate and latencies in ms, with no problem found."""
    result = ingest.parse_wrk(["wrk"], _wrk_line())
    assert result.rate == 100.0
    assert (result.p50_ms, result.p99_ms, result.max_ms) == (0.8, 2.5, 9.0)
    assert result.problems == []


def test_parse_wrk_reports_non_2xx_and_socket_errors() -> None:
    """A run with error answers or socket errors carries them as problems, not as a clean rate."""
    result = ingest.parse_wrk(["wrk"], _wrk_line(non2xx=3, read=2, timeout=1))
    assert result.problems == ["2 read errors", "1 timeout errors", "3 non-2xx answers"]
    assert ingest.parse_wrk(["wrk"], _wrk_line(status=4)).non2xx == 4
    assert ingest.parse_wrk(["wrk"], _wrk_line(requests=0)).problems == ["no request completed"]
    with pytest.raises(RuntimeError, match="no result"):
        ingest.parse_wrk(["wrk"], "unable to connect\n")


def test_deliveries_are_distinct_and_shaped_like_alertmanager() -> None:
    """Each alert has a 16-hex-digit fingerprint of its own, routes to the pair, is no trigger."""
    body = json.loads(ingest.delivery(3, ingest._prefix(1, 7)))
    prints = [a["fingerprint"] for a in body["alerts"]]
    assert len(set(prints)) == 3 and all(len(p) == 16 and int(p, 16) >= 0 for p in prints)
    assert body["version"] == "4" and body["alerts"][0]["endsAt"] == "0001-01-01T00:00:00Z"
    assert {a["labels"]["node"] for a in body["alerts"]} == {"node-a", "node-b"}
    assert body["alerts"][0]["labels"]["alertname"] not in (
        "ValidatorClientDown",
        "BeaconNodeStalled",
    )


@pytest.fixture
def cutting_server() -> Iterator[int]:
    """A server that answers 413 after the head and closes without reading the body."""
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                conn.recv(4096)
                conn.sendall(b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 0\r\n\r\n")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield listener.getsockname()[1]
    stop.set()
    # close() alone leaves the thread blocked in accept(), which keeps the socket listening
    # for the rest of the session: any later connection to this port got a 413
    listener.shutdown(socket.SHUT_RDWR)
    listener.close()
    thread.join(5)
    assert not thread.is_alive()


def test_post_raw_tells_a_cut_body_from_a_read_one(cutting_server: int) -> None:
    """A 413 sent before the body is read, then a close, shows as a cut body, never as seen."""
    answer = ingest.post_raw(cutting_server, ingest._oversized(1024), timeout=10)
    assert not answer.whole_body_sent
    assert answer.error


def _number(row: Row, key: str) -> float:
    assert key in row.numbers, (row.what, row.numbers)
    return row.numbers[key]


@pytest.mark.e2e
@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk not installed (apt-get install wrk)")
def test_quick_bench_measures_every_row() -> None:
    """The quick run yields every ingestion row with a positive figure; the baseline and the
    responder answered every request 2xx, without socket errors."""
    rows = ingest.rows(quick=True)
    names = [r.what for r in rows]
    assert len(rows) == 8, names
    throughput, paced, big, over, stored, kept = rows[:3], rows[3], rows[4], rows[5], *rows[6:]
    for row in throughput:
        assert _number(row, "responder_per_s") > 0 and _number(row, "baseline_per_s") > 0
        assert _number(row, "ratio") > 0
        assert _number(row, "errors") == 0, row.detail
        assert "): wrk -t1 -c8 -d1s --timeout 10s -s bench/wrk/webhook.lua" in row.detail
    assert _number(paced, "p99_ms") > 0 and _number(paced, "max_ms") >= _number(paced, "p99_ms")
    assert _number(paced, "rate") > 0 and _number(paced, "baseline_rate") > 0
    assert _number(paced, "errors") == 0, paced.detail
    assert _number(big, "status") == 200, big.detail
    assert _number(big, "seconds") > 0 and _number(big, "rss_mb") > 0
    assert _number(over, "sent") > 0 and over.holds is not None
    assert _number(stored, "bytes_per_delivery") > 0
    assert _number(stored, "failed") == 0, stored.detail
    assert _number(kept, "kept_bytes") > 0
