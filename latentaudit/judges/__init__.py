"""Judges: label each stored generation without regenerating. Importing registers them."""
from . import harmbench, keyword, llamaguard, structural  # noqa: F401
