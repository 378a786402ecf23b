"""The machine's load beside every benchmark table: timings on a shared CPU mean little
without it. The 1-minute load average at the start says what else was running; at the end it
includes this benchmark's own threads."""

from __future__ import annotations

import os


def load_average() -> float | None:
    """The 1-minute load average, or None where the platform has none."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def load_line(at_start: float | None, at_end: float | None, cpus: int | None = None) -> str:
    """"1-min load average: 0.31 at the start, 2.05 at the end (this run included); 2 CPUs"."""
    def fmt(value):
        return "n/a" if value is None else f"{value:.2f}"

    cpus = os.cpu_count() if cpus is None else cpus
    return (f"1-min load average: {fmt(at_start)} at the start, {fmt(at_end)} at the end "
            f"(this run included); {cpus} CPUs")
