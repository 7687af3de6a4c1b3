"""Limits on shared reports, set by whoever runs the server; the page cannot go past them.

Every limit has a default suited to a dashboard behind a login and an environment variable to
change it (read once per :class:`hte.report_store.ReportStore`):

=============================  ===========================  ========
variable                       what it limits               default
=============================  ===========================  ========
``HTE_REPORT_MIN_CELL``        smallest people per arm      10
                               of a published group (k)
``HTE_REPORT_MAX_GROUPS``      groups in one report         5000
``HTE_REPORT_MAX_MB``          stored size of one report    16
``HTE_REPORT_MAX_TITLE``       title length (characters)    300
``HTE_REPORT_MAX_NOTE``        note length (characters)     20000
``HTE_PUBLISH_PER_HOUR``       reports one session may      20
                               publish in an hour
``HTE_REPORT_CACHE_SECONDS``   how long a report view is    60
                               kept in memory
=============================  ===========================  ========

:class:`PublishRate` counts publications per session (a sliding hour) in memory: sessions
belong to one server, so the count does not need the database.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields

from hte.errors import ReportError

#: The environment variable of each limit.
ENV = {
    "min_cell": "HTE_REPORT_MIN_CELL",
    "max_groups": "HTE_REPORT_MAX_GROUPS",
    "max_megabytes": "HTE_REPORT_MAX_MB",
    "max_title": "HTE_REPORT_MAX_TITLE",
    "max_note": "HTE_REPORT_MAX_NOTE",
    "publishes_per_hour": "HTE_PUBLISH_PER_HOUR",
    "cache_seconds": "HTE_REPORT_CACHE_SECONDS",
}


@dataclass(frozen=True)
class ReportLimits:
    """What a published report may hold and how often a session may publish."""

    min_cell: int = 10
    max_groups: int = 5000
    max_megabytes: float = 16.0
    max_title: int = 300
    max_note: int = 20_000
    publishes_per_hour: int = 20
    cache_seconds: float = 60.0

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0 \
                    or (f.name in ("min_cell", "max_groups") and value < 1):
                raise ReportError(f"The report limit {ENV[f.name]} must be a positive number, "
                                  f"not {value!r}.")

    @property
    def max_bytes(self) -> int:
        return int(self.max_megabytes * 2**20)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ReportLimits:
        """The defaults, with any limit set in the environment (see the module's table)."""
        environ = os.environ if environ is None else environ
        values: dict[str, int | float] = {}
        for f in fields(cls):
            raw = environ.get(ENV[f.name], "").strip()
            if not raw:
                continue
            kind = float if f.type in ("float", float) else int
            try:
                values[f.name] = kind(raw)
            except ValueError:
                raise ReportError(f"The report limit {ENV[f.name]} must be a "
                                  f"{'number' if kind is float else 'whole number'}, not "
                                  f"{raw!r}.") from None
        return cls(**values)


class PublishRate:
    """At most ``per_hour`` publications per key (a session) in any sliding hour; thread-safe."""

    WINDOW = 3600.0

    def __init__(self, per_hour: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_hour = int(per_hour)
        self._clock = clock
        self._times: dict[str, deque[float]] = defaultdict(deque)
        self._lock = threading.Lock()

    def take(self, key: str) -> None:
        """Count one publication for ``key``, or raise :class:`ReportError` if it is over."""
        now = self._clock()
        with self._lock:
            times = self._times[key]
            while times and times[0] <= now - self.WINDOW:
                times.popleft()
            if len(times) >= self.per_hour:
                wait = max(1, math.ceil((times[0] + self.WINDOW - now) / 60))
                count = f"{len(times)} report{'' if len(times) == 1 else 's'}"
                raise ReportError(
                    f"This session has published {count} in the last hour, the "
                    f"most this server allows. Try again in about {wait} minute"
                    f"{'' if wait == 1 else 's'}, or withdraw reports you no longer need.")
            times.append(now)
            if len(self._times) > 10_000:  # forget idle sessions
                for k in [k for k, t in self._times.items() if not t or t[-1] <= now - self.WINDOW]:
                    del self._times[k]
