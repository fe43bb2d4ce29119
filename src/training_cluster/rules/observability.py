"""Metrics collection on the nodes. Keys are :meth:`training_cluster.constructs.Observability.add_nodes`'
props; the config moves them to ``observability``'s fields."""

from __future__ import annotations

MIN_SCRAPE_INTERVAL_SECONDS, MAX_SCRAPE_INTERVAL_SECONDS = 5, 300
"""How often a node's collector scrapes its exporters: faster than every 5 seconds costs the node
and the workspace more than it tells; slower than every 5 minutes misses most of what an alert needs."""


def scrape_interval_problem(seconds: int) -> str | None:
    """Why the collectors cannot scrape every ``seconds`` seconds, or ``None``."""
    if not MIN_SCRAPE_INTERVAL_SECONDS <= seconds <= MAX_SCRAPE_INTERVAL_SECONDS:
        return f"must be between {MIN_SCRAPE_INTERVAL_SECONDS} and {MAX_SCRAPE_INTERVAL_SECONDS} seconds"
    return None
