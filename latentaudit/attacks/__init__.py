"""Attacks. Each module registers its attacks in ``registry.ATTACKS``; importing registers them."""
from . import asa, clean, harmful_ft, latent_pgd, lvs, prefill, steering  # noqa: F401
