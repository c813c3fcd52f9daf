"""etcd implementation of the Store: several replicas share one state, one of them acts.

Every replica records deliveries (deduplicated across replicas: Alertmanager's HA peers send
the same group to each). Everything else is written only by the leader: the replica whose
lease holds the key `<prefix>leader`. Each of those writes is one etcd transaction whose
first condition is that the leader key is still the one this replica created (its
create_revision, the "epoch"); when the lease expired (a paused, partitioned or slow
replica), the key is gone or another replica's, the transaction changes nothing and raises
NotLeader. Within the leading replica, writers queue on a thread lock and a file lock, as
with SQLite, so a transaction's reads stay true until it commits.

Before each node call the leader renews its lease and refuses the call unless the lease holds
for the call's whole deadline (`check_lease`): a replica that lost its lease stops before its
next call, before another replica can become leader.

Keys (values are JSON):
    leader                      {"replica", "lease", "since"}, attached to the leader's lease
    seq/notes, seq/events       the last id given
    notes/<id>, pending/<id>    deliveries, and those not applied yet
    dedup/<sha256>              {"id", "at"}: the same delivery from another replica
    pairs/<pair>  events/<id>  failovers/<id>  inflight/<pair>  journal/<id>/<seq>
    faults/<pair>/<source>/<ref>  observations/<pair>/<node>  schedule/<key>
    reports/<pair>/<kind>  meta/clock/<boot>
Names inside keys are percent-encoded, so a pair named "a/b" never reads as a prefix.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import logging
import threading
import time
import urllib.parse
from collections.abc import Callable, Collection, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

import etcd3gw
from etcd3gw import exceptions as etcd_exc

from ..alerts import Notification
from ..config import ETCD_MARGIN, StateConfig
from ..failover import Failover
from ..observation import NodeObservation
from ..state import PairState
from . import (
    EventRecord,
    InFlightError,
    JournalEntry,
    LeaseLost,
    PairFault,
    PruneCounts,
    StateUnreadable,
    StoredNotification,
    StoreUnavailable,
)
from .locks import WriterLock
from .sqlite import backoff, decode_alerts, encode_alerts

log = logging.getLogger("responder.store")
T = TypeVar("T")

DEDUP_WINDOW = 300.0  # seconds: a delivery equal to one recorded this recently is that one
# one delivery's alerts in one etcd value, below etcd's default --max-request-bytes (1.5 MiB)
MAX_DELIVERY_BYTES = 1_000_000
RECORD_TRIES = 50  # concurrent recorders retry their compare-and-swap of the id counter


class NotLeader(LeaseLost):
    """This replica does not hold the leader key: it may record deliveries, nothing else."""


class EtcdUnavailable(StoreUnavailable):
    """No etcd endpoint answered (or etcd refused the request); nothing was written."""


@dataclass(frozen=True)
class Leader:
    """Who holds the leader key: replica name, its lease, since when, and the key's epoch."""

    replica: str
    lease: int
    since: float
    epoch: int  # create_revision of the leader key


def _b64(data: str | bytes) -> str:
    raw = data.encode("utf-8") if isinstance(data, str) else data
    return base64.b64encode(raw).decode("ascii")


def _unb64(data: str) -> bytes:
    return base64.b64decode(data)


def _q(name: str) -> str:
    return urllib.parse.quote(name, safe="")


def _range_end(prefix: str) -> str:
    """The first key after every key starting with `prefix` (prefixes here are ASCII)."""
    return prefix[:-1] + chr(ord(prefix[-1]) + 1)


def _decode_state(raw: bytes) -> PairState:
    try:
        return PairState.from_json(json.loads(raw))
    except (ValueError, KeyError, TypeError) as exc:
        raise StateUnreadable(f"stored state unreadable ({type(exc).__name__}: {exc})") from None


