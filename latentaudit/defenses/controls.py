"""Which defense each refusal-SFT control variant controls for, and what they must share to
train alike (config validation reads this without importing the defenses)."""
from __future__ import annotations

# control variant -> the defense it controls for
CONTROLS = {"refusal_sft": "repbend", "refusal_sft_lat": "lat"}
MATCHED = ("lr", "batch_size", "schedule", "warmup_fraction", "grad_clip", "weight_decay", "lora", "system_prompt")


def defender_updates(defense: str, defense_settings: dict) -> int:
    """The defense's optimiser updates, from its own (filled) settings: targeted LAT's ``steps`` are
    attack rounds, each followed by ``model_steps_per_attack`` updates (the public code's 100 x 4);
    every other defense's are steps."""
    steps = defense_settings["steps"]
    return steps * defense_settings["model_steps_per_attack"] if defense == "lat" else steps


def _shown(value) -> str:
    """A value as a mismatch shows it: a long text (a system prompt) by its start and length."""
    if isinstance(value, str) and len(value) > 40:
        return f"{value[:32]!r}... ({len(value)} characters)"
    return repr(value)


def control_mismatches(control: dict, defense: str, defense_settings: dict) -> list[str]:
    """``key: control value != defense value`` for every training setting the control must share."""
    pairs = [("steps (defender updates)", control["steps"], defender_updates(defense, defense_settings))]
    pairs += [(key, control.get(key), defense_settings.get(key)) for key in MATCHED]
    return [f"{key}: {_shown(mine)} != {_shown(theirs)}" for key, mine, theirs in pairs if mine != theirs]
