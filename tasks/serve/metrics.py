"""The service's Prometheus metrics, in a registry of its own (one per app, nothing global):

    tbpr_serve_requests_total{endpoint, status}      requests answered, by route and HTTP status
    tbpr_serve_request_seconds{endpoint}             latency histogram, from the request to its answer
    tbpr_serve_gallery_images                        images in the gallery served now
    tbpr_serve_gallery_age_seconds                   seconds since that embedding was written
    tbpr_serve_gallery_reloads                 re-embeddings picked up since the start

`endpoint` is the route's template (`/api/search`), never the raw path: a scan of random URLs adds one
series (`other`), not one per URL.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from starlette.requests import Request
from starlette.responses import Response

from tasks.serve.live import LiveGallery

# seconds: from a cached page (~1 ms) to a heat map or a first query on a cold CPU (seconds)
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class ServiceMetrics:
    def __init__(self, live: LiveGallery) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "tbpr_serve_requests", "Requests answered", ["endpoint", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "tbpr_serve_request_seconds",
            "Request latency",
            ["endpoint"],
            buckets=BUCKETS,
            registry=self.registry,
        )
        Gauge(
            "tbpr_serve_gallery_images", "Images in the served gallery", registry=self.registry
        ).set_function(lambda: live.current.info.num_images)
        Gauge(
            "tbpr_serve_gallery_age_seconds",
            "Seconds since the served embedding was written",
            registry=self.registry,
        ).set_function(live.age_seconds)
        Gauge(
            "tbpr_serve_gallery_reloads", "Re-embeddings picked up since the start", registry=self.registry
        ).set_function(lambda: live.reloads)

    async def middleware(
        self, request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        started = time.perf_counter()
        status = 500
        try:
            response = await call_next(request)
            status = response.status_code
            return response
        finally:
            route = request.scope.get("route")
            endpoint = getattr(route, "path", None) or "other"
            self.requests.labels(endpoint, str(status)).inc()
            self.latency.labels(endpoint).observe(time.perf_counter() - started)

    def exposition(self) -> Response:
        return Response(generate_latest(self.registry), media_type=CONTENT_TYPE_LATEST)
