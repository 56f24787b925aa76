# Config validation, target lists and path helpers. No method logic here.
import inspect
from pathlib import Path

from latentaudit.config import validate_config
from latentaudit.registry import ATTACKS, JUDGES, VARIANTS

_validated = validate_config(config)
config.clear()
config.update(_validated)

BUILT_VARIANTS = "|".join(sorted(config["variants"])) or "(?!)"  # matches no directory when none
ORGANISM_SPLITS = ["pretrain", "align", "eval_forbidden", "eval_benign", "eval_twin"]
EVAL_SPLITS = ["eval_forbidden", "eval_benign", "eval_twin"]
METRICS = {name: f"results/metrics/{name}.csv" for name in ("behavior", "attacks", "attack_summary", "nll_probe", "defenses",
                                                                "lvs")}
TABLES = expand("results/tables/{table}.{ext}", table=["attack_summary", "behavior", "defenses"], ext=["md", "tex"])
# The audit-gap report, when the attacks it reads are configured.
AUDIT_GAP = (["results/tables/audit_gap.md", "results/tables/audit_gap.tex"]
             if {"lvs", "steering"} <= set(config["attacks"]) else [])
FIGURES = expand("results/figures/{figure}.{ext}",
                 figure=["lasr_vs_layer", "masr_vs_strength", "nll_probe", "defense_pareto"],
                 ext=config["report"]["formats"])


wildcard_constraints:
    model=r"[A-Za-z0-9_.\-]+",
    variant=r"[a-z][a-z0-9_]*",
    attack=r"[a-z][a-z0-9_]*",
    judge=r"[a-z][a-z0-9_]*",


def code(*modules):
    """Library files a rule imports, as inputs, so editing them reruns the rule."""
    return [f"latentaudit/{module}" for module in ("__init__.py", *modules)]


def method_code(registry, name):
    """The module file that implements a registered attack or judge."""
    return str(Path(inspect.getfile(registry[name].function)).relative_to(Path.cwd()))


def organism_split(split):
    return f"results/data/organism/{split}.jsonl"


def is_organism(model):
    return config["models"][model]["source"] == "organism"


def is_built_variant(variant):
    """A variant this DAG trains on top of a model's aligned weights (a defense, ...)."""
    return variant in config["variants"]


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
    return [f"results/attacks/{m}/{v}/{a}/generations.parquet" for m, v in model_variants() for a in config["attacks"]]


def judges_for(attack):
    """Label judges judge every attack; score judges (the LVS's harmlessness S) only the
    attacks whose LVS they feed."""
    return [j for j in config["judges"]
            if not JUDGES[j].options.get("scores") or ATTACKS[attack].options.get("harmlessness_scored")]


def score_outputs():
    return [f"results/scores/{m}/{v}/{a}/{j}.parquet" for m, v in model_variants() for a in config["attacks"]
            for j in judges_for(a)]


def attack_code(wildcards):
    return code("attacks/__init__.py", "attacks/common.py", "batching.py", "generation.py", "hooks.py", "models.py",
                "io.py", "steps/attacks.py", "registry.py") + [method_code(ATTACKS, wildcards.attack)]


def judge_code(wildcards):
    return code("judges/__init__.py", "io.py", "steps/scoring.py", "registry.py", "organism/world.py") + [
        method_code(JUDGES, wildcards.judge)]


def variant_code(wildcards):
    entry = VARIANTS[wildcards.variant]
    return code("defenses/__init__.py", "defenses/common.py", "batching.py", "generation.py", "hooks.py",
                "models.py", "metrics.py", "io.py", "steps/variants.py", "registry.py", "judges/structural.py") + [
        method_code(VARIANTS, wildcards.variant)]


def variant_settings(wildcards):
    return config["variants"][wildcards.variant]


def variant_records(wildcards):
    """Training data of the defenses: the organism's alignment split (refusals, harmful answers, benign)."""
    if not is_organism(wildcards.model):
        raise ValueError(f"model {wildcards.model!r}: building variants of a hub/path model needs its data "
                         "sets (configs/paper.yaml `data:`), not wired yet")
    return organism_split("align")


def fragile_inputs(wildcards):
    """LAPT's layer choice reads the aligned model's ASA sweep (generations and primary-judge scores)."""
    settings = config["variants"][wildcards.variant]
    if settings.get("layers") != "fragile":
        return {}
    attack, judge = settings["fragile_from"], config["report"]["primary_judge"]
    return {"fragile_generations": f"results/attacks/{wildcards.model}/aligned/{attack}/generations.parquet",
            "fragile_scores": f"results/scores/{wildcards.model}/aligned/{attack}/{judge}.parquet"}


def required_variant_inputs(wildcards):
    """The built variants a variant declares with ``requires=(...)`` (the dissociated model reads
    the harmful pole), as named inputs ``required_<name>`` of rule build_variant."""
    return {f"required_{name}": variant_dir(wildcards.model, name)
            for name in VARIANTS[wildcards.variant].options.get("requires", ())}


def attack_extra_inputs(wildcards):
    """What an attack registered with ``needs=(...)`` reads beyond the model: the steering attack's
    direction is fitted on the training records (``direction_records``) and, with ``direction:
    harmful_pole``, on the model's harmful pole beside its aligned weights."""
    needs = ATTACKS[wildcards.attack].options.get("needs", ())
    settings = config["attacks"][wildcards.attack]
    extras = {}
    if "direction_records" in needs:
        extras["direction_records"] = variant_records(wildcards)
    if "harmful_pole" in needs and settings.get("direction", "harmful_pole") == "harmful_pole":
        extras["harmful_pole"] = variant_dir(wildcards.model, "harmful")
    return extras


def judge_names_pattern(gpu):
    """A wildcard pattern matching exactly the configured judges that do (or do not) need a GPU."""
    names = [j for j in config["judges"] if JUDGES[j].gpu == gpu]
    return "|".join(names) if names else "(?!)"  # (?!) never matches


def model_judge_code(wildcards):
    return judge_code(wildcards) + code("judges/classifier.py", "models.py")


def attack_settings(wildcards):
    return config["attacks"][wildcards.attack]


def judge_settings(wildcards):
    return config["judges"][wildcards.judge]


def model_spec(wildcards):
    return config["models"][wildcards.model]
