# Config validation, target lists and path helpers. No method logic here.
import inspect
from pathlib import Path

from latentaudit.config import validate_config
from latentaudit.registry import ATTACKS, JUDGES

_validated = validate_config(config)
config.clear()
config.update(_validated)

ORGANISM_SPLITS = ["pretrain", "align", "eval_forbidden", "eval_benign", "eval_twin"]
EVAL_SPLITS = ["eval_forbidden", "eval_benign", "eval_twin"]
METRICS = {name: f"results/metrics/{name}.csv" for name in ("behavior", "attacks", "attack_summary", "nll_probe")}
TABLES = expand("results/tables/{table}.{ext}", table=["attack_summary", "behavior"], ext=["md", "tex"])
FIGURES = expand("results/figures/{figure}.{ext}", figure=["lasr_vs_layer", "masr_vs_strength", "nll_probe"],
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


def model_path(model, variant):
    """Where a (model, variant) loads from: a directory this DAG builds, or the user's path / hub id."""
    return f"results/models/organism/{variant}" if is_organism(model) else config["models"][model]["source"]


def model_path_input(wildcards):
    return [model_path(wildcards.model, wildcards.variant)] if is_organism(wildcards.model) else []


def model_variants():
    return [(m, v) for m, spec in config["models"].items() for v in spec["variants"]]


def generation_outputs():
    return [f"results/attacks/{m}/{v}/{a}/generations.parquet" for m, v in model_variants() for a in config["attacks"]]


def score_outputs():
    return [f"results/scores/{m}/{v}/{a}/{j}.parquet" for m, v in model_variants() for a in config["attacks"]
            for j in config["judges"]]


def attack_code(wildcards):
    return code("attacks/__init__.py", "attacks/common.py", "batching.py", "generation.py", "hooks.py", "models.py",
                "io.py", "steps/attacks.py", "registry.py") + [method_code(ATTACKS, wildcards.attack)]


def judge_code(wildcards):
    return code("judges/__init__.py", "io.py", "steps/scoring.py", "registry.py", "organism/world.py") + [
        method_code(JUDGES, wildcards.judge)]


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
