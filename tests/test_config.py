import copy

import pytest
import yaml

from latentaudit.config import attacks_of, validate_config
from latentaudit.schema import boolean_from_config
from conftest import REPO, config_error

DEFAULT = yaml.safe_load((REPO / "config.yaml").read_text())


def _bad(edit):
    return config_error(DEFAULT, edit)


def _with(edit):
    config = copy.deepcopy(DEFAULT)
    edit(config)
    return config


def test_shipped_configs_are_valid_and_defaults_are_filled():
    for path in [REPO / "config.yaml", *sorted((REPO / "configs").glob("*.yaml"))]:
        config = validate_config(yaml.safe_load(path.read_text()))
        assert config["attacks"]["asa_random"]["direction_sharing"] in {"per_prompt", "shared"}
        assert config["organism"]["pretrain"]["warmup_fraction"] == 0.05


def test_unknown_attack_lists_the_valid_ones():
    message = _bad(lambda c: c["attacks"].update(asa_magic={}))
    assert "attacks" in message and "asa_magic" in message and "'asa_grad', 'asa_random', 'harmful_ft', 'latent_pgd'" in message


def test_unknown_judge_lists_the_valid_ones():
    message = _bad(lambda c: c["judges"].update(oracle={}))
    assert "unknown judge name(s) ['oracle']" in message and "structural" in message


def test_out_of_range_alpha_names_the_key():
    message = _bad(lambda c: c["attacks"]["asa_grad"].update(alphas=[0.5, -1]))
    assert "attacks.asa_grad.alphas[1]" in message and "-1" in message


def test_bad_enum_lists_choices():
    message = _bad(lambda c: c["attacks"]["asa_random"].update(direction_sharing="sometimes"))
    assert "attacks.asa_random.direction_sharing" in message and "per_prompt" in message


def test_misspelled_key_lists_valid_keys():
    message = _bad(lambda c: c["attacks"]["asa_grad"].update(stpes=5))
    assert "stpes" in message and "valid keys" in message and "steps" in message


def test_bad_positions_and_device():
    assert "positions" in _bad(lambda c: c["attacks"]["asa_grad"].update(positions="middle"))
    assert "device" in _bad(lambda c: c.update(device="tpu"))


def test_a_boolean_given_as_text_is_read_as_one():
    # what `snakemake --config pin_cpu_kernels=false` passes: the text "false"
    assert validate_config(_with(lambda c: c.update(pin_cpu_kernels="false")))["pin_cpu_kernels"] is False
    assert validate_config(_with(lambda c: c.update(pin_cpu_kernels="True")))["pin_cpu_kernels"] is True
    assert _bad(lambda c: c.update(pin_cpu_kernels="no")) == (
        "config error at pin_cpu_kernels: 'no' is not of type 'boolean'")
    # the Snakefile reads this key before validation (it pins before the catalog loads torch), the same way
    assert [boolean_from_config(v, True) for v in (False, "false", "False", " FALSE ")] == [False] * 4
    assert [boolean_from_config(v, True) for v in (True, "true", None, "no")] == [True] * 4
    assert boolean_from_config(None, False) is False


def test_numbers_that_snakemake_passes_as_text_are_read_as_numbers():
    """snakemake's --config reads a value's nested scalars as text: `--config 'organism={world:
    {status_facts: 24}}'` gives "24", which the schema wants as an integer."""
    from snakemake.cli import parse_config
    from snakemake.utils import update_config

    overrides = parse_config(["organism={world: {status_facts: 24}}",
                              "attacks={asa_grad: {alphas: [0.25, 1e-1], layers: [1, 2], steps: 3}}"])
    assert overrides["organism"]["world"]["status_facts"] == "24"  # what snakemake hands over
    config = copy.deepcopy(DEFAULT)
    update_config(config, overrides)
    validated = validate_config(config)
    assert validated["organism"]["world"]["status_facts"] == 24
    assert validated["attacks"]["asa_grad"]["alphas"] == [0.25, 0.1]
    assert validated["attacks"]["asa_grad"]["layers"] == [1, 2]  # a layer spec: "all", a list or an int
    assert validated["attacks"]["asa_grad"]["steps"] == 3
    # the same settings from a file: equal configs, so equal job params (nothing reruns)
    from_file = _with(lambda c: c["organism"]["world"].update(status_facts=24))
    from_file["attacks"]["asa_grad"].update(alphas=[0.25, 0.1], layers=[1, 2], steps=3)
    assert validate_config(from_file) == validated
    # text that is not a number of the wanted type is still an error
    assert _bad(lambda c: c["organism"]["world"].update(status_facts="24.5")) == (
        "config error at organism.world.status_facts: '24.5' is not of type 'integer'")
    assert "not a finite number" in _bad(lambda c: c["attacks"]["asa_grad"].update(alphas=["nan"]))
    # null where the schema allows it (RepBend's distance cap)
    capped = parse_config(["variants={repbend: {unsafe_distance_cap: null}}"])
    config = copy.deepcopy(DEFAULT)
    update_config(config, capped)
    assert capped["variants"]["repbend"]["unsafe_distance_cap"] == "null"
    assert validate_config(config)["variants"]["repbend"]["unsafe_distance_cap"] is None


