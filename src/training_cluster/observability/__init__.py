"""Observability data: the alert rules (and, later, the Grafana dashboards) as committed files."""
