"""Counters and gauges for `/metrics`, in Prometheus' text format, with no dependency.

Every part of the proxy that can lose or drop something (store, mirror, the request path) counts
it here, so that a loss is always visible. Increments happen on the event loop and in the store's
writer thread; a plain dict update under the GIL is atomic enough for counters that only grow.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

LabelKey = tuple[tuple[str, str], ...]


@dataclass
class _Family:
    kind: str  # counter | gauge
    help: str
    values: dict[LabelKey, float] = field(default_factory=dict)


class Metrics:
    def __init__(self) -> None:
        self._families: dict[str, _Family] = {}
        self._gauges: dict[str, tuple[str, Callable[[], dict[LabelKey, float]]]] = {}

    def counter(self, name: str, help: str) -> None:
        self._families.setdefault(name, _Family("counter", help))

    def inc(self, name: str, amount: float = 1.0, **labels: str) -> None:
        fam = self._families[name]
        key = tuple(sorted(labels.items())) if labels else ()
        fam.values[key] = fam.values.get(key, 0.0) + amount

    def get(self, name: str, **labels: str) -> float:
        key = tuple(sorted(labels.items())) if labels else ()
        return self._families[name].values.get(key, 0.0)

    def total(self, name: str) -> float:
        return sum(self._families[name].values.values())

    def snapshot(self) -> list[tuple[str, dict[str, str], float]]:
        """Every counter value, for saving: (name, labels, value)."""
        return [(name, dict(key), value) for name, fam in self._families.items()
                for key, value in list(fam.values.items())]

    def gauge(self, name: str, help: str, read: Callable[[], dict[LabelKey, float]]) -> None:
        """A gauge read when /metrics is rendered, e.g. a queue's current depth."""
        self._gauges[name] = (help, read)

    def render(self) -> str:
        lines: list[str] = []
        for name, fam in self._families.items():
            lines += [f"# HELP {name} {fam.help}", f"# TYPE {name} {fam.kind}"]
            for key, value in sorted(fam.values.items()):
                lines.append(f"{name}{_labels(key)} {_num(value)}")
        for name, (help, read) in self._gauges.items():
            lines += [f"# HELP {name} {help}", f"# TYPE {name} gauge"]
            for key, value in sorted(read().items()):
                lines.append(f"{name}{_labels(key)} {_num(value)}")
        return "\n".join(lines) + "\n"


def _labels(key: LabelKey) -> str:
    if not key:
        return ""
    inner = ",".join(f'{k}="{_escape(v)}"' for k, v in key)
    return "{" + inner + "}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(value)


def standard_metrics() -> Metrics:
    """The proxy's metric families, declared in one place."""
    m = Metrics()
    m.counter("shadoweval_requests_total", "Requests received, by route and status class.")
    m.counter("shadoweval_production_errors_total", "Requests production failed to answer, by kind.")
    m.counter("shadoweval_mirrored_total", "Requests handed to a candidate or the twin, by candidate.")
    m.counter("shadoweval_mirror_dropped_total", "Mirror work dropped, by candidate and reason.")
    m.counter("shadoweval_candidate_errors_total", "Candidate calls that failed, by candidate and kind.")
    m.counter("shadoweval_candidate_outputs_total", "Candidate answers recorded, by candidate and status.")
    m.counter("shadoweval_store_written_total", "Records committed to the store, by kind.")
    m.counter("shadoweval_store_lost_total", "Records the store could not keep, by reason.")
    m.counter("shadoweval_feedback_total", "End-user feedback received.")
    return m
