"""``GET /metrics`` over HTTP (twisted.web, in the daemon's reactor).

The page is rendered in the reactor thread, not in a thread pool as prometheus_client's own
Twisted resource does: the collector reads the services' state, which only the reactor thread
may touch, and a scrape costs a few hundred microseconds.  Requests are not logged (a scrape
every few seconds would fill the log); an idle HTTP connection is closed after 30 s.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

__all__ = ["HTTP_TIMEOUT", "MetricsPage", "metrics_site"]

HTTP_TIMEOUT = 30.0


class MetricsPage(Resource):
    """The metrics in Prometheus's text format, labelled version 0.0.4 (what every Prometheus
    release reads; Debian 12 ships 2.42): every name here is a classic one, so the text is the
    same in the newer 1.0.0 that prometheus_client labels its output with by default."""

    isLeaf = True

    def __init__(self, registry: CollectorRegistry) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.registry = registry

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"Content-Type", CONTENT_TYPE_PLAIN_0_0_4.encode("ascii"))
        return generate_latest(self.registry)

    render_HEAD = render_GET


class QuietSite(Site):
    """A Site that does not log each request."""

    noisy = False

    def log(self, request: object) -> None:
        """Scrapes are not logged."""


def metrics_site(registry: CollectorRegistry) -> Site:
    """The HTTP site: ``/metrics``; anything else is 404."""
    root = Resource()
    root.putChild(b"metrics", MetricsPage(registry))
    return QuietSite(root, timeout=HTTP_TIMEOUT)  # type: ignore[no-untyped-call]
