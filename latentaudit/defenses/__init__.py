"""Model variants built from a model's aligned weights: the defenses. Each module registers
its builder in ``registry.VARIANTS``; importing registers them."""
# Imported by ``registry.load_all`` in this order (dissociated after harmful: it reads the pole).
# Attacks never import from here: what both use lives in harmful_pole, training, perturbation_size.
MODULES = ("harmful", "lapt", "lat", "refusal_sft", "repbend", "dissociated")
