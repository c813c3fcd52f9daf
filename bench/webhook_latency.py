"""Webhook acknowledgement latency against the real responder under gunicorn (2 workers).

Posts distinct notifications (new fingerprints, so each is recorded and processed) from a
few client threads, then prints p50/p95/p99/max of the time to the 2xx answer. The nodes
are unreachable on purpose: alerts are not triggers here, only recording is measured.
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.conftest import alert, base_config, notification, write_config
from tests.serverproc import ServerProcess, free_port
from tests.tokens import WEBHOOK_TOKEN

REQUESTS = 2000
CLIENTS = 4


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        data = base_config(lambda n: f"http://127.0.0.1:9/{n}")
        path = write_config(Path(tmp), data)
        server = ServerProcess(path, free_port(), Path(tmp) / "log").start()
        latencies: list[float] = []
        lock = threading.Lock()
        headers = {"Authorization": f"Bearer {WEBHOOK_TOKEN}", "Content-Type": "application/json"}

        def client(worker: int) -> None:
            session = requests.Session()
            mine = []
            for i in range(REQUESTS // CLIENTS):
                body = json.dumps(notification(alert("PeersLow", fingerprint=f"w{worker}-{i}")))
                start = time.perf_counter()
                resp = session.post(server.url + "/webhook", data=body, headers=headers, timeout=10)
                mine.append(time.perf_counter() - start)
                assert resp.status_code == 200, resp.text
            with lock:
                latencies.extend(mine)

        try:
            started = time.perf_counter()
            threads = [threading.Thread(target=client, args=(w,)) for w in range(CLIENTS)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            elapsed = time.perf_counter() - started
        finally:
            server.stop()
    latencies.sort()
    q = statistics.quantiles(latencies, n=100)
    print(f"webhook ack latency over {len(latencies)} deliveries, {CLIENTS} clients, 2 workers:")
    print(
        f"  p50 {q[49] * 1000:.1f} ms  p95 {q[94] * 1000:.1f} ms  p99 {q[98] * 1000:.1f} ms"
        f"  max {latencies[-1] * 1000:.1f} ms  throughput {len(latencies) / elapsed:.0f}/s"
    )


if __name__ == "__main__":
    main()
