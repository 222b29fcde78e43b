"""``[metrics]``: where the Prometheus endpoint listens (pure: every problem is a ConfigError
naming the key).  Off unless ``listen`` is given."""

from __future__ import annotations

from dataclasses import dataclass

from mailsocketd.table import Table

__all__ = ["EXAMPLE_LISTEN", "MetricsConfig", "parse_metrics"]

EXAMPLE_LISTEN = "tcp:9465:interface=127.0.0.1"  # the documented one: loopback only


@dataclass(frozen=True)
class MetricsConfig:
    """``[metrics]``: the endpoints serving ``GET /metrics``; none (the default): no metrics."""

    listen: tuple[str, ...] = ()

    @property
    def enabled(self) -> bool:
        return bool(self.listen)


def parse_metrics(table: Table) -> MetricsConfig:
    d = MetricsConfig()
    metrics = MetricsConfig(listen=table.string_list("listen", d.listen))
    table.finish()
    return metrics
