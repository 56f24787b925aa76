"""Judges: label each stored generation without regenerating. Each module registers its judges
in ``registry.JUDGES`` when imported; ``registry.load_all`` imports them all, a judge job only its own."""
