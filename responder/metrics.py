"""Prometheus metrics, all `responder_`-prefixed, on an injected CollectorRegistry.

Counters and histograms are written by whichever process does the work; under gunicorn with
several workers `serve` sets PROMETHEUS_MULTIPROC_DIR so /metrics aggregates them. Pair state,
roles and dry-run are read from the store and config at scrape time, so they are the same
whichever worker answers.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from .config import Config
from .state import Consistency, Phase, Role
from .store import Store

STEP_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
FAILOVERS = "responder_failovers"
FAILOVERS_HELP = "Finished failovers by pair and outcome (done, dry_run, failed, aborted)."
FAILOVER_OUTCOMES = ("done", "dry_run", "failed", "aborted")


class Metrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.notifications = Counter(
            "responder_notifications",
            "Webhook deliveries by outcome (recorded, unauthorized, forbidden, bad_request, "
            "too_large, error).",
            ["outcome"],
            registry=registry,
        )
        self.alerts_deduplicated = Counter(
            "responder_alerts_deduplicated",
            "Alerts ignored because the same fingerprint+startsAt was already handled.",
            registry=registry,
        )
        self.truncated = Counter(
            "responder_truncated_notifications",
            "Notifications with truncatedAlerts > 0 (alerts dropped by max_alerts).",
            registry=registry,
        )
        self.decisions = Counter(
            "responder_decisions",
            "Policy decisions that changed a pair, by pair and action.",
            ["pair", "action"],
            registry=registry,
        )
        self.failovers = Counter(
            FAILOVERS,
            FAILOVERS_HELP,
            ["pair", "outcome"],
            registry=registry,
        )
        self.step_seconds = Histogram(
            "responder_failover_step_seconds",
            "Duration of failover steps (probe, fence, activate).",
            ["step"],
            buckets=STEP_BUCKETS,
            registry=registry,
        )
        self.fence_attempts = Counter(
            "responder_fence_attempts",
            "Fence attempts by pair, level and result (confirmed, failed, dry_run).",
            ["pair", "level", "result"],
            registry=registry,
        )
        self.processing_errors = Counter(
            "responder_processing_errors",
            "Work for a pair that raised (notification, deadline, failover, observation); "
            "retried with backoff, quarantined after a bound. Other pairs are unaffected.",
            ["pair", "source"],
            registry=registry,
        )
        self.observations = Counter(
            "responder_observation_rounds",
            "Rounds of read-only probes of every node of a pair.",
            ["pair"],
            registry=registry,
        )
        self.webhook_seconds = Histogram(
            "responder_webhook_duration_seconds",
            "Time to validate, record and answer a webhook delivery.",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
            registry=registry,
        )

    def prime(self, config: Config) -> None:
        """Create the counters people alert on at zero, so the first failed failover or
        refused delivery is an increase from 0 (increase() cannot see a series born at 1).

        Each pair's failover counters are not created here but shown at 0 by `exposition`
        until they count: four series per pair cost every worker 0.15 s of its start with
        1,000 pairs (prometheus_client sets each one up in its multiprocess file).
        """
        for outcome in (
            "recorded",
            "unauthorized",
            "forbidden",
            "bad_request",
            "too_large",
            "error",
        ):
            self.notifications.labels(outcome=outcome)
        for step in ("probe", "fence", "activate"):
            self.step_seconds.labels(step=step)


class StateCollector(Collector):
    """Pair phase, node roles and dry-run, read from the store at scrape time."""

    def __init__(self, config: Config, store: Store) -> None:
        self._config = config
        self._store = store

    @property
    def pairs(self) -> list[str]:
        return [pair.name for pair in self._config.pairs]

    def collect(self) -> Iterator[Metric]:
        phase = GaugeMetricFamily(
            "responder_pair_state", "1 for the pair's current phase.", labels=["pair", "phase"]
        )
        paused = GaugeMetricFamily(
            "responder_pair_paused", "1 if the pair is paused.", labels=["pair"]
        )
        roles = GaugeMetricFamily(
            "responder_node_role",
            "1 for each node's current role.",
            labels=["pair", "node", "role"],
        )
        dry = GaugeMetricFamily(
            "responder_dry_run", "1 if the pair runs in dry-run.", labels=["pair"]
        )
        observed = GaugeMetricFamily(
            "responder_node_observed_signing",
            "1 if the node's last answer said it signs, 0 if it said it does not; absent when "
            "the node did not answer or cannot tell.",
            labels=["pair", "node"],
        )
        up = GaugeMetricFamily(
            "responder_node_up",
            "1 if the node answered its last read-only probe.",
            labels=["pair", "node"],
        )
        seen_at = GaugeMetricFamily(
            "responder_node_observed_timestamp_seconds",
            "Wall-clock time of the node's last probe.",
            labels=["pair", "node"],
        )
        doubt = GaugeMetricFamily(
            "responder_node_may_be_signing",
            "1 while a call to the node was cut and nothing has verified it silent since.",
            labels=["pair", "node"],
        )
        consistent = GaugeMetricFamily(
            "responder_pair_consistent",
            "1 if the nodes' answers match the record of who signs.",
            labels=["pair"],
        )
        split = GaugeMetricFamily(
            "responder_pair_split_brain",
            "1 if two or more nodes of the pair said they sign.",
            labels=["pair"],
        )
        held = GaugeMetricFamily(
            "responder_pair_held",
            "1 while automation is held until an operator adopts the real signer.",
            labels=["pair"],
        )
        ready = GaugeMetricFamily(
            "responder_failover_ready",
            "1 when every read-only preflight check of the pair passes, 0 when one fails.",
            labels=["pair"],
        )
        ready_check = GaugeMetricFamily(
            "responder_failover_ready_check",
            "Per preflight check: 1 passing, 0 failing (unverifiable checks are absent).",
            labels=["pair", "check"],
        )
        ready_at = GaugeMetricFamily(
            "responder_failover_ready_timestamp_seconds",
            "Wall-clock time of the pair's last preflight round.",
            labels=["pair"],
        )
        drill_ok = GaugeMetricFamily(
            "responder_drill_ok",
            "1 when the pair's last drill found that a real failover would succeed, else 0.",
            labels=["pair"],
        )
        drill_at = GaugeMetricFamily(
            "responder_drill_last_run_timestamp_seconds",
            "Wall-clock time of the pair's last drill.",
            labels=["pair"],
        )
        drill_success = GaugeMetricFamily(
            "responder_drill_last_success_timestamp_seconds",
            "Wall-clock time of the pair's last drill that found the failover would succeed.",
            labels=["pair"],
        )
        drill_every = GaugeMetricFamily(
            "responder_drill_every_seconds",
            "The pair's scheduled drill interval (absent when drills are not scheduled).",
            labels=["pair"],
        )
        for pair in self._config.pairs:
            reports = self._store.reports(pair.name)
            if (rep := reports.get("readiness")) is not None:
                ready.add_metric([pair.name], 1.0 if rep.get("ready") else 0.0)
                ready_at.add_metric([pair.name], float(rep.get("at", 0.0)))
                for c in rep.get("checks", []):
                    if c.get("ok") is not None:
                        ready_check.add_metric([pair.name, str(c["name"])], 1.0 if c["ok"] else 0.0)
            if (d := reports.get("drill")) is not None:
                drill_ok.add_metric([pair.name], 1.0 if d.get("ok") else 0.0)
                drill_at.add_metric([pair.name], float(d.get("at", 0.0)))
            if (ok := reports.get("drill_success")) is not None:
                drill_success.add_metric([pair.name], float(ok.get("at", 0.0)))
            if pair.readiness.drill_every is not None:
                drill_every.add_metric([pair.name], pair.readiness.drill_every)
        yield from (ready, ready_check, ready_at, drill_ok, drill_at, drill_success, drill_every)
        states = {s.pair: s for s in self._store.list_pairs()}
        for pair in self._config.pairs:
            dry.add_metric([pair.name], 1.0 if self._config.pair_dry_run(pair) else 0.0)
            for node, obs in self._store.observations(pair.name).items():
                up.add_metric([pair.name, node], 1.0 if obs.reachable else 0.0)
                seen_at.add_metric([pair.name, node], obs.at_wall)
                if obs.signing is not None:
                    observed.add_metric([pair.name, node], 1.0 if obs.signing else 0.0)
            state = states.get(pair.name)
            if state is None:
                continue
            is_consistent = state.consistency is Consistency.CONSISTENT
            consistent.add_metric([pair.name], 1.0 if is_consistent else 0.0)
            is_split = state.consistency is Consistency.SPLIT_BRAIN
            split.add_metric([pair.name], 1.0 if is_split else 0.0)
            held.add_metric([pair.name], 1.0 if state.held_reason else 0.0)
            for node in state.roles:
                doubt.add_metric([pair.name, node], 1.0 if node in state.uncertain else 0.0)
            for p in Phase:
                phase.add_metric([pair.name, p.value], 1.0 if state.phase is p else 0.0)
            paused.add_metric([pair.name], 1.0 if state.paused else 0.0)
            for node, role in state.roles.items():
                for r in Role:
                    roles.add_metric([pair.name, node, r.value], 1.0 if role is r else 0.0)
        yield from (phase, paused, roles, dry, observed, up, seen_at, doubt, consistent, split)
        yield held


class _ZeroFailovers(Collector):
    """`counters`' metrics, with every configured pair's failover counters at 0 until they
    count (see Metrics.prime)."""

    def __init__(self, counters: Collector, pairs: list[str]) -> None:
        self._counters = counters
        self._pairs = pairs

    def collect(self) -> Iterator[Metric]:
        found = False
        for family in self._counters.collect():
            if family.name == FAILOVERS:
                found = True
                self._fill(family)
            yield family
        if not found:  # nothing counted yet in any process
            family = Metric(FAILOVERS, FAILOVERS_HELP, "counter")
            self._fill(family)
            yield family

    def _fill(self, family: Metric) -> None:
        total = FAILOVERS + "_total"
        seen = {
            (s.labels.get("pair"), s.labels.get("outcome"))
            for s in family.samples
            if s.name == total
        }
        for pair in self._pairs:
            for outcome in FAILOVER_OUTCOMES:
                if (pair, outcome) not in seen:
                    family.add_sample(total, {"pair": pair, "outcome": outcome}, 0.0)


class LeaderCollector(Collector):
    """Which replica leads and since when, read at scrape time (docs/ha.md)."""

    def __init__(self, view: Callable[[], Mapping[str, Any]]) -> None:
        self._view = view

    def collect(self) -> Iterator[Metric]:
        view = self._view()
        replica = str(view.get("replica", "local"))
        leads = GaugeMetricFamily(
            "responder_replica_leader",
            "1 if this replica leads (runs deadlines, failovers and every mutating node call).",
            labels=["replica"],
        )
        leads.add_metric([replica], 1.0 if view.get("role") == "leader" else 0.0)
        yield leads
        up = GaugeMetricFamily(
            "responder_state_up",
            "1 if the state backend answers; 0 means this replica neither records nor acts.",
            labels=["backend"],
        )
        up.add_metric([str(view.get("backend", ""))], 0.0 if "error" in view else 1.0)
        yield up
        if view.get("leader") is not None and view.get("leader_since") is not None:
            since = GaugeMetricFamily(
                "responder_leader_since_timestamp_seconds",
                "Wall-clock time the current leader took the leader key.",
                labels=["leader"],
            )
            since.add_metric([str(view["leader"])], float(view["leader_since"]))
            yield since


def exposition(registry: CollectorRegistry, state: StateCollector, *more: Collector) -> bytes:
    """The /metrics body: this process's (or all workers') counters plus the state gauges."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        scrape = CollectorRegistry()
        MultiProcessCollector(scrape)  # type: ignore[no-untyped-call]
    else:
        scrape = registry
    body = generate_latest(_ZeroFailovers(scrape, state.pairs))
    extra = CollectorRegistry()
    extra.register(state)
    for collector in more:
        extra.register(collector)
    return body + generate_latest(extra)
