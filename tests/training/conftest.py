"""Shared fixtures of the trainer tests."""
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))

from solar_data import solar_codes  # noqa: E402


@pytest.fixture(scope="session")
def solar():
    """(codes, field sizes) of the first 300 solar-flare records; skipped without the data."""
    return solar_codes()
