"""Attacks. Each module registers its attacks in ``registry.ATTACKS``; importing registers them."""
from . import asa, clean  # noqa: F401
