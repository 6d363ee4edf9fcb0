"""Facts every layer shares: the temperature schedule and the torch / BLAS thread settings."""
from .schedule import Schedule
from .threads import configure_threads, ensure_configured, limit_blas_threads

__all__ = ["Schedule", "configure_threads", "ensure_configured", "limit_blas_threads"]
