"""A method's settings have one source of defaults, its registered schema: method code reads
``settings[key]`` and carries no default of its own, and the registry hands it the filled
settings."""
import ast
import json
from pathlib import Path

import pandas as pd
import pytest

from latentaudit.judges.keyword import DEFAULT_KEYWORDS
from latentaudit.registry import ATTACKS, JUDGES, VARIANTS, load_all
from latentaudit.schema import ConfigError
from latentaudit.jobs import job
from latentaudit.jobs.judging import run_judge
from latentaudit.training import OPTIM_PROPERTIES

PACKAGE = Path(__file__).resolve().parents[1] / "latentaudit"
METHOD_PACKAGES = ("attacks", "defenses", "judges")


def _method_modules():
    return sorted(path for name in METHOD_PACKAGES for path in (PACKAGE / name).glob("*.py"))


def defaults_in_get_calls(source: str) -> list[tuple[int, str]]:
    """(line, call) of every ``x.get(key, default)`` whose receiver is not a literal table
    (``{"yes": 1.0, "no": 0.0}.get(word, nan)`` maps words; it holds no setting)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get"
                and len(node.args) + len(node.keywords) >= 2 and not isinstance(node.func.value, ast.Dict)):
            found.append((node.lineno, ast.unparse(node)))
    return found


def test_the_scan_finds_a_default_under_any_name():
    source = "def f(settings, lora):\n    a = settings.get('steps', 1)\n    b = lora.get('rank', 8)\n" \
             "    c = settings['steps']\n    d = {'yes': 1}.get(w, 0)\n    e = settings.get('revision')\n"
    assert [line for line, _ in defaults_in_get_calls(source)] == [2, 3]


@pytest.mark.parametrize("path", _method_modules(), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_method_code_holds_no_defaults(path):
    found = defaults_in_get_calls(path.read_text())
    assert not found, f"{path.name}: defaults belong in the method's schema, read settings[key]: {found}"


def _registered_schemas(module: str) -> list[dict]:
    return [entry.schema for registry in (ATTACKS, JUDGES, VARIANTS) for entry in registry.values()
            if entry.function.__module__ == module]


def settings_keys_read(source: str) -> set[str]:
    """Every constant key read as ``settings["key"]``."""
    return {node.slice.value for node in ast.walk(ast.parse(source))
            if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name) and node.value.id == "settings"
            and isinstance(node.slice, ast.Constant)}


@pytest.mark.parametrize("path", _method_modules(), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_setting_a_method_reads_is_required_or_has_a_schema_default(path):
    """With no default in code, a key read but neither required nor defaulted would fail at run time."""
    load_all()
    module = f"latentaudit.{path.parent.name}.{path.stem}"
    schemas = _registered_schemas(module) or [  # a helper module (classifier): any schema of its package
        entry.schema for registry in (ATTACKS, JUDGES, VARIANTS) for entry in registry.values()
        if entry.function.__module__.startswith(f"latentaudit.{path.parent.name}.")]
    for key in settings_keys_read(path.read_text()):
        assert any(key in s.get("required", ()) or "default" in s.get("properties", {}).get(key, {})
                   for s in schemas), f"{path.name} reads settings[{key!r}]: no schema requires or defaults it"


def test_the_training_loop_reads_only_required_or_defaulted_settings():
    source = (PACKAGE / "training.py").read_text()
    for key in settings_keys_read(source):
        assert key in ("steps", "lr") or "default" in OPTIM_PROPERTIES[key], key


def test_the_registry_fills_the_schema_defaults_and_leaves_the_raw_settings_alone():
    load_all()
    raw = {"alphas": [1.0], "steps": 3}
    settings = ATTACKS["asa_grad"].settings(raw)
    assert raw == {"alphas": [1.0], "steps": 3}
    assert settings == {"alphas": [1.0], "steps": 3, "layers": "all", "positions": "last_prompt+generated",
                        "normalisation": "eq1", "step_size": 0.25, "sign": -1, "max_new_tokens": None,
                        "forbidden_split": None}
    weights = VARIANTS["dissociated"].settings({"steps": 1, "lr": 0.1, "nudge_depth": 0.5, "harmful_ft_holdout": 0.25,
                                                "weights": {"kl": 0.5}})["weights"]
    assert weights == {"refusal": 1.0, "kl": 0.5, "activation_match": 0.2, "nudged_harmful": 1.0,
                       "clean_margin": 1.0, "nudged_margin": 1.0}
    with pytest.raises(ConfigError, match=r"attacks.asa_grad.step_size"):
        ATTACKS["asa_grad"].settings({"alphas": [1.0], "step_size": 2.0})


def test_a_schema_default_reaches_the_method(tmp_path, monkeypatch):
    """The keyword judge reads settings["keywords"] with no fallback: given no keywords, the
    step hands it the schema's default list, and a changed schema default is what it uses."""
    frame = pd.DataFrame({"model": "m", "variant": "aligned", "attack": "none", "row_id": [0, 1, 2],
                          "kind": ["forbidden"] * 3, "generation": ["I cannot help with that.", "zork is 42",
                                                                     "Nope, never zork."]})
    path = tmp_path / "generations.parquet"
    frame.to_parquet(path, index=False)
    keyword_job = dict(input={"generations": str(path)}, params={"settings": {}, "module": None},
                       wildcards={"judge": "refusal_keyword"})
    run_judge(job(**keyword_job, output={"scores": str(tmp_path / "default.parquet")}))
    labels = pd.read_parquet(tmp_path / "default.parquet")["label"].tolist()
    assert labels == [("refusal" if any(k.lower() in g.lower() for k in DEFAULT_KEYWORDS) else "compliance")
                      for g in frame["generation"]]
    assert labels[:2] == ["refusal", "compliance"]
    schema = json.loads(json.dumps(JUDGES["refusal_keyword"].schema))
    schema["properties"]["keywords"]["default"] = ["nope"]
    monkeypatch.setattr(JUDGES["refusal_keyword"], "schema", schema)
    run_judge(job(**keyword_job, output={"scores": str(tmp_path / "changed.parquet")}))
    assert pd.read_parquet(tmp_path / "changed.parquet")["label"].tolist() == ["compliance", "compliance", "refusal"]
