"""Worker snapshots as Prometheus metric families (needs ``prometheus_client``: extra ``metrics``).

Imported only when ``/metrics`` is asked for (``server/observe.py``), so a server without the
extra runs and answers that route 501. Every series has the labels ``worker`` (the
``--workers`` slot) and ``spec`` (the hosted spec a session built; ``none`` before MAKE);
requests and bytes also ``protocol`` (``binary`` or ``openenv``), requests ``op``, errors
``type``. Names and meanings are listed in the README ("Observable servers").
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from openenv_gym.server.stats import LATENCY_BUCKETS

__all__ = ["SnapshotCollector"]

_PREFIX = "openenv_gym_"


class SnapshotCollector(Collector):
    """Yield the metric families of a list of worker snapshots (``ServerStats.snapshot``)."""

    def __init__(self, snapshots: Sequence[dict[str, Any]]) -> None:
        self.snapshots = snapshots

    def collect(self) -> Iterator[Metric]:  # noqa: D102
        families = _Families()
        for snap in self.snapshots:
            worker = str(snap["worker"])
            families.worker(snap, worker)
            for row in snap["totals"]:
                families.totals(row, worker)
        yield from families.all()


class _Families:
    """The metric families, filled one worker and one spec row at a time."""

    def __init__(self) -> None:
        spec = ["worker", "spec"]
        proto = [*spec, "protocol"]
        self.hosted = GaugeMetricFamily(
            _PREFIX + "hosted_spec", "A spec this server hosts (value 1).", labels=["spec"]
        )
        self.up = GaugeMetricFamily(
            _PREFIX + "worker_start_time_seconds",
            "Unix time the worker process started serving.",
            labels=["worker", "pid"],
        )
        self.sessions = GaugeMetricFamily(_PREFIX + "sessions", "Live sessions.", labels=proto)
        self.envs = GaugeMetricFamily(_PREFIX + "envs", "Envs held by live sessions.", labels=proto)
        self.opened = CounterMetricFamily(
            _PREFIX + "sessions_opened", "Sessions opened.", labels=proto
        )
        self.requests = CounterMetricFamily(
            _PREFIX + "requests", "Requests answered, by op.", labels=[*proto, "op"]
        )
        self.steps = CounterMetricFamily(
            _PREFIX + "env_steps",
            "Env steps taken (a step request of a session of n envs counts n).",
            labels=spec,
        )
        self.errors = CounterMetricFamily(
            _PREFIX + "errors", "Error replies, by error type.", labels=[*spec, "type"]
        )
        self.bytes_in = CounterMetricFamily(
            _PREFIX + "received_bytes", "Request message bytes received.", labels=proto
        )
        self.bytes_out = CounterMetricFamily(
            _PREFIX + "sent_bytes", "Reply message bytes sent.", labels=proto
        )
        self.latency = HistogramMetricFamily(
            _PREFIX + "step_latency_seconds",
            "Seconds the server took to answer a step request (server side, one shard).",
            labels=spec,
        )
        self._hosted: set[str] = set()
        self._latency: dict[tuple[str, str], tuple[list[int], float]] = {}
        self._steps: dict[tuple[str, str], int] = {}
        self._errors: dict[tuple[str, str, str], int] = {}

    def worker(self, snap: dict[str, Any], worker: str) -> None:
        self.up.add_metric([worker, str(snap["pid"])], float(snap["started"]))
        for spec in snap["specs"]:
            if spec not in self._hosted:
                self._hosted.add(spec)
                self.hosted.add_metric([spec], 1.0)

    def totals(self, row: dict[str, Any], worker: str) -> None:
        spec, protocol = str(row["spec"]), str(row["protocol"])
        labels = [worker, spec, protocol]
        self.sessions.add_metric(labels, row["live_sessions"])
        self.envs.add_metric(labels, row["live_envs"])
        self.opened.add_metric(labels, row["sessions_opened"])
        self.bytes_in.add_metric(labels, row["bytes_in"])
        self.bytes_out.add_metric(labels, row["bytes_out"])
        for key, count in sorted(row["requests"].items()):
            self.requests.add_metric([*labels, key.partition("/")[2] or key], count)
        # Steps, errors and latency are per spec: binary and OpenEnv sessions add up.
        buckets, total = self._latency.get((worker, spec), ([0] * (len(LATENCY_BUCKETS) + 1), 0.0))
        self._latency[(worker, spec)] = (
            [a + b for a, b in zip(buckets, row["latency_buckets"], strict=True)],
            total + float(row["latency_sum"]),
        )
        self._steps[(worker, spec)] = self._steps.get((worker, spec), 0) + int(row["steps"])
        for name, count in row["errors"].items():
            key = (worker, spec, name)
            self._errors[key] = self._errors.get(key, 0) + int(count)

    def all(self) -> Iterator[Metric]:
        for (worker, spec), steps in sorted(self._steps.items()):
            self.steps.add_metric([worker, spec], steps)
        for (worker, spec, name), count in sorted(self._errors.items()):
            self.errors.add_metric([worker, spec, name], count)
        for (worker, spec), (buckets, total) in sorted(self._latency.items()):
            cumulative, running = [], 0
            for bound, count in zip([*LATENCY_BUCKETS, float("inf")], buckets, strict=True):
                running += count
                cumulative.append((_bound(bound), running))
            self.latency.add_metric([worker, spec], cumulative, total)
        yield from (
            self.hosted,
            self.up,
            self.sessions,
            self.envs,
            self.opened,
            self.requests,
            self.steps,
            self.errors,
            self.bytes_in,
            self.bytes_out,
            self.latency,
        )


def _bound(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(bound)
