"""Name -> implementation registries for attacks, judges and model variants.

Adding a method is one module that registers itself here plus a config entry: the config
validator, the Snakemake target lists and the report all read these registries.
"""
from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass, field
from typing import Callable

from .schema import filled


@dataclass
class Entry:
    name: str
    function: Callable | None  # None in the catalog (latentaudit/catalog.py): metadata, nothing imported
    schema: dict = field(default_factory=dict)  # JSON schema of the method's config settings
    kind: str = ""
    options: dict = field(default_factory=dict)  # method-specific facts, e.g. a variant's output kind
    module: str = ""  # the module that registers it: what the method's job imports

    def settings(self, raw: dict) -> dict:
        """The method's settings as it reads them: ``raw`` validated against its schema with every
        default filled in (the schema is where defaults live; method code reads ``settings[key]``)."""
        return filled(raw, self.schema, f"{self.kind}s.{self.name}")  # where it sits in the config

    @property
    def shared_keys(self) -> tuple[str, ...]:
        """Settings the method shares with others, set once at the config's top level (registered
        with ``shared=(...)``): config validation fills them in and rejects them in the method's own
        section, so two methods cannot disagree (e.g. ``nudge_depth``: the dissociated model's nudge
        layer is where steering acts)."""
        return tuple(self.options.get("shared", ()))

    @property
    def gpu(self) -> bool:
        """Runs a neural model (a model judge): scheduled as a GPU job, not on the submit node."""
        return bool(self.options.get("gpu", False))

    @property
    def judges_read(self) -> tuple[str, ...]:
        """Judges a variant's build labels text with (registered with ``reads_judges=(...)``): the
        build gets their configured settings, so it labels as the judge rules do."""
        return tuple(self.options.get("reads_judges", ()))

    @property
    def latent(self) -> bool:
        """An attack on the activations (registered with ``latent=True``): the audit card's verdict
        reads its MASR as the model's latent attack success."""
        return bool(self.options.get("latent", False))

    @property
    def adds_init(self) -> bool:
        """On a ``forbidden_split``, the attack job adds INIT rows, the clean answers to the attack's
        own harmful requests (registered with ``init=False`` where its own rows already hold them)."""
        return bool(self.options.get("init", True))

    @property
    def organism_only(self) -> bool:
        """Judges only the organism's generations (it needs the toy world's answers)."""
        return bool(self.options.get("organism_only", False))


# Every attack's optional generation length: the papers generate different lengths per attack (ASA 50,
# LVS 128, HarmBench-style evaluation 512); null = the config's generation.max_new_tokens.
MAX_NEW_TOKENS = {"type": ["integer", "null"], "minimum": 1, "default": None,
                  "description": "new tokens this attack generates; null: generation.max_new_tokens"}


# Every attack's optional set of harmful requests: the papers attack on different benchmarks (the
# LatentSafety paper's ASA on AdvBench's first 100, the audit gap on HarmBench); null = eval_forbidden.
FORBIDDEN_SPLIT = {"type": ["string", "null"], "default": None,
                   "description": "a real-data eval split of harmful requests this attack runs on instead of "
                                  "eval_forbidden (e.g. eval_advbench); null: eval_forbidden"}


# Every judge's optional choice of attacks: the papers judge some attacks with their own classifier (the
# LVS public code judges harmful fine-tuning with HarmBench's Mistral-7B validation classifier); null = all.
JUDGED_ATTACKS = {"oneOf": [{"type": "null"}, {"type": "array", "items": {"type": "string"}, "minItems": 1,
                                               "uniqueItems": True}],
                  "default": None,
                  "description": "the configured attacks whose generations this judge scores; null: every attack"}


def max_new_tokens(settings: dict, generation: dict) -> int:
    """An attack's generation length: its own ``max_new_tokens`` or the config's ``generation`` one."""
    return settings["max_new_tokens"] or generation["max_new_tokens"]


class Registry(dict):
    def __init__(self, kind: str):
        super().__init__()
        self.kind = kind

    def register(self, name: str, schema: dict | None = None, **options):
        def decorate(function: Callable) -> Callable:
            if name in self:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            schema_ = schema or {"type": "object"}
            if self.kind == "attack" and "properties" in schema_:  # every attack's generation length and requests
                schema_ = {**schema_, "properties": {**schema_["properties"], "max_new_tokens": MAX_NEW_TOKENS,
                                                     "forbidden_split": FORBIDDEN_SPLIT}}
            if self.kind == "judge" and "properties" in schema_:  # every judge's choice of what it judges
                schema_ = {**schema_, "properties": {**schema_["properties"], "attacks": JUDGED_ATTACKS}}
            self[name] = Entry(name, function, schema_, self.kind, options, function.__module__)
            return function
        return decorate

    def get_entry(self, name: str) -> Entry:
        if name not in self:
            raise KeyError(f"unknown {self.kind} {name!r}; valid: {sorted(self)}")
        return self[name]


ATTACKS = Registry("attack")
JUDGES = Registry("judge")
# Model variants the pipeline builds from a model's aligned weights (defenses, harmful pole, ...).
VARIANTS = Registry("variant")


def load_all() -> None:
    """Import every built-in method module so it registers itself."""
    from . import attacks, defenses, judges
    # The packages do not import their modules: a job imports only its method's (a keyword
    # judge needs no torch, an attack no trl).
    for package in (attacks, judges):
        for module in pkgutil.iter_modules(package.__path__):
            if module.name != "common":
                importlib.import_module(f"{package.__name__}.{module.name}")
    for module in defenses.MODULES:
        importlib.import_module(f"{defenses.__name__}.{module}")


def load_module(module: str | None) -> None:
    """Import the one module that registers a method (what a job needs, and no more); every
    built-in one when ``module`` is None."""
    if module is None:
        load_all()
    else:
        importlib.import_module(module)
