"""inventory-service: stock lookups over HTTP, with Prometheus metrics (standard library only)."""

__version__ = "0.1.0"
