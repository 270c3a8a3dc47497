"""
Prometheus metrics of one bus, in a registry of its own (never the process-wide one, so
two buses in one process, or a test, do not mix).

Counters and gauges are read from a L{Snapshot} at scrape time; the histograms of
handling time and time spent queued are fed by the main bus's observer hook.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from ..message import Message
from .snapshot import Snapshot

__all__ = ["BusMetrics", "CONTENT_TYPE"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

#: Handling and queueing times span sub-millisecond handlers to minutes of backlog.
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)

#: Set-aside ids remembered so that each is counted once, however often it is listed.
REMEMBERED = 100_000


class SetAsideCounter:
    """Counts set-aside messages once each, by kind, app and reason code."""

    def __init__(self) -> None:
        self.counts: dict[tuple[str, str, str], int] = {}
        self._seen: OrderedDict[tuple[str, str], None] = OrderedDict()

    def update(self, kind: str, entries: Iterable[Any]) -> None:
        for entry in entries:
            key = (kind, entry.id)
            if key in self._seen:
                continue
            self._seen[key] = None
            if len(self._seen) > REMEMBERED:
                self._seen.popitem(last=False)
            label = (kind, entry.app_name or "", entry.code)
            self.counts[label] = self.counts.get(label, 0) + 1


class BusMetrics:
    """The registry, the histograms, and a collector that reads the latest snapshot."""

    def __init__(self, bus: Any) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.handling = Histogram(
            "scbus_message_handling_seconds",
            "Time from taking a delivery to its handler's results being ready to send.",
            ["app"], registry=self.registry, buckets=BUCKETS,
        )
        self.queued = Histogram(
            "scbus_message_queued_seconds",
            "Time from a message's creation to its handling starting (time spent queued).",
            ["app"], registry=self.registry, buckets=BUCKETS,
        )
        self.set_aside = SetAsideCounter()
        self._children: dict[str, tuple[Any, Any]] = {}
        self._snapshot: Snapshot | None = None
        self.registry.register(_SnapshotCollector(self))
        bus.observers.append(self.observe)

    def observe(self, app: str, handling: float | None, queued: float | None, results: list[Message]) -> None:
        if handling is None or queued is None:
            return
        children = self._children.get(app)
        if children is None:  # labels() costs more than observing: once per app
            children = self._children[app] = (self.handling.labels(app), self.queued.labels(app))
        children[0].observe(handling)
        children[1].observe(queued)

    def render(self, snapshot: Snapshot) -> bytes:
        """The text exposition format, with counters and gauges as of C{snapshot}."""
        for kind, entries in snapshot.set_aside.items():
            self.set_aside.update(kind, entries)
        self._snapshot = snapshot
        return generate_latest(self.registry)


class _SnapshotCollector:
    def __init__(self, metrics: BusMetrics) -> None:
        self.metrics = metrics

    def describe(self) -> list[Metric]:
        return []  # the families depend on the snapshot; nothing to check at registration

    def collect(self) -> Iterable[Metric]:
        snapshot = self.metrics._snapshot
        if snapshot is None:
            return
        apps = snapshot.apps
        counters = [
            ("scbus_messages_handled", "Messages handled (errors included), per app.", "handled"),
            ("scbus_handler_errors", "Handler runs that ended in an error, per app.", "errors"),
            ("scbus_messages_redelivered", "Deliveries marked as delivered before, per app.", "redelivered"),
            ("scbus_messages_acked", "Deliveries acknowledged, per app.", "acked"),
            ("scbus_idle_runs", "Idle handler runs started, per app.", "idle_runs"),
        ]
        for name, doc, key in counters:
            family = CounterMetricFamily(name, doc, labels=["app"])
            for s in apps:
                family.add_metric([s["name"]], s.get(key) or 0)
            yield family
        gauges = [
            ("scbus_messages_in_flight", "Deliveries being handled now, per app.", "in_flight"),
            ("scbus_messages_queued", "Messages ready in the app's queue.", "queued"),
            ("scbus_messages_prefetched", "Messages received for the app and not yet handed over.", "buffered"),
            ("scbus_heartbeat_lag_seconds", "How long the app's last heartbeat waited.", "heartbeat_lag"),
            ("scbus_app_paused", "1 when the app is paused in this process.", "paused"),
        ]
        for name, doc, key in gauges:
            gauge = GaugeMetricFamily(name, doc, labels=["app"])
            for s in apps:
                value = s.get(key)
                if value is not None:
                    gauge.add_metric([s["name"]], float(value))
            yield gauge
        set_aside = CounterMetricFamily(
            "scbus_messages_set_aside",
            "Set-aside messages this process has seen in the holding areas (each counted once).",
            labels=["kind", "app", "reason"],
        )
        for (kind, app, reason), count in sorted(self.metrics.set_aside.counts.items()):
            set_aside.add_metric([kind, app, reason], count)
        yield set_aside
        yield GaugeMetricFamily(
            "scbus_send_buffer_messages",
            "Messages kept while the broker is unreachable, to be sent after reconnecting.",
            value=snapshot.send_buffer,
        )
        yield GaugeMetricFamily(
            "scbus_transport_connected", "1 when the transport is connected.", value=int(snapshot.connected)
        )
