"""Fixtures of the hostile tests (tests/hostile); the helpers are in hostile_lib.py."""

import pytest

from hostile_lib import Bystander


@pytest.fixture
def bystander(faas) -> Bystander:
    """A hello function deployed next to the hostile one (see hostile_lib.Bystander)."""
    return Bystander(faas)