def test_primary_judge_must_be_configured():
    message = _bad(lambda c: c["report"].update(primary_judge="refusal_keyword") or c["judges"].pop("refusal_keyword"))
    assert "report.primary_judge" in message


def test_a_judges_attacks_are_configured_attacks_and_the_primary_judge_judges_them_all():
    message = _bad(lambda c: c["judges"].update(refusal_keyword={"attacks": ["none", "asa_grd"]}))
    assert "judges.refusal_keyword.attacks" in message and "['asa_grd']" in message and "'asa_grad'" in message
    primary = DEFAULT["report"]["primary_judge"]
    assert f"judges.{primary}.attacks: the primary judge" in _bad(
        lambda c: c["judges"][primary].update(attacks=["none"]))
    assert validate_config(_with(lambda c: c["judges"].update(refusal_keyword={"attacks": ["harmful_ft"]})))[
        "judges"]["refusal_keyword"]["attacks"] == ["harmful_ft"]


def test_harmful_ft_judge_is_a_configured_judge_of_harmful_ft():
    def named(judge, attacks=None):
        def edit(c):
            c["report"].setdefault("audit_gap", {})["harmful_ft_judge"] = judge
            if attacks:
                c["judges"]["refusal_keyword"] = {"attacks": attacks}
        return edit
    assert "'harmbench_val' is not a configured judge" in _bad(named("harmbench_val"))
    assert "'refusal_keyword' does not judge harmful_ft" in _bad(named("refusal_keyword", ["none"]))
    config = validate_config(_with(named("refusal_keyword", ["harmful_ft"])))
    assert config["report"]["audit_gap"]["harmful_ft_judge"] == "refusal_keyword"


def test_plain_generation_is_required():
    assert "'none'" in _bad(lambda c: c["attacks"].pop("none"))


def test_organism_variants_are_checked():
    message = _bad(lambda c: c["models"]["organism"].update(variants=["aligned", "repbnd"]))
    assert "models.organism.variants" in message and "['repbnd']" in message and "'repbend'" in message


def test_listed_variant_needs_its_settings():
    def drop(config):
        config["variants"].pop("lat")
    message = _bad(drop)
    assert "['lat']" in message and "configure a registered variant" in message


def test_unknown_variant_and_variant_settings():
    assert "unknown variant name(s) ['repbnd']" in _bad(lambda c: c["variants"].update(repbnd={}))
    message = _bad(lambda c: c["variants"]["repbend"].update(alpah=0.5))
    assert "variants.repbend" in message and "alpah" in message


def test_variant_attacks_choose_a_variants_attacks_with_none_always():
    config = validate_config(_with(lambda c: c["models"]["organism"].update(
        variant_attacks={"harmful": [], "lat": ["latent_pgd", "asa_grad"]})))
    assert attacks_of(config, "organism", "harmful") == ["none"]
    assert attacks_of(config, "organism", "lat") == ["asa_grad", "latent_pgd", "none"]  # the validated config's order
    assert attacks_of(config, "organism", "aligned") == list(config["attacks"])
    message = _bad(lambda c: c["models"]["organism"].update(variant_attacks={"lat": ["asa_grd"]}))
    assert "models.organism.variant_attacks.lat: ['asa_grd'] are not configured attacks" in message
    assert "'asa_grad'" in message
    message = _bad(lambda c: c["models"]["organism"].update(variant_attacks={"harmfull": ["none"]}))
    assert "models.organism.variant_attacks: 'harmfull' is not a variant" in message and "'harmful'" in message


def test_lapt_fragile_layers_need_the_attack():
    message = _bad(lambda c: c["variants"]["lapt"].update(fragile_from="asa_magic"))
    assert "variants.lapt.fragile_from" in message and "'asa_random'" in message


def test_hub_model_may_list_built_variants():
    def add(config):
        config["models"]["hub"] = {"source": "org/model", "variants": ["aligned", "repbend"]}
    validate_config(_with(add))


