"""Model variants built from a model's aligned weights: the defenses. Each module registers
its builder in ``registry.VARIANTS``; importing registers them."""
from . import harmful, lapt, lat, refusal_sft, repbend  # noqa: F401
from . import dissociated  # noqa: F401  (after harmful: it reads the pole)
