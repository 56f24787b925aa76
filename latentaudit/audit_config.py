"""Audit any model with one command: ``snakemake audit --config audit_model=<hub id or path>``.

The audited model joins the config's ``models`` (variant ``aligned``, the model as given), is
attacked with every configured attack beside a reference model (by default the first other
configured model: the aligned model the audit is read against), and an audit card is
rendered from the metrics CSVs of the two (latentaudit/report/audit_card.py): behavioural
refusal and over-refusal, ASA MASR/PASR and LASR by layer, latent PGD ASR, the LVS at the audit
gap's reference point with its profiles by layer and budget when an ``lvs.csv`` is given, and the
audit-gap verdict (LVS paper): does the model pass a behavioural evaluation while being latently
more vulnerable than the reference?

This module rewrites the config for it (the audited model added, the reference resolved) and
reads from config what the audit rules need: the card's judge and the latent attacks.
"""
from __future__ import annotations

import copy
import re
from collections.abc import Iterable

from .catalog import catalog

NAME = re.compile(r"^[A-Za-z0-9_.\-]+$")


# The card's sections for families of latent attacks: (title, name prefix, figure, note when absent).
# A latent attack of no family still counts in the verdict and is listed under "Other latent attacks".
LATENT_SECTIONS = (("Activation steering (ASA)", "asa", "asa_by_layer", "no `asa_*` attack is configured."),
                   ("Latent PGD", "latent_pgd", "latent_pgd", "no `latent_pgd` attack is configured."))


def audit_figures(attacks) -> list[str]:
    """The card's figure names for the configured attacks (absent attacks, absent figures)."""
    names = ["behavior"]
    names += [figure for _, prefix, figure, _ in LATENT_SECTIONS if any(a.startswith(prefix) for a in attacks)]
    if "lvs" in attacks:
        names.append("lvs_profile")
    return names


class AuditConfigError(ValueError):
    pass


def audit_name(source: str, name: str | None = None) -> str:
    """The audited model's name: ``name``, or the last path component of ``source`` with
    characters outside [A-Za-z0-9_.-] replaced by ``_``."""
    if name:
        if not NAME.match(name):
            raise AuditConfigError(f"config error at audit_name: {name!r} may only use letters, digits, '_', '.', '-'")
        return name
    return re.sub(r"[^A-Za-z0-9_.\-]+", "_", source.rstrip("/").rsplit("/", 1)[-1]) or "audited"


def add_audited_model(config: dict) -> dict:
    """A copy of the (raw) config with the audited model among ``models`` and ``audit_name``,
    ``audit_reference`` resolved; the config itself when neither ``audit_model`` nor
    ``audit_variant`` is set. ``audit_variant: <model>/<variant>`` audits a variant the DAG builds
    anyway (e.g. the dissociated model): nothing is added, its attacks are the experiment's own,
    and the reference defaults to the same model's aligned variant."""
    source = config.get("audit_model")
    if config.get("audit_variant"):
        if source:
            raise AuditConfigError("config error at audit_variant: give audit_model= (a model to add) or "
                                   "audit_variant=<model>/<variant> (a configured one), not both")
        model, variant = audit_subject(config)
        config = copy.deepcopy(dict(config))
        config.update(audit_name=audit_name(model, config.get("audit_name") or f"{model}_{variant}"),
                      audit_reference=config.get("audit_reference") or model)
        return config
    if not source:
        return config
    config = copy.deepcopy(dict(config))
    models = dict(config.get("models") or {})
    name = audit_name(source, config.get("audit_name"))
    adapter = config.get("audit_adapter")
    existing = models.get(name)
    if existing is not None:
        if existing.get("source") != source or existing.get("adapter") != adapter:
            raise AuditConfigError(
                f"config error at audit_name: {name!r} is already a configured model with source "
                f"{existing.get('source')!r} (adapter {existing.get('adapter')!r}), not {source!r} (adapter "
                f"{adapter!r}); pass another audit_name=")
        if "aligned" not in existing.get("variants", ["aligned"]):
            existing = {**existing, "variants": ["aligned", *existing["variants"]]}
        models[name] = existing
    else:
        models[name] = {"source": source, "adapter": adapter, "variants": ["aligned"]}
    reference = config.get("audit_reference")
    others = [m for m in models if m != name]
    if reference is None:
        reference = others[0] if others else name
    if reference not in models:
        raise AuditConfigError(f"config error at audit_reference: {reference!r} is not a configured model; "
                               f"valid: {sorted(models)}")
    config.update(models=models, audit_name=name, audit_reference=reference)
    return config


def audit_subject(config: dict) -> tuple[str, str]:
    """The (model, variant) the card is about: ``audit_variant`` split at its "/", else the added
    model ``audit_name`` as given (its variant ``aligned``)."""
    if not config.get("audit_variant"):
        return config["audit_name"], "aligned"
    model, slash, variant = str(config["audit_variant"]).partition("/")
    if not (slash and NAME.match(model) and NAME.match(variant)):
        raise AuditConfigError(f"config error at audit_variant: {config['audit_variant']!r} is not "
                               "<model>/<variant>, e.g. audit_variant=organism/dissociated")
    return model, variant


def check_audit_subject(config: dict) -> None:
    """After validation: the audited variant is one the config's model has, the reference a model."""
    model, variant = audit_subject(config)
    if model not in config["models"]:
        raise AuditConfigError(f"config error at audit_variant: {model!r} is not a configured model; valid: "
                               f"{sorted(config['models'])}")
    variants = config["models"][model]["variants"]
    if variant not in variants:
        raise AuditConfigError(f"config error at audit_variant: model {model!r} has no variant {variant!r}; "
                               f"valid: {sorted(variants)}")
    if config["audit_reference"] not in config["models"]:
        raise AuditConfigError(f"config error at audit_reference: {config['audit_reference']!r} is not a "
                               f"configured model; valid: {sorted(config['models'])}")


def latent_attacks(attacks: Iterable[str]) -> list[str]:
    """The attacks among ``attacks`` registered with ``latent=True``: those whose MASR the verdict reads."""
    registered = catalog().attacks
    return [a for a in attacks if registered.get_entry(a).latent]


def card_judge(primary: str, applicable: list[str], chosen: str | None = None) -> str:
    """The judge the card reads: ``chosen`` (``audit_judge``), which must score both models; else the
    primary one when it scores both, else the first that does."""
    if chosen is not None:
        if chosen not in applicable:
            raise AuditConfigError(f"config error at audit_judge: {chosen!r} does not score both the audited and "
                                   f"the reference model; valid: {applicable}")
        return chosen
    if primary in applicable:
        return primary
    if not applicable:
        raise AuditConfigError("audit: no configured judge scores both the audited and the reference model")
    return applicable[0]