def test_the_harmful_pole_is_required_only_of_the_models_that_build_and_use_it():
    smollm2 = yaml.safe_load((REPO / "configs" / "smollm2.yaml").read_text())
    validate_config(copy.deepcopy(smollm2))  # its pole is the base as shipped: no `harmful` variant configured

    def add_hub(variants, direction="harmful_pole"):  # a model beside it, as `audit_model=` adds one
        def edit(config):
            config["models"]["hub"] = {"source": "org/model", "variants": variants}
            config["attacks"]["steering"]["direction"] = direction
        return edit
    message = config_error(smollm2, add_hub(["aligned"]))
    assert "attacks.steering.direction: 'harmful_pole' on the model(s) ['hub'] (harmful_pole: built)" in message
    message = config_error(smollm2, add_hub(["aligned", "dissociated"]))
    assert "variants.dissociated: it is built from the variant(s) ['harmful']" in message and "['hub']" in message
    config = copy.deepcopy(smollm2)
    add_hub(["aligned"], "prompt_contrast")(config)
    validate_config(config)  # steering along the prompt contrast needs no pole


def test_an_audited_model_without_a_pole_is_told_the_override_that_audits_it():
    from latentaudit.audit_config import add_audited_model

    smollm2 = yaml.safe_load((REPO / "configs" / "smollm2.yaml").read_text())
    audit = add_audited_model({**smollm2, "audit_model": "org/candidate"})
    message = config_error(audit, lambda config: None)
    assert "for the model audit_model= added, 'candidate': --config 'attacks={steering: {direction: " \
           "prompt_contrast}}'" in message and "audit_variant=<model>/<variant>" in message
    audit["attacks"]["steering"]["direction"] = "prompt_contrast"  # what the override does (Snakemake merges dicts)
    validate_config(audit)

    def add_hub(config):  # a configured model, not an audited one: no audit hint
        config["models"]["hub"] = {"source": "org/model", "variants": ["aligned"]}
    assert "audit_model= added" not in config_error(smollm2, add_hub)


def test_negative_training_steps():
    assert "organism.pretrain.steps" in _bad(lambda c: c["organism"]["pretrain"].update(steps=0))


# Every numeric setting, wherever it sits: an attack's list element, a defense's optimiser, a judge,
# the top level, a per-model override. JSON Schema's `minimum` lets NaN through on its own.
NON_FINITE_EDITS = {
    "attacks.asa_grad.alphas[1]": lambda c, v: c["attacks"]["asa_grad"]["alphas"].__setitem__(1, v),
    "attacks.latent_pgd.budgets[0]": lambda c, v: c["attacks"]["latent_pgd"].update(budgets=[v, 0.5]),
    "variants.lat.lr": lambda c, v: c["variants"]["lat"].update(lr=v),
    "variants.lapt.capability_tolerance": lambda c, v: c["variants"]["lapt"].update(capability_tolerance=v),
    "judges.structural.max_repeat": lambda c, v: c["judges"]["structural"].update(max_repeat=v),
    "generation.temperature": lambda c, v: c["generation"].update(temperature=v),
    "models.organism.variant_settings.lat.epsilon":
        lambda c, v: c["models"]["organism"].update(variant_settings={"lat": {"epsilon": v}}),
}


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")], ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize("key", sorted(NON_FINITE_EDITS))
def test_non_finite_number_names_the_key(key, value):
    message = _bad(lambda c: NON_FINITE_EDITS[key](c, value))
    assert message == f"config error at {key}: {value} is not a finite number"


def test_yaml_nan_and_infinities_are_rejected_together():
    settings = yaml.safe_load("{capability_tolerance: .nan, alpha: .inf, lambda_grid: [0.1, -.inf]}")
    message = _bad(lambda c: c["variants"]["lapt"].update(settings))
    assert "variants.lapt.capability_tolerance: nan is not a finite number" in message
    assert "variants.lapt.alpha: inf is not a finite number" in message
    assert "variants.lapt.lambda_grid[1]: -inf is not a finite number" in message


def test_a_tolerance_on_a_rate_cannot_exceed_one():
    message = _bad(lambda c: c["variants"]["lapt"].update(capability_tolerance=1e12))
    assert message.startswith("config error at variants.lapt.capability_tolerance: 1000000000000.0 is greater than")


