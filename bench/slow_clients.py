"""Webhook answer latency while slow clients hold connections open (real gunicorn, 2 workers).

For 0, 8, 32 and 256 slow connections of each kind (a request head or a body arriving one byte
a second without a token; or a request answered with `Connection: close`, followed by a byte a
second the server has to drain), it waits until they are under way, then posts valid deliveries
one after another and prints the time to each answer. A delivery not answered within the client
timeout (10 s) counts as that timeout. "still open": slow connections the server has not closed.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.conftest import base_config, write_config
from tests.serverproc import ServerProcess, free_port
from tests.test_slow_clients import SlowClients, deliver

DELIVERIES = 5
COUNTS = (0, 8, 32, 256)
KINDS = ("header", "body", "close")


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        data = base_config(lambda n: f"http://127.0.0.1:9/{n}")
        server = ServerProcess(write_config(Path(tmp), data), free_port(), Path(tmp) / "log")
        server.start()
        try:
            print(f"webhook answer latency, {DELIVERIES} deliveries each, 2 workers:")
            for kind in KINDS:
                for count in COUNTS:
                    with SlowClients(server.port, count, kind) as slow:
                        time.sleep(1.5)
                        answers = [deliver(server) for _ in range(DELIVERIES)]
                        still_open = slow.open_count()
                    seconds = sorted(s for _, s in answers)
                    failed = sum(status != 200 for status, _ in answers)
                    print(
                        f"  {count:3d} slow {kind:6s} connections ({still_open:3d} still open):"
                        f" median {statistics.median(seconds) * 1000:7.1f} ms"
                        f"  max {seconds[-1] * 1000:7.1f} ms"
                        + (f"  {failed} not answered 200" if failed else "")
                    )
        finally:
            server.stop()


if __name__ == "__main__":
    main()
