"""Prometheus metrics, in a registry owned by one Services object.

No module-level collectors: two relays in one process (tests) must not share
counters, so every metric lives in the :class:`Metrics` instance's registry.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Metrics:
    """The relay's counters, gauges and histograms."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.http_requests = Counter(
            "relay_http_requests",
            "HTTP requests by route and status",
            ["route", "status"],
            registry=r,
        )
        self.logins = Counter("relay_logins", "Login attempts by outcome", ["outcome"], registry=r)
        self.ratelimit_hits = Counter(
            "relay_ratelimit_hits",
            "Requests refused by a rate limit or lockout",
            ["limit"],
            registry=r,
        )
        self.sessions_revoked = Counter(
            "relay_sessions_revoked", "Sessions revoked by reason", ["reason"], registry=r
        )
        self.ws_connections = Gauge(
            "relay_ws_connections", "Open WebSocket connections", registry=r
        )
        self.ws_handshakes = Counter(
            "relay_ws_handshakes", "WebSocket handshakes by outcome", ["outcome"], registry=r
        )
        self.ws_frames_in = Counter(
            "relay_ws_frames_in", "Frames received by type", ["type"], registry=r
        )
        self.ws_frames_out = Counter(
            "relay_ws_frames_out", "Frames sent by type", ["type"], registry=r
        )
        self.ws_closes = Counter(
            "relay_ws_closes", "WebSocket connections closed by code", ["code"], registry=r
        )
        self.delivery_latency = Histogram(
            "relay_delivery_latency_seconds",
            "From a send frame's arrival to the message frame's write, online recipients",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
            registry=r,
        )
        self.store_batch = Histogram(
            "relay_store_batch_size",
            "Messages per group commit",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
            registry=r,
        )
        # Read when scraped (set_function), so the hot path pays nothing.
        self.pipeline_queue = Gauge(
            "relay_pipeline_queue_depth",
            "Sends and acks waiting for the group commit",
            registry=r,
        )
        self.outbound_queued = Gauge(
            "relay_ws_outbound_queued",
            "Frames waiting in all connections' outbound queues",
            registry=r,
        )
        self.outbound_queue_max = Gauge(
            "relay_ws_outbound_queue_max", "Fullest connection outbound queue", registry=r
        )
        self.queue_full = Counter(
            "relay_queue_full",
            "Sends refused because a recipient queue (or the sender's share of it) was full",
            ["limit"],
            registry=r,
        )
        self.connections_refused = Counter(
            "relay_connections_refused",
            "Sockets turned away at accept, by server and reason",
            ["server", "reason"],
            registry=r,
        )
        self.keys_fetched = Counter(
            "relay_keys_bundles_fetched", "Key bundles handed out", registry=r
        )

    def render(self) -> bytes:
        """The registry in Prometheus text exposition format."""
        return generate_latest(self.registry)
