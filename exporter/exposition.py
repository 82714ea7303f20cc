"""The Prometheus text format (0.0.4), written the way Go's client_golang writes it.

postgres_exporter serves the text format, and its counters are named without ``_total``
(``pg_stat_database_blks_hit``). prometheus_client's text writer would announce such a counter as
``# TYPE pg_stat_database_blks_hit_total counter`` above a sample named ``pg_stat_database_blks_hit``, so
Prometheus would file it as untyped; its OpenMetrics writer requires ``_total``. Here the TYPE line names the
series exactly as its samples do. Families without samples are left out, as client_golang does.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from prometheus_client.core import Metric

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_TYPES = {"counter": "counter", "gauge": "gauge", "histogram": "histogram", "summary": "summary"}


def _value(value: float) -> str:
    if value != value:
        return "NaN"
    if value in (math.inf, -math.inf):
        return "+Inf" if value > 0 else "-Inf"
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))


def _escape_help(text: str) -> str:
    return text.replace("\\", r"\\").replace("\n", r"\n")


def _escape_value(text: str) -> str:
    return text.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def _type_name(family: Metric) -> str:
    if family.type == "counter":
        names = {s.name for s in family.samples}
        if len(names) == 1:
            return names.pop()
        return family.name + "_total"
    return family.name


def encode(families: Iterable[Metric]) -> bytes:
    """The text-format body for ``families``."""
    out: list[str] = []
    for family in families:
        if not family.samples:
            continue
        name = _type_name(family)
        out.append(f"# HELP {name} {_escape_help(family.documentation)}\n")
        out.append(f"# TYPE {name} {_TYPES.get(family.type, 'untyped')}\n")
        for sample in family.samples:
            if sample.labels:
                labels = ",".join(f'{k}="{_escape_value(v)}"' for k, v in sample.labels.items())
                out.append(f"{sample.name}{{{labels}}} {_value(sample.value)}\n")
            else:
                out.append(f"{sample.name} {_value(sample.value)}\n")
    return "".join(out).encode("utf-8")
