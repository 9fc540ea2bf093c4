"""Prometheus metrics in the text exposition format, named like every selfheal target's:

- http_requests_total{route,method,status}: a counter of answered requests;
- http_request_duration_seconds{route}: a histogram of handler latency;
- process_resident_memory_bytes: a gauge read from /proc/self/statm at scrape time.
"""

from __future__ import annotations

import threading

#: The route label of requests that matched no route, so unknown paths cannot grow the label set.
UNMATCHED_ROUTE = "unmatched"

#: The Prometheus client libraries' default latency buckets, in seconds.
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

PAGE_SIZE_BYTES = 4096


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    return repr(float(value)) if value != int(value) else str(int(value))


class Metrics:
    """The service's counters and histograms; safe to use from many threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: dict[tuple[str, str, str], int] = {}
        # route -> (cumulative bucket counts, sum, count)
        self._durations: dict[str, tuple[list[int], float, int]] = {}

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        """Records one answered request."""
        with self._lock:
            key = (route, method, str(status))
            self._requests[key] = self._requests.get(key, 0) + 1
            buckets, total, count = self._durations.get(route, ([0] * len(BUCKETS), 0.0, 0))
            for i, bound in enumerate(BUCKETS):
                if seconds <= bound:
                    buckets[i] += 1
            self._durations[route] = (buckets, total + seconds, count + 1)

    def render(self) -> str:
        """Every metric in the Prometheus text format."""
        lines = [
            "# HELP http_requests_total HTTP requests answered.",
            "# TYPE http_requests_total counter",
        ]
        with self._lock:
            for (route, method, status), value in sorted(self._requests.items()):
                lines.append(
                    f'http_requests_total{{method="{_escape(method)}",route="{_escape(route)}",'
                    f'status="{status}"}} {value}'
                )
            lines += [
                "# HELP http_request_duration_seconds Time spent answering HTTP requests.",
                "# TYPE http_request_duration_seconds histogram",
            ]
            for route, (buckets, total, count) in sorted(self._durations.items()):
                label = _escape(route)
                for bound, value in zip(BUCKETS, buckets):
                    lines.append(
                        f'http_request_duration_seconds_bucket{{route="{label}",le="{bound}"}} {value}'
                    )
                lines.append(f'http_request_duration_seconds_bucket{{route="{label}",le="+Inf"}} {count}')
                lines.append(f'http_request_duration_seconds_sum{{route="{label}"}} {_number(total)}')
                lines.append(f'http_request_duration_seconds_count{{route="{label}"}} {count}')
        memory = resident_memory_bytes()
        if memory is not None:
            lines += [
                "# HELP process_resident_memory_bytes Resident memory size in bytes.",
                "# TYPE process_resident_memory_bytes gauge",
                f"process_resident_memory_bytes {memory}",
            ]
        return "\n".join(lines) + "\n"


def resident_memory_bytes() -> int | None:
    """Resident set size of this process, from /proc/self/statm (Linux only)."""
    try:
        with open("/proc/self/statm", encoding="ascii") as statm:
            return int(statm.read().split()[1]) * PAGE_SIZE_BYTES
    except (OSError, IndexError, ValueError):
        return None