class EtcdClient:
    """etcd's JSON gateway through etcd3gw, over several endpoints: a request that cannot
    reach one endpoint goes to the next; every request has `timeout`."""

    def __init__(self, state: StateConfig) -> None:
        self._clients = []
        for url in state.endpoints:
            parts = urllib.parse.urlsplit(url)
            tls = state.tls
            self._clients.append(
                etcd3gw.Etcd3Client(
                    host=parts.hostname or "127.0.0.1",
                    port=parts.port or (443 if parts.scheme == "https" else 2379),
                    protocol=parts.scheme,
                    ca_cert=str(tls.ca_file) if tls.ca_file else None,
                    cert_cert=str(tls.cert_file) if tls.cert_file else None,
                    cert_key=str(tls.key_file) if tls.key_file else None,
                    timeout=state.timeout,
                )
            )
        self._current = 0
        self._lock = threading.Lock()
        self.endpoints = state.endpoints

    def call(self, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """POST `body` to `path` (e.g. "/kv/range"); EtcdUnavailable when no endpoint answers."""
        errors = []
        with self._lock:
            start = self._current
        for i in range(len(self._clients)):
            index = (start + i) % len(self._clients)
            client = self._clients[index]
            try:
                result: dict[str, Any] = client.post(client.get_url(path), json=dict(body))
            except (
                etcd_exc.ConnectionFailedError,
                etcd_exc.ConnectionTimeoutError,
                etcd_exc.ApiVersionDiscoveryFailedError,
            ) as exc:
                errors.append(f"{self.endpoints[index]}: {exc}")
                continue
            except etcd_exc.Etcd3Exception as exc:
                detail = getattr(exc, "detail_text", None) or str(exc)
                raise EtcdUnavailable(f"etcd refused {path}: {detail}") from exc
            with self._lock:
                self._current = index
            return result
        raise EtcdUnavailable("no etcd endpoint answered: " + "; ".join(errors))

    def range(
        self, key: str, prefix: bool = False, limit: int = 0, count_only: bool = False
    ) -> tuple[list[dict[str, Any]], int, int]:
        """(kvs, count, revision) for one key or every key under a prefix, in key order."""
        body: dict[str, Any] = {"key": _b64(key)}
        if prefix:
            body["range_end"] = _b64(_range_end(key))
        if limit:
            body["limit"] = limit
        if count_only:
            body["count_only"] = True
        out = self.call("/kv/range", body)
        kvs = out.get("kvs", [])
        return kvs, int(out.get("count", 0)), int(out["header"]["revision"])

    def get(self, key: str) -> dict[str, Any] | None:
        kvs, _, _ = self.range(key)
        return kvs[0] if kvs else None

    def txn(
        self,
        compare: list[dict[str, Any]],
        success: list[dict[str, Any]],
        failure: list[dict[str, Any]] | None = None,
    ) -> tuple[bool, dict[str, Any]]:
        out = self.call(
            "/kv/txn", {"compare": compare, "success": success, "failure": failure or []}
        )
        return bool(out.get("succeeded", False)), out


def put(key: str, value: Any, lease: int | None = None) -> dict[str, Any]:
    data = value if isinstance(value, bytes) else json.dumps(value).encode("utf-8")
    request: dict[str, Any] = {"key": _b64(key), "value": _b64(data)}
    if lease:
        request["lease"] = str(lease)
    return {"request_put": request}


def delete(key: str) -> dict[str, Any]:
    return {"request_delete_range": {"key": _b64(key)}}


def cmp_absent(key: str) -> dict[str, Any]:
    return {"key": _b64(key), "target": "VERSION", "result": "EQUAL", "version": "0"}


def cmp_mod(key: str, mod_revision: int) -> dict[str, Any]:
    return {"key": _b64(key), "target": "MOD", "result": "EQUAL", "mod_revision": str(mod_revision)}


def cmp_epoch(key: str, epoch: int) -> dict[str, Any]:
    return {
        "key": _b64(key),
        "target": "CREATE",
        "result": "EQUAL",
        "create_revision": str(epoch),
    }


def _value(kv: Mapping[str, Any]) -> bytes:
    return _unb64(kv.get("value", ""))


def _json(kv: Mapping[str, Any]) -> Any:
    return json.loads(_value(kv))


class _EtcdTxn:
    """Reads through this transaction's own writes; the writes go to etcd at commit, in one
    etcd transaction conditioned on the leader epoch."""

    def __init__(self, store: EtcdStore) -> None:
        self._s = store
        self._p = store.prefix
        self.writes: dict[str, bytes | None] = {}  # key -> value, None: deleted
        self._seq: dict[str, int] = {}

    # -- plumbing
    def get(self, key: str) -> bytes | None:
        if key in self.writes:
            return self.writes[key]
        kv = self._s.client.get(key)
        return None if kv is None else _value(kv)

    def scan(self, prefix: str) -> list[tuple[str, bytes]]:
        kvs, _, _ = self._s.client.range(prefix, prefix=True)
        found = {_unb64(kv["key"]).decode("utf-8"): _value(kv) for kv in kvs}
        for key, value in self.writes.items():
            if key.startswith(prefix):
                if value is None:
                    found.pop(key, None)
                else:
                    found[key] = value
        return sorted(found.items())

    def write(self, key: str, value: Any) -> None:
        self.writes[key] = value if isinstance(value, bytes) else json.dumps(value).encode()

    def drop(self, key: str) -> None:
        self.writes[key] = None

    def next_id(self, name: str) -> int:
        key = f"{self._p}seq/{name}"
        if key not in self._seq:
            raw = self.get(key)
            self._seq[key] = int(raw) if raw else 0
        self._seq[key] += 1
        self.write(key, self._seq[key])
        return self._seq[key]

    @contextmanager
    def savepoint(self) -> Iterator[None]:
        writes, seq = dict(self.writes), dict(self._seq)
        try:
            yield
        except BaseException:
            self.writes, self._seq = writes, seq
            raise

    # -- StoreTxn
    def load_notification(self, notification_id: int) -> StoredNotification | None:
        raw = self.get(f"{self._p}notes/{notification_id:020d}")
        return None if raw is None else _stored(notification_id, json.loads(raw))

    def record_fault(
        self, pair: str, source: str, ref: str, error: str, now: float, *, max_attempts: int
    ) -> PairFault:
        key = f"{self._p}faults/{_q(pair)}/{_q(source)}/{_q(ref)}"
        raw = self.get(key)
        before = json.loads(raw) if raw else None
        attempts = (int(before["attempts"]) if before else 0) + 1
        fault = PairFault(
            pair,
            source,
            ref,
            attempts,
            now + backoff(attempts),
            error[:2000],
            attempts >= max_attempts,
            float(before["first_at"]) if before else now,
        )
        self.write(key, fault.to_json())
        return fault

    def clear_fault(self, pair: str, source: str, ref: str) -> None:
        self.drop(f"{self._p}faults/{_q(pair)}/{_q(source)}/{_q(ref)}")

    def load_pair(self, pair: str) -> PairState | None:
        raw = self.get(f"{self._p}pairs/{_q(pair)}")
        return None if raw is None else _decode_state(raw)

    def save_observation(self, obs: NodeObservation) -> NodeObservation:
        key = f"{self._p}observations/{_q(obs.pair)}/{_q(obs.node)}"
        quiet_since = None
        if obs.signing is False:
            raw = self.get(key)
            before = NodeObservation.from_json(json.loads(raw)) if raw else None
            quiet_since = obs.at
            if before is not None and before.signing is False and before.quiet_since:
                quiet_since = min(obs.at, before.quiet_since)
        stored = replace(obs, quiet_since=quiet_since)
        self.write(key, stored.to_json())
        return stored

    def save_pair(self, state: PairState) -> None:
        self.write(f"{self._p}pairs/{_q(state.pair)}", state.to_json())

    def add_event(self, event: EventRecord) -> None:
        event_id = self.next_id("events")
        self.write(f"{self._p}events/{event_id:020d}", replace(event, id=event_id).to_json())

    def claim_notifications(self, ids: Collection[int]) -> set[int]:
        claimed = set()
        for nid in ids:
            key = f"{self._p}pending/{nid:020d}"
            if self.get(key) is not None:
                self.drop(key)
                claimed.add(nid)
        return claimed

    def load_failover(self, failover_id: str) -> Failover | None:
        raw = self.get(f"{self._p}failovers/{_q(failover_id)}")
        return None if raw is None else Failover.from_json(json.loads(raw)["doc"])

    def insert_failover(self, failover: Failover) -> None:
        key = f"{self._p}failovers/{_q(failover.id)}"
        inflight = f"{self._p}inflight/{_q(failover.pair)}"
        if self.get(key) is not None or (
            not failover.step.terminal and self.get(inflight) is not None
        ):
            raise InFlightError(
                f"{failover.pair} already has a failover in flight (or id {failover.id} exists)"
            )
        self.write(key, _failover_row(failover, None, None, None))
        if not failover.step.terminal:
            self.write(inflight, failover.id)

    def update_failover(self, failover: Failover, owner: str) -> None:
        key = f"{self._p}failovers/{_q(failover.id)}"
        raw = self.get(key)
        row = json.loads(raw) if raw else None
        if row is None or row.get("owner") != owner:
            raise LeaseLost(f"{owner} does not hold the lease of failover {failover.id}")
        keep = not failover.step.terminal
        self.write(
            key,
            _failover_row(
                failover,
                owner if keep else None,
                row.get("lease_until") if keep else None,
                row.get("epoch") if keep else None,
            ),
        )
        if failover.step.terminal:
            inflight = f"{self._p}inflight/{_q(failover.pair)}"
            if self.get(inflight) == json.dumps(failover.id).encode():
                self.drop(inflight)

    def append_journal(
        self, failover_id: str, ts: float, step: str, phase: str, detail: Mapping[str, Any]
    ) -> None:
        prefix = f"{self._p}journal/{_q(failover_id)}/"
        if prefix not in self._seq:
            entries = self.scan(prefix)
            self._seq[prefix] = int(entries[-1][0].rsplit("/", 1)[1]) if entries else 0
        self._seq[prefix] += 1
        seq = self._seq[prefix]
        self.write(
            f"{prefix}{seq:010d}",
            {"ts": ts, "step": step, "phase": phase, "detail": dict(detail)},
        )


def _failover_row(
    f: Failover, owner: str | None, lease_until: float | None, epoch: int | None
) -> dict[str, Any]:
    return {
        "doc": f.to_json(),
        "owner": owner,
        "lease_until": lease_until,
        "epoch": epoch,
    }


def _stored(nid: int, doc: Mapping[str, Any]) -> StoredNotification:
    note = Notification(
        receiver=doc["receiver"],
        status=doc["status"],
        group_key=doc["group_key"],
        alerts=decode_alerts(doc["alerts"]),
        truncated_alerts=int(doc["truncated"]),
        external_url="",
    )
    return StoredNotification(id=nid, received_at=float(doc["received_at"]), notification=note)


class EtcdStore:
    """A Store in etcd, shared by the replicas; safe for threads and forked workers."""

    def __init__(
        self,
        state: StateConfig,
        replica: str,
        lock_dir: Path,
        *,
        client: EtcdClient | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        triggers: Collection[str] | None = None,
    ) -> None:
        """`triggers`: the alert names the pairs act on; a delivery too big for one etcd
        value keeps only those (None: every alert, or a clear refusal)."""
        self.state = state
        self.prefix = state.prefix
        self.replica = replica
        self.client = client or EtcdClient(state)
        self.leader_key = f"{self.prefix}leader"
        self.max_ops = state.max_txn_ops
        self.triggers = None if triggers is None else frozenset(triggers)
        # the epoch of the last commit: the condition of the next one (etcd checks it)
        self._epoch: int | None = None
        self._monotonic = monotonic
        digest = hashlib.sha256(f"{self.prefix}|{','.join(state.endpoints)}".encode()).hexdigest()
        self.lockfile = lock_dir / f".etcd-{digest[:16]}.lock"
        self._lock = WriterLock(self.lockfile)  # writers of this replica, one at a time

    # -- leadership
    def leader(self) -> Leader | None:
        """The leader key as etcd has it now (EtcdUnavailable when etcd cannot say)."""
        kv = self.client.get(self.leader_key)
        if kv is None:
            return None
        try:
            doc = _json(kv)
            return Leader(
                str(doc["replica"]),
                int(doc["lease"]),
                float(doc["since"]),
                int(kv["create_revision"]),
            )
        except (ValueError, KeyError, TypeError):
            return None

    def campaign(self, now: float) -> Leader | None:
        """Take the leader key if nobody holds it, keep this replica's lease alive if it
        does; returns the leader (this replica or another), None when nobody leads."""
        current = self.leader()
        if current is not None and current.replica == self.replica:
            if self.keepalive(current.lease) > 0:
                return current
            return None  # expired: the key goes with it, a next round may take it again
        if current is not None:
            return current
        ttl = int(self.state.lease_ttl)
        grant = self.client.call("/lease/grant", {"TTL": ttl})
        lease = int(grant["ID"])
        ok, _ = self.client.txn(
            [cmp_absent(self.leader_key)],
            [put(self.leader_key, {"replica": self.replica, "lease": lease, "since": now}, lease)],
        )
        if not ok:
            self._revoke(lease)
            return self.leader()
        log.info("replica %s leads (lease %x)", self.replica, lease)
        return self.leader()

    def _revoke(self, lease: int) -> None:
        with contextlib.suppress(EtcdUnavailable):  # else it expires on its own
            self.client.call("/lease/revoke", {"ID": str(lease)})

    def resign(self) -> None:
        """Give up leadership at a clean stop, so another replica takes over at once."""
        current = self.leader()
        if current is not None and current.replica == self.replica:
            self._revoke(current.lease)

    def keepalive(self, lease: int) -> int:
        """Renew a lease; its TTL in seconds, <= 0 when it has expired."""
        out = self.client.call("/lease/keepalive", {"ID": str(lease)})
        result = out.get("result", out)
        return int(result.get("TTL", -1))

    def epoch(self) -> int:
        """This replica's leader epoch; NotLeader when another replica (or none) leads."""
        current = self.leader()
        if current is None or current.replica != self.replica:
            who = "no replica" if current is None else f"replica {current.replica}"
            raise NotLeader(f"replica {self.replica} is not the leader ({who} leads)")
        return current.epoch

    def check_lease(self, needed: float) -> None:
        """Renew the leader lease and raise LeaseLost unless it now holds for `needed`
        seconds: called before every node call, with the call's deadline."""
        current = self.leader()
        if current is None or current.replica != self.replica:
            raise NotLeader(f"replica {self.replica} no longer leads; no node call")
        started = self._monotonic()
        try:
            ttl = self.keepalive(current.lease)
        except EtcdUnavailable as exc:
            raise LeaseLost(f"lease not renewed ({exc}); no node call") from exc
        left = ttl - (self._monotonic() - started) - ETCD_MARGIN
        if left < needed:
            raise LeaseLost(
                f"the leader lease holds {max(left, 0):.1f}s, less than the call's {needed:g}s; "
                "no node call"
            )

    # -- writing
    @contextmanager
    def _exclusive(self) -> Iterator[None]:
        """The right to write, in this thread, against every thread and process of this
        store (see locks.py)."""
        with self._lock.held():
            yield

    @contextmanager
    def transaction(self) -> Iterator[_EtcdTxn]:
        with self._exclusive():
            txn = _EtcdTxn(self)
            yield txn
            self._commit(txn.writes)

    def _commit(self, writes: Mapping[str, bytes | None]) -> None:
        if not writes:
            return
        ops = [delete(k) if v is None else put(k, v) for k, v in writes.items()]
        if len(ops) > self.max_ops:
            raise EtcdUnavailable(
                f"one transaction of {len(ops)} writes exceeds state.max_txn_ops "
                f"({self.max_ops}); nothing written: raise etcd's --max-txn-ops and "
                "state.max_txn_ops together"
            )
        epoch = self._epoch or self.epoch()
        ok, _ = self.client.txn([cmp_epoch(self.leader_key, epoch)], ops)
        if not ok:
            self._epoch = None  # the next transaction asks etcd who leads
            raise NotLeader(f"replica {self.replica} lost the leader key; nothing written")
        self._epoch = epoch

    def batched(self, fn: Callable[[_EtcdTxn], T]) -> T:
        with self.transaction() as txn:
            return fn(txn)

    # -- deliveries (every replica)
    def record_notification(self, received_at: float, notification: Notification) -> int:
        alerts = encode_alerts(notification.alerts)
        if len(alerts) > MAX_DELIVERY_BYTES and self.triggers is not None:
            # only trigger alerts are ever read (the policy ignores every other alert)
            kept = [a for a in notification.alerts if a.alertname in self.triggers]
            log.info(
                "delivery of %d alerts (%d bytes compact) too big for one etcd value: "
                "recording its %d trigger alerts",
                len(notification.alerts),
                len(alerts),
                len(kept),
            )
            alerts = encode_alerts(kept)
        if len(alerts) > MAX_DELIVERY_BYTES:
            raise EtcdUnavailable(
                f"a delivery of {len(notification.alerts)} alerts ({len(alerts)} bytes compact) "
                f"exceeds the {MAX_DELIVERY_BYTES} bytes one etcd value may hold here: set "
                "max_alerts on the Alertmanager receiver"
            )
        digest = hashlib.sha256(
            json.dumps(
                [notification.receiver, notification.group_key, notification.status, alerts]
            ).encode()
        ).hexdigest()
        doc = {
            "received_at": received_at,
            "receiver": notification.receiver,
            "group_key": notification.group_key,
            "status": notification.status,
            "truncated": notification.truncated_alerts,
            "alerts": alerts,
            "dedup": digest,
        }
        seq_key, dedup_key = f"{self.prefix}seq/notes", f"{self.prefix}dedup/{digest}"
        for _ in range(RECORD_TRIES):
            seq = self.client.get(seq_key)
            seen = self.client.get(dedup_key)
            if seen is not None:
                earlier = _json(seen)
                if received_at - float(earlier["at"]) < DEDUP_WINDOW:
                    return int(earlier["id"])
            last = int(_value(seq)) if seq is not None else 0
            nid = last + 1
            compare = [
                cmp_mod(seq_key, int(seq["mod_revision"])) if seq else cmp_absent(seq_key),
                cmp_mod(dedup_key, int(seen["mod_revision"])) if seen else cmp_absent(dedup_key),
            ]
            ok, _ = self.client.txn(
                compare,
                [
                    put(seq_key, nid),
                    put(f"{self.prefix}notes/{nid:020d}", doc),
                    put(f"{self.prefix}pending/{nid:020d}", b""),
                    put(dedup_key, {"id": nid, "at": received_at}),
                ],
            )
            if ok:
                return nid
        raise EtcdUnavailable(f"could not record a delivery in {RECORD_TRIES} tries (contention)")

    def pending_notifications(self) -> int:
        _, count, _ = self.client.range(f"{self.prefix}pending/", prefix=True, count_only=True)
        return count

    def peek_notifications(
        self, limit: int, known: Mapping[int, Notification] | None = None
    ) -> list[StoredNotification]:
        kvs, _, _ = self.client.range(f"{self.prefix}pending/", prefix=True, limit=limit)
        ids = [int(_unb64(kv["key"]).decode().rsplit("/", 1)[1]) for kv in kvs]
        known = known or {}
        if not ids:
            return []
        if ids[-1] - ids[0] < 4 * len(ids):  # dense: one range read, first to last
            first = f"{self.prefix}notes/{ids[0]:020d}"
            last = f"{self.prefix}notes/{ids[-1]:020d}"
            kvs = self.client.call(
                "/kv/range", {"key": _b64(first), "range_end": _b64(last + "\x00")}
            ).get("kvs", [])
        else:  # an old delivery still pending (retried): one read each
            kvs = [kv for nid in ids if (kv := self.client.get(f"{self.prefix}notes/{nid:020d}"))]
        docs = {int(_unb64(kv["key"]).decode().rsplit("/", 1)[1]): kv for kv in kvs}
        found = []
        for nid in ids:
            kv = docs.get(nid)
            if kv is None:
                continue
            doc = _json(kv)
            if nid in known:
                found.append(StoredNotification(nid, float(doc["received_at"]), known[nid]))
            else:
                found.append(_stored(nid, doc))
        return found

    def clock_anchor(self, boot_id: str, proposed: float) -> float:
        key = f"{self.prefix}meta/clock/{_q(boot_id)}"
        self.client.txn([cmp_absent(key)], [put(key, proposed)])
        kv = self.client.get(key)
        return float(_json(kv)) if kv else proposed

    # -- reads
    def _scan(self, prefix: str) -> list[tuple[str, bytes]]:
        kvs, _, _ = self.client.range(prefix, prefix=True)
        return [(_unb64(kv["key"]).decode("utf-8"), _value(kv)) for kv in kvs]

    def _pair_rows(self) -> list[tuple[str, bytes]]:
        p = f"{self.prefix}pairs/"
        return [(urllib.parse.unquote(k[len(p) :]), v) for k, v in self._scan(p)]

    def list_pairs(self) -> list[PairState]:
        states = []
        for _pair, raw in self._pair_rows():
            try:
                states.append(_decode_state(raw))
            except StateUnreadable:
                continue
        return states

    def get_pair(self, pair: str) -> PairState | None:
        kv = self.client.get(f"{self.prefix}pairs/{_q(pair)}")
        if kv is None:
            return None
        try:
            return _decode_state(_value(kv))
        except StateUnreadable:
            return None

    def due_pairs(self, now: float, pairs: Collection[str]) -> list[PairState]:
        wanted = set(pairs)
        due = [
            s
            for s in self.list_pairs()
            if s.pair in wanted and s.deadline is not None and s.deadline <= now
        ]
        return sorted(due, key=lambda s: s.deadline or 0.0)

    def next_deadline(self, pairs: Collection[str]) -> float | None:
        wanted = set(pairs)
        deadlines = [
            s.deadline for s in self.list_pairs() if s.pair in wanted and s.deadline is not None
        ]
        return min(deadlines) if deadlines else None

    def unreadable_pairs(self) -> dict[str, str]:
        bad = {}
        for pair, raw in self._pair_rows():
            try:
                _decode_state(raw)
            except StateUnreadable as exc:
                bad[pair] = str(exc)
        return bad

    def list_faults(self, pair: str | None = None) -> list[PairFault]:
        prefix = f"{self.prefix}faults/" + (f"{_q(pair)}/" if pair is not None else "")
        faults = []
        for _key, raw in self._scan(prefix):
            d = json.loads(raw)
            faults.append(
                PairFault(
                    d["pair"],
                    d["source"],
                    d["ref"],
                    int(d["attempts"]),
                    float(d["next_at"]),
                    d["error"],
                    bool(d["quarantined"]),
                    float(d["first_at"]),
                )
            )
        return sorted(faults, key=lambda f: f.first_at)

    def clear_faults(self, pair: str) -> int:
        with self.transaction() as txn:
            keys = [k for k, _ in txn.scan(f"{self.prefix}faults/{_q(pair)}/")]
            for key in keys:
                txn.drop(key)
            return len(keys)

    def save_observation(self, obs: NodeObservation) -> NodeObservation:
        return self.batched(lambda txn: txn.save_observation(obs))

    def observations(self, pair: str) -> dict[str, NodeObservation]:
        out = {}
        for _key, raw in self._scan(f"{self.prefix}observations/{_q(pair)}/"):
            obs = NodeObservation.from_json(json.loads(raw))
            out[obs.node] = obs
        return out

    def claim_observation(self, pair: str, now: float, interval: float) -> bool:
        return self.claim_schedule(pair, now, interval)

    def claim_schedule(self, key: str, now: float, interval: float) -> bool:
        return key in self.claim_schedules([(key, interval)], now)

    def claim_schedules(self, schedules: Collection[tuple[str, float]], now: float) -> set[str]:
        claimed: set[str] = set()
        items = list(schedules)
        for start in range(0, len(items), self.max_ops):
            with self.transaction() as txn:
                for key, interval in items[start : start + self.max_ops]:
                    skey = f"{self.prefix}schedule/{_q(key)}"
                    raw = txn.get(skey)
                    if raw is not None:
                        next_at = float(json.loads(raw))
                        if next_at > now and next_at - now <= interval:
                            continue
                    txn.write(skey, now + interval)
                    claimed.add(key)
        return claimed

    def save_report(self, pair: str, kind: str, doc: Mapping[str, Any]) -> None:
        with self.transaction() as txn:
            txn.write(f"{self.prefix}reports/{_q(pair)}/{_q(kind)}", dict(doc))

    def reports(self, pair: str) -> dict[str, dict[str, Any]]:
        prefix = f"{self.prefix}reports/{_q(pair)}/"
        out: dict[str, dict[str, Any]] = {}
        for key, raw in self._scan(prefix):
            try:
                out[urllib.parse.unquote(key[len(prefix) :])] = json.loads(raw)
            except ValueError:
                continue
        return out

    def list_events(
        self, pair: str | None = None, limit: int = 100, before: int | None = None
    ) -> list[EventRecord]:
        events = []
        for _key, raw in reversed(self._scan(f"{self.prefix}events/")):
            d = json.loads(raw)
            if pair is not None and d["pair"] != pair:
                continue
            if before is not None and int(d["id"]) >= before:
                continue
            events.append(
                EventRecord(
                    id=int(d["id"]),
                    ts=float(d["ts"]),
                    pair=d["pair"],
                    kind=d["kind"],
                    reason=d["reason"],
                    node=d["node"],
                    failover_id=d["failover_id"],
                    data=d["data"],
                )
            )
            if len(events) >= limit:
                break
        return events

    def _failover_rows(self) -> list[dict[str, Any]]:
        return [json.loads(raw) for _k, raw in self._scan(f"{self.prefix}failovers/")]

    def get_failover(self, failover_id: str) -> Failover | None:
        kv = self.client.get(f"{self.prefix}failovers/{_q(failover_id)}")
        return None if kv is None else Failover.from_json(_json(kv)["doc"])

    def list_failovers(self, pair: str | None = None, limit: int = 20) -> list[Failover]:
        docs = [Failover.from_json(r["doc"]) for r in self._failover_rows()]
        docs = [f for f in docs if pair is None or f.pair == pair]
        docs.sort(key=lambda f: f.created_at, reverse=True)
        return docs[:limit]

    def journal(self, failover_id: str) -> list[JournalEntry]:
        prefix = f"{self.prefix}journal/{_q(failover_id)}/"
        return [
            JournalEntry(
                failover_id,
                int(key.rsplit("/", 1)[1]),
                float(d["ts"]),
                d["step"],
                d["phase"],
                d["detail"],
            )
            for key, raw in self._scan(prefix)
            for d in [json.loads(raw)]
        ]

    def unfinished(self) -> dict[str, tuple[str | None, str]]:
        """pair -> (source, target) of its unfinished failover (as inspect_states)."""
        out = {}
        for row in self._failover_rows():
            f = Failover.from_json(row["doc"])
            if not f.step.terminal:
                out[f.pair] = (f.source, f.target)
        return out

    # -- failover leases (inside the leader; a new leader takes over an old leader's)
    def _claimable(self, row: Mapping[str, Any], now: float, epoch: int, due_only: bool) -> bool:
        f = Failover.from_json(row["doc"])
        if f.step.terminal:
            return False
        free = (
            row.get("owner") is None
            or row.get("epoch") != epoch  # held under a leader that is gone
            or float(row.get("lease_until") or 0.0) < now
        )
        due = f.wake_at is None or f.wake_at <= now
        return free and (due or not due_only)

    def claim_failover(
        self,
        owner: str,
        now: float,
        lease: float,
        failover_id: str | None = None,
        pairs: Collection[str] | None = None,
    ) -> Failover | None:
        claimed = self._claim(owner, now, lease, pairs, 1, failover_id=failover_id)
        return claimed[0] if claimed else None

    def claim_failovers(
        self, owner: str, now: float, lease: float, pairs: Collection[str], limit: int
    ) -> list[Failover]:
        return self._claim(owner, now, lease, pairs, limit)

    def _claim(
        self,
        owner: str,
        now: float,
        lease: float,
        pairs: Collection[str] | None,
        limit: int,
        *,
        failover_id: str | None = None,
    ) -> list[Failover]:
        wanted = None if pairs is None else set(pairs)
        if not self._scan(f"{self.prefix}inflight/"):
            return []  # most loops find no failover in flight: no lock, no leader read
        with self.transaction() as txn:
            epoch = self.epoch()
            rows = [
                json.loads(raw) for _k, raw in txn.scan(f"{self.prefix}inflight/")
            ]  # ids of unfinished failovers
            ids = [str(r) for r in rows]
            if failover_id is not None:
                ids = [i for i in ids if i == failover_id]
            found = []
            for fid in ids:
                key = f"{self.prefix}failovers/{_q(fid)}"
                raw = txn.get(key)
                if raw is None:
                    continue
                row = json.loads(raw)
                doc = Failover.from_json(row["doc"])
                if wanted is not None and doc.pair not in wanted:
                    continue
                if not self._claimable(row, now, epoch, due_only=failover_id is None):
                    continue
                found.append((doc.created_at, key, row, doc))
            found.sort(key=lambda item: item[0])
            claimed = []
            for _created, key, row, doc in found[: min(limit, self.max_ops)]:
                txn.write(key, {**row, "owner": owner, "lease_until": now + lease, "epoch": epoch})
                claimed.append(doc)
            return claimed

    def renew_lease(self, failover_id: str, owner: str, until: float) -> bool:
        return failover_id in self.renew_leases([failover_id], owner, until)

    def renew_leases(self, failover_ids: Collection[str], owner: str, until: float) -> set[str]:
        held = set()
        ids = sorted(failover_ids)
        for start in range(0, len(ids), self.max_ops):  # a transaction per max_ops leases
            with self.transaction() as txn:
                for fid in ids[start : start + self.max_ops]:
                    key = f"{self.prefix}failovers/{_q(fid)}"
                    raw = txn.get(key)
                    if raw is None:
                        continue
                    row = json.loads(raw)
                    if row.get("owner") == owner:
                        txn.write(key, {**row, "lease_until": until})
                        held.add(fid)
        return held

    def release_lease(self, failover_id: str, owner: str) -> None:
        with self.transaction() as txn:
            key = f"{self.prefix}failovers/{_q(failover_id)}"
            raw = txn.get(key)
            if raw is None:
                return
            row = json.loads(raw)
            if row.get("owner") == owner:
                txn.write(key, {**row, "owner": None, "lease_until": None, "epoch": None})

    # -- retention
    def prune(
        self,
        now_wall: float,
        *,
        notifications: float,
        events: float,
        failovers: float,
        now_responder: float | None = None,
        batch: int = 1000,
        max_batches: int | None = None,
    ) -> PruneCounts:
        """See Store.prune; transactions of at most self.max_ops writes."""
        note_cutoff = (now_wall if now_responder is None else now_responder) - notifications
        event_cutoff, failover_cutoff = now_wall - events, now_wall - failovers
        budget = [max_batches if max_batches is not None else -1]
        more = False

        def delete_keys(groups: list[list[str]]) -> int:
            """Delete each group of keys together; count the groups deleted."""
            nonlocal more
            done, size = 0, 0
            chunk: list[list[str]] = []
            for whole in groups:
                group = whole
                while len(group) > self.max_ops:  # a long journal: its oldest entries first
                    if budget[0] == 0:
                        more = True
                        return done
                    self._delete_all([group[-self.max_ops :]])
                    budget[0] -= 1
                    group = group[: -self.max_ops]
                if size + len(group) > self.max_ops and chunk:
                    if budget[0] == 0:
                        more = True
                        return done
                    self._delete_all(chunk)
                    budget[0] -= 1
                    done += len(chunk)
                    chunk, size = [], 0
                chunk.append(group)
                size += len(group)
            if chunk:
                if budget[0] == 0:
                    more = True
                    return done
                self._delete_all(chunk)
                budget[0] -= 1
                done += len(chunk)
            return done

        pending = {k.rsplit("/", 1)[1] for k, _ in self._scan(f"{self.prefix}pending/")}
        faulted = {f.ref for f in self.list_faults() if f.source == "notification"}
        old_notes = []
        for key, raw in self._scan(f"{self.prefix}notes/"):
            tail = key.rsplit("/", 1)[1]
            doc = json.loads(raw)
            if tail in pending or str(int(tail)) in faulted:
                continue
            if float(doc["received_at"]) < note_cutoff:
                group = [key]
                dedup = f"{self.prefix}dedup/{doc.get('dedup')}"
                seen = self.client.get(dedup)
                if seen is not None and int(_json(seen)["id"]) == int(tail):
                    group.append(dedup)
                old_notes.append(group)
        n_notes = delete_keys(old_notes)

        old_events = [
            [key]
            for key, raw in self._scan(f"{self.prefix}events/")
            if float(json.loads(raw)["ts"]) < event_cutoff
        ]
        n_events = delete_keys(old_events)

        named, unreadable = set(), set()
        for pair, raw in self._pair_rows():
            try:
                named.add(str(json.loads(raw)["failover_id"]))
            except (ValueError, KeyError, TypeError):
                unreadable.add(pair)
        journal = 0
        old_failovers = []
        for key, raw in self._scan(f"{self.prefix}failovers/"):
            try:
                doc = json.loads(raw)["doc"]
                f = Failover.from_json(doc)
            except (ValueError, KeyError, TypeError):
                continue
            if not f.step.terminal or f.id in named or f.pair in unreadable:
                continue
            if f.created_at >= failover_cutoff or f.updated_at >= failover_cutoff:
                continue
            entries = [k for k, _ in self._scan(f"{self.prefix}journal/{_q(f.id)}/")]
            journal += len(entries)
            old_failovers.append([key, *entries])
        n_failovers = delete_keys(old_failovers)
        return PruneCounts(
            notifications=n_notes,
            events=n_events,
            failovers=n_failovers,
            journal=journal if n_failovers == len(old_failovers) else 0,
            more=more,
        )

    def _delete_all(self, groups: list[list[str]]) -> None:
        with self.transaction() as txn:
            for group in groups:
                for key in group:
                    txn.drop(key)

    def close(self) -> None:
        self._lock.close()