def test_lapt_on_a_real_model_needs_a_held_out_selection_split():
    """LAPT's λ is chosen on capability: a hub model needs data.splits.select_benign (not eval_benign)."""
    from latentaudit.config import ConfigError
    paper = yaml.safe_load((REPO / "configs" / "paper.yaml").read_text())
    assert paper["data"]["splits"]["select_benign"]["role"] == "eval"
    validate_config(paper)
    del paper["data"]["splits"]["select_benign"]
    with pytest.raises(ConfigError, match="select_benign"):
        validate_config(paper)


def test_splits_a_variant_owns_are_checked_against_the_variants_and_its_control():
    """RepBend's own sets (configs/paper.yaml): owned by configured variants, its KL split one it trains on,
    and its refusal-SFT control owning the same (it must train on the data its defense trains on)."""
    from latentaudit.config import ConfigError
    paper = yaml.safe_load((REPO / "configs" / "paper.yaml").read_text())
    assert paper["variants"]["repbend"]["general_splits"] == ["repbend_general"]
    validate_config(paper)
    bad = copy.deepcopy(paper)
    bad["data"]["splits"]["repbend_general"]["variants"] = ["repbend", "refusal_sft", "repbend2"]
    with pytest.raises(ConfigError, match=r"data.splits.repbend_general.variants: \['repbend2'\] are not configured "
                                          r"variants; valid: \["):
        validate_config(bad)
    bad = copy.deepcopy(paper)
    bad["variants"]["repbend"]["general_splits"] = ["train_benign"]
    with pytest.raises(ConfigError, match=r"variants.repbend.general_splits: \['train_benign'\] are not train splits "
                                          r"'repbend' trains on; valid: \['repbend_general', 'repbend_pairs', "):
        validate_config(bad)
    bad = copy.deepcopy(paper)
    bad["data"]["splits"]["repbend_pairs"]["variants"] = ["repbend"]
    with pytest.raises(ConfigError, match=r"variants.refusal_sft: .*differs in \[\"own splits: \['repbend_general', "
                                          r"'repbend_wildguard_safe', 'repbend_wildguard_unsafe'\] != \['repbend_general', 'repbend_pairs', "):
        validate_config(bad)


def test_an_attacks_own_forbidden_split_is_a_harmful_eval_split():
    from latentaudit.config import ConfigError
    paper = yaml.safe_load((REPO / "configs" / "paper.yaml").read_text())
    assert paper["attacks"]["asa_random"]["forbidden_split"] == "eval_advbench"
    assert paper["data"]["splits"]["eval_advbench"] == {"role": "eval", "datasets": ["advbench"], "n": 100,
                                                        "sample": "first"}
    validate_config(paper)
    paper["attacks"]["asa_random"]["forbidden_split"] = "eval_benign"
    with pytest.raises(ConfigError, match=r"attacks.asa_random.forbidden_split: 'eval_benign' is not an eval split of "
                                          r"harmful requests under data.splits; valid: \['eval_advbench', "):
        validate_config(paper)
    message = _bad(lambda c: c["attacks"]["asa_random"].update(forbidden_split="eval_advbench"))
    assert "attacks.asa_random.forbidden_split: the organism is attacked on its own eval_forbidden" in message


def test_a_system_turn_needs_a_chat_template_that_has_one_and_the_control_shares_it():
    """Targeted LAT trains under its notebook's system turn (configs/paper.yaml); its matched control must
    train under the same one, the generation's chat template must be on, and the organism has no system turn."""
    from latentaudit.config import ConfigError
    paper = yaml.safe_load((REPO / "configs" / "paper.yaml").read_text())
    assert paper["variants"]["lat"]["system_prompt"] == paper["variants"]["refusal_sft_lat"]["system_prompt"]
    assert paper["variants"]["lat"]["system_prompt"].startswith("You are a helpful, respectful and honest assistant.")
    bad = copy.deepcopy(paper)
    bad["variants"]["refusal_sft_lat"]["system_prompt"] = None
    with pytest.raises(ConfigError, match=r"variants.refusal_sft_lat: models.llama3_8b_instruct's control must train "
                                          r"like 'lat' .*differs in \[\"system_prompt: None != 'You are a helpful, respectful an'\.\.\. "
                                          r"\(507 characters\)\"\]"):
        validate_config(bad)
    bad = copy.deepcopy(paper)
    bad["generation"]["chat_template"] = False
    with pytest.raises(ConfigError, match=r"models.llama3_8b_instruct: variant 'lat'.s system_prompt needs the chat "
                                          r"template \(generation.chat_template: true\)"):
        validate_config(bad)
    message = _bad(lambda c: c["variants"]["lat"].update(system_prompt="be safe"))
    assert "variant 'lat''s system_prompt: the organism's chat template has no system turn" in message
