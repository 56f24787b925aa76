"""Judges: label each stored generation without regenerating. Importing registers them."""
from . import harmbench, harmlessness, keyword, llamaguard, structural  # noqa: F401
