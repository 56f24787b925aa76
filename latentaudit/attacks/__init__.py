"""Attacks. Each module registers its attacks in ``registry.ATTACKS`` when imported;
``registry.load_all`` imports them all, an attack job only its own."""
