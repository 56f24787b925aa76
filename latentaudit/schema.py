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


_NOT_A_SCALAR = object()


def _scalar_from_text(text: str, types) -> object:
    """The number, boolean or null that ``text`` writes, where the schema's ``type`` asks for one,
    else ``_NOT_A_SCALAR``. Snakemake's ``--config`` reads the values inside a mapping as text
    (``--config 'attacks={asa_grad: {steps: 20}}'`` gives ``"20"``), and only a top-level
    ``True``/``False`` as a boolean, so text that is exactly such a value is read as one."""
    types = [types] if isinstance(types, str) else list(types)
    text = text.strip()
    if "boolean" in types and text.lower() in {"true", "false"}:
        return text.lower() == "true"
    if "null" in types and text in {"null", "~"}:
        return None
    if "integer" in types or "number" in types:
        try:
            return int(text)
        except ValueError:
            pass
    if "number" in types:
        try:
            return float(text)
        except ValueError:
            pass
    return _NOT_A_SCALAR


def boolean_from_config(value, default: bool) -> bool:
    """A boolean key as Snakemake hands it over before validation: a bool, the text ``--config
    key=false`` gives (read as validation reads it, ``_scalar_from_text``), or absent (``default``).
    Anything else gives ``default`` and is left to validation to refuse."""
    if isinstance(value, bool):
        return value
    parsed = _NOT_A_SCALAR if value is None else _scalar_from_text(str(value), "boolean")
    return parsed if isinstance(parsed, bool) else default


def _type_errors(error):
    """``error`` and, under ``anyOf``/``oneOf``, the branches' errors: every failed ``type`` check."""
    if error.validator == "type":
        yield error
    for sub in error.context or ():
        yield from _type_errors(sub)


def _read_scalars_from_text(instance, errors) -> bool:
    """Replace, in place, every text value that ``errors`` (of validating ``instance``) say should
    be a number, boolean or null and that writes one (``_scalar_from_text``); whether any was."""
    replaced = False
    for error in errors:
        for type_error in _type_errors(error):
            if not isinstance(type_error.instance, str):
                continue
            value = _scalar_from_text(type_error.instance, type_error.validator_value)
            path = list(type_error.absolute_path)
            if value is _NOT_A_SCALAR or not path:
                continue
            parent = instance
            for key in path[:-1]:
                parent = parent[key]
            if parent[path[-1]] == type_error.instance:  # not replaced already through another branch
                parent[path[-1]] = value
                replaced = True
    return replaced


def check(instance: dict, schema: dict, prefix: str) -> None:
    """Validate ``instance`` against ``schema`` in place, filling defaults; a ``ConfigError``
    names every bad key (``prefix`` is where ``instance`` sits in the config) and the valid ones.
    A number, boolean or null given as text (snakemake's ``--config`` inside a mapping) is read as one."""
    errors = list(_Validator(schema).iter_errors(instance))
    while _read_scalars_from_text(instance, errors):  # then validate again: a valid config once
        errors = list(_Validator(schema).iter_errors(instance))
    non_finite = dict(_non_finite_numbers(instance))
    lines = [f"config error at {_location(prefix, path)}: {value} is not a finite number"
             for path, value in non_finite.items()]
    # A non-finite value's own schema errors ("inf is greater than the maximum of 1") only repeat it.
    errors = sorted((error for error in errors if tuple(error.absolute_path) not in non_finite),
                    key=lambda e: list(e.absolute_path))
    if errors or lines:
        for error in errors:
            message = error.message
            if error.validator == "additionalProperties":
                allowed = sorted(error.schema.get("properties", {}))
                message += f"; valid keys: {allowed}"
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

