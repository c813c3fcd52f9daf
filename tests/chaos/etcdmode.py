"""The campaign's etcd mode (`python -m tests.chaos --etcd`): replicas on etcd, leader kills.

Each campaign worker process runs one real etcd (tests/etcdproc.py: Debian's binary on free
loopback ports, its data on the scratch root, stopped when the worker exits). Each scenario
keeps its state under its own key prefix, so scenarios never share state. Every responder
incarnation of an in-process scenario is a replica (`state.replica` inc<N>) that campaigns for
the leader key before it acts, with its node calls behind the lease guard (`guard_nodes`).

A crash is a leader kill: the killed replica's leader lease is revoked at once, the way a
SIGKILLed leader's lease expires (a real kill waits out the TTL; here nobody waits, so the
new leader takes over while the old epoch's failover leases still run). The killed replica's
threads live on (its blocked node call is let go later); whatever they try after the kill
must be refused: writes by the epoch condition (NotLeader), node calls by the lease guard.
"""

from __future__ import annotations

import base64
import time
from pathlib import Path
from typing import Any

from responder.store.etcd import EtcdClient, EtcdStore, Leader, NotLeader
from tests.etcdproc import EtcdProcess

LEASE_TTL = 10  # real seconds; the config rule asks >= 1.5 s (driver) + 2 x 2 s (etcd) + 1 s
RENEW_EVERY = 1.0  # real seconds between the scenario loop's campaigns (lease keepalives)


def start(directory: Path) -> EtcdProcess:
    """One etcd member with its data in `directory`, on free loopback ports."""
    return EtcdProcess(directory, name="chaos-etcd").start()


def stop(proc: EtcdProcess) -> None:
    """Stop it once (a second call, e.g. from a finalizer, does nothing)."""
    popen = proc.proc.popen
    if popen is not None and popen.poll() is None:
        proc.stop()


def prefix_for(seed: int, index: int) -> str:
    """Each scenario's own key prefix."""
    return f"/chaos/{seed}/{index}/"


def state(url: str, prefix: str, replica: str) -> dict[str, Any]:
    """The config's `state` block of one replica."""
    return {
        "backend": "etcd",
        "endpoints": [url],
        "prefix": prefix,
        "lease_ttl": f"{LEASE_TTL}s",
        "replica": replica,
    }


def lead(store: EtcdStore) -> Leader:
    """Campaign (real time for `since`, as the leadership loop has); NotLeader unless this
    replica leads now. A revoked lease deletes its leader key at once: nobody waits."""
    leader = store.campaign(time.time())
    if leader is None or leader.replica != store.replica:
        raise NotLeader(f"replica {store.replica} did not become the leader ({leader} leads)")
    return leader


def kill(store: EtcdStore) -> int | None:
    """Revoke this replica's leader lease, as its expiry after a SIGKILL would: the leader key
    goes with it. Returns the lease, None when this replica did not lead."""
    current = store.leader()
    if current is None or current.replica != store.replica:
        return None
    store.client.call("/lease/revoke", {"ID": str(current.lease)})
    return current.lease


def revision(client: EtcdClient) -> int:
    """etcd's current revision: it moves with every write (keepalives do not write)."""
    _, _, rev = client.range("/", count_only=True)
    return rev


def count(client: EtcdClient, prefix: str) -> int:
    _, n, _ = client.range(prefix, prefix=True, count_only=True)
    return n


def drop(client: EtcdClient, prefix: str) -> None:
    """Delete every key of a scenario (its prefix, ASCII, ending in "/"), so the worker's
    etcd stays small."""
    end = prefix[:-1] + chr(ord(prefix[-1]) + 1)
    client.call("/kv/deleterange", {"key": _b64(prefix), "range_end": _b64(end)})


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode("ascii")


__all__ = [
    "LEASE_TTL",
    "count",
    "drop",
    "kill",
    "lead",
    "prefix_for",
    "revision",
    "start",
    "state",
    "stop",
]
