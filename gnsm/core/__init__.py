"""Facts every layer shares: the categorical field layout and standardization, the temperature
schedule, the clean-label posterior behind a denoiser's output, atomic file writes, and the torch / BLAS
thread settings."""
from .io import (atomic_replace_dir, atomic_write, atomic_write_bytes, clean_stale_temps, interrupted_replace,
                 temp_pattern)
from .layout import (DETECTOR_EPS, MAX_FIELD_SIZE, MIN_RELATIVE_SCALE, PAPER_EPS, FieldLayout, as_field_sizes,
                     fit_standardizer, near_zero_scale, standardize)
from .posterior import class_posterior, denoiser_mean, likelihood_posterior
from .schedule import TAU_MAX, TAU_MIN, Schedule, check_tau, check_temperatures
from .threads import configure_threads, ensure_configured, limit_blas_threads

__all__ = [
    "DETECTOR_EPS",
    "MAX_FIELD_SIZE",
    "MIN_RELATIVE_SCALE",
    "PAPER_EPS",
    "TAU_MAX",
    "TAU_MIN",
    "FieldLayout",
    "Schedule",
    "as_field_sizes",
    "atomic_replace_dir",
    "atomic_write",
    "atomic_write_bytes",
    "check_tau",
    "class_posterior",
    "check_temperatures",
    "clean_stale_temps",
    "configure_threads",
    "denoiser_mean",
    "ensure_configured",
    "fit_standardizer",
    "interrupted_replace",
    "likelihood_posterior",
    "limit_blas_threads",
    "near_zero_scale",
    "standardize",
    "temp_pattern",
]
