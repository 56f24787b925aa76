"""JSON-schema validation that fills in defaults: the one place a setting's default lives is the
schema that declares it (the config layout's, or the one a method registers). The config
validator checks whole experiments with it; the registry hands each method its settings
through it, so method code reads ``settings[key]`` and never carries a default of its own."""
from __future__ import annotations

import copy
import math
from pathlib import Path

import jsonschema
import yaml


class ConfigError(ValueError):
    pass


def _with_defaults(validator_class):
    """A validator that fills ``default`` values into the instance as it validates."""
    validate_properties = validator_class.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for name, sub in properties.items():
                if "default" in sub and name not in instance:
                    instance[name] = copy.deepcopy(sub["default"])
        yield from validate_properties(validator, properties, instance, schema)

    return jsonschema.validators.extend(validator_class, {"properties": set_defaults})


_Validator = _with_defaults(jsonschema.Draft202012Validator)


def _location(prefix: str, path) -> str:
    parts = [prefix] if prefix else []
    for p in path:
        parts.append(f"[{p}]" if isinstance(p, int) else str(p))
    return ".".join(parts).replace(".[", "[") or "<config>"


def _non_finite_numbers(value, path=()):
    """(path, value) of every NaN or infinite number in ``value``: JSON Schema's ``minimum`` and
    ``maximum`` let NaN through (every comparison with it is false), and YAML reads ``.nan``/``.inf``."""
    if isinstance(value, float) and not math.isfinite(value):
        yield path, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _non_finite_numbers(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _non_finite_numbers(item, (*path, index))


def _boolean_as_text(error) -> bool:
    """A boolean written as the text "true" or "false"."""
    types = error.validator_value if error.validator == "type" else ()
    wants_boolean = types == "boolean" or (isinstance(types, list) and "boolean" in types)
    return wants_boolean and isinstance(error.instance, str) and error.instance.lower() in {"true", "false"}


def check(instance: dict, schema: dict, prefix: str) -> None:
    """Validate ``instance`` against ``schema`` in place, filling defaults; a ``ConfigError``
    names every bad key (``prefix`` is where ``instance`` sits in the config) and the valid ones."""
    non_finite = dict(_non_finite_numbers(instance))
    lines = [f"config error at {_location(prefix, path)}: {value} is not a finite number"
             for path, value in non_finite.items()]
    # A non-finite value's own schema errors ("inf is greater than the maximum of 1") only repeat it.
    errors = sorted((error for error in _Validator(schema).iter_errors(instance)
                     if tuple(error.absolute_path) not in non_finite), key=lambda e: list(e.absolute_path))
    if errors or lines:
        for error in errors:
            message = error.message
            if error.validator == "additionalProperties":
                allowed = sorted(error.schema.get("properties", {}))
                message += f"; valid keys: {allowed}"
            elif _boolean_as_text(error):
                # snakemake's --config reads True/False as booleans, but true/false as text
                message += f" (on snakemake's command line write {error.instance.capitalize()})"
            lines.append(f"config error at {_location(prefix, error.absolute_path)}: {message}")
        raise ConfigError("\n".join(lines))


def filled(raw: dict, schema: dict, prefix: str) -> dict:
    """A validated copy of ``raw`` with every default of ``schema`` filled in (``raw`` is untouched)."""
    settings = copy.deepcopy(dict(raw))
    check(settings, schema, prefix)
    return settings


CONFIG_SCHEMA_PATH = Path(__file__).resolve().parents[1] / "schemas" / "config.schema.yaml"


def config_section_defaults(*keys: str) -> dict:
    """The defaults of one section of the config layout (e.g. ``("organism", "world")``), from
    schemas/config.schema.yaml: for code that builds a section's object outside a workflow run."""
    schema = yaml.safe_load(CONFIG_SCHEMA_PATH.read_text())
    for key in keys:
        schema = schema["properties"][key]
    return filled({}, schema, ".".join(keys))

