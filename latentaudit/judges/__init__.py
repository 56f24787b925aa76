"""Judges: label each stored generation without regenerating. Importing registers them."""
from . import keyword, structural  # noqa: F401
