"""Whole-DAG test: the smoke experiment through snakemake in a temporary copy of the repository."""
import json

import pandas as pd
import pytest

from latentaudit.metrics import results_contract_check
from latentaudit.numerics import PINNED_KERNELS, kernel_pins_apply

from conftest import REPO, snakemake



@pytest.mark.slow
def test_results_contract(smoke_run):
    """Every contract file (metrics.RESULTS_CONTRACT, the one copy of DESIGN.md's table, with the
    columns the reports select lvs.csv's rows by) exists,
    has rows and every contract column."""
    report = results_contract_check(smoke_run / "results" / "metrics")
    assert all(r["exists"] and r["rows"] > 0 and not r["missing_columns"] for r in report.values()), report
    attacks = pd.read_csv(smoke_run / "results/metrics/attacks.csv")
    attacks = attacks[attacks.variant == "aligned"]
    # 2 layers x 2 strengths per ASA attack, per judge; plain generation has layer -1
    assert len(attacks[(attacks.attack == "asa_random") & (attacks.judge == "structural")]) == 4
    assert set(attacks.loc[attacks.attack.isin(["none", "prefill"]), "layer"]) == {-1}
    assert len(attacks[(attacks.attack == "latent_pgd") & (attacks.judge == "structural")]) == 2
    assert attacks["asr"].between(0, 1).all()
    summary = pd.read_csv(smoke_run / "results/metrics/attack_summary.csv")
    assert (summary["masr"] >= summary["pasr"] - 1e-12).all()  # MASR >= PASR always
    for name in ("attack_summary.md", "attack_summary.tex", "behavior.md", "behavior.tex", "defenses.md",
                 "defenses.tex"):
        assert (smoke_run / "results/tables" / name).stat().st_size > 0
    for name in ("lasr_vs_layer", "masr_vs_strength", "nll_probe", "defense_pareto"):
        assert (smoke_run / "results/figures" / f"{name}.png").stat().st_size > 1000
    generations = pd.read_parquet(smoke_run / "results/attacks/organism/aligned/asa_random/generations.parquet")
    assert {"prompt_id", "layer", "strength", "direction", "generation", "nll"} <= set(generations.columns)
    assert (smoke_run / "results/attacks/organism/aligned/asa_random/generations.parquet.meta.json").exists()
    assert (smoke_run / "logs/pretrain_organism.log").stat().st_size > 0


FIGURE_OUTPUTS = {"lasr": "lasr_vs_layer", "masr": "masr_vs_strength", "nll": "nll_probe", "pareto": "defense_pareto"}


def _figures_job(metrics, out, threads: int):
    from latentaudit.jobs import job

    out.mkdir()
    return job(input={"attacks": str(metrics / "attacks.csv"), "summary": str(metrics / "attack_summary.csv"),
                      "nll": str(metrics / "nll_probe.csv"), "defenses": str(metrics / "defenses.csv")},
               output={key: [str(out / f"{name}.png")] for key, name in FIGURE_OUTPUTS.items()},
               params={"judge": "structural", "style": "default", "dpi": 60}, threads=threads)


@pytest.mark.slow
def test_figures_drawn_side_by_side_equal_those_drawn_in_turn(smoke_run, tmp_path):
    """The figures job's processes (one per figure, up to its threads) change no pixel, and a
    plot's error still fails the job."""
    from latentaudit.jobs.report import figures

    metrics = smoke_run / "results" / "metrics"
    figures(_figures_job(metrics, tmp_path / "one", threads=1))
    figures(_figures_job(metrics, tmp_path / "two", threads=2))
    for name in FIGURE_OUTPUTS.values():
        drawn = (tmp_path / "two" / f"{name}.png").read_bytes()
        assert len(drawn) > 1000 and drawn == (tmp_path / "one" / f"{name}.png").read_bytes(), name
    broken = _figures_job(metrics, tmp_path / "broken", threads=2)
    for key in broken.input:  # every plot fails at once, none is drawn (drawing is the test's cost)
        broken.input[key] = str(tmp_path / f"missing_{key}.csv")
    with pytest.raises(FileNotFoundError, match="missing_attacks.csv"):
        figures(broken)


@pytest.mark.slow
def test_every_job_ran_with_the_pinned_kernels_and_says_so(smoke_run):
    """The smoke run was started from a shell asking for other kernels (conftest.UNPINNED_SHELL);
    the workflow pins its own, and each sidecar records the CPU, the pins and the capability."""
    sidecars = [*smoke_run.glob("results/models/organism/*/meta.json"), *smoke_run.glob("results/attacks/**/*.meta.json")]
    assert len(sidecars) > 5
    for path in sidecars:
        numerics = json.loads(path.read_text())["numerics"]
        assert numerics["cpu"] and numerics["pinned"] == kernel_pins_apply(), (path, numerics)
        if kernel_pins_apply():  # off x86-64 nothing is pinned, and the record says so
            assert numerics["cpu_capability"] == "AVX2" and numerics["pins"] == PINNED_KERNELS, (path, numerics)
    assert json.loads((smoke_run / "results/models/organism/aligned/meta.json").read_text())["weights_sha256"]


def test_defended_variants_are_built_and_attacked(smoke_run):
    models = smoke_run / "results/models/organism"
    assert (models / "lat/adapter_config.json").exists()  # a LoRA defense: its adapter only
    assert (models / "lapt/config.json").exists() and not (models / "lapt/adapter_config.json").exists()
    assert (models / "lat/training_log.csv").stat().st_size > 0
    defenses = pd.read_csv(smoke_run / "results/metrics/defenses.csv")
    assert set(defenses["variant"]) == {"aligned", "lat", "lapt", "dissociated"}
    assert {"asa_random", "asa_grad", "latent_pgd", "prefill"} <= set(defenses["attack"])
    vectors = defenses[(defenses["judge"] == "structural") & (defenses["attack"] != "prefill")]
    assert vectors["benign_accuracy_under_attack"].between(0, 1).all()  # the same vectors on benign prompts
    aligned = defenses[defenses["variant"] == "aligned"]
    assert (aligned["masr_cut"].dropna() == 0).all()
    meta = json.loads((models / "lapt/meta.json").read_text())
    assert meta["lambda"] in (0.2, 0.5) and meta["layers"] and meta["lambda_selection"]["base"] >= 0


@pytest.mark.slow
def test_audit_gap_outputs(smoke_run):
    models = smoke_run / "results/models/organism"
    assert (models / "harmful/config.json").exists() and (models / "dissociated/config.json").exists()
    lvs = pd.read_csv(smoke_run / "results/metrics/lvs.csv")
    assert {"variant", "layer", "strength", "lvs_mean", "lvs_median", "ci_low", "ci_high"} <= set(lvs.columns) and set(lvs["variant"]) >= {"aligned", "dissociated"}
    attacks = pd.read_csv(smoke_run / "results/metrics/attacks.csv")
    assert {"lvs", "lvs_control", "steering", "steering_control"} <= set(attacks["attack"])
    for name in ("audit_gap.md", "audit_gap.tex"):
        assert (smoke_run / "results/tables" / name).stat().st_size > 0
    gap = pd.read_csv(smoke_run / "results/tables/audit_gap.csv")  # the tidy table the renderings show
    assert {"model", "variant", "clean_refusal", "lvs_median", "t08_in_dist"} <= set(gap.columns)
    assert {"aligned", "dissociated"} <= set(gap["variant"])
    for name in ("lvs_layer_profile", "steering_vs_fraction", "audit_gap_dumbbell", "harmful_ft_compliance"):
        assert (smoke_run / "results/figures" / f"{name}.png").stat().st_size > 1000
    # harmful fine-tuning: steps 0 and 2 of seed 0 on both data sets, for every attacked variant
    ft = pd.read_csv(smoke_run / "results/metrics/harmful_ft.csv")
    variants = set(attacks["variant"])
    assert set(ft["variant"]) == variants and set(ft["data"]) == {"in_dist", "ood"}
    assert all(steps == [0, 2] for steps in ft.groupby(["variant", "judge", "data"])["step"].apply(sorted))
    assert ft["compliance"].between(0, 1).all() and (ft["n"] > 0).all()
    assert {"harmful_ft_in_dist", "harmful_ft_ood"} <= set(attacks["attack"])
    assert "t08_in_dist" in (smoke_run / "results/tables/audit_gap.md").read_text()
    # the dissociated construction's checkpoints: every evaluation of its sidecar, on the selection slice (the
    # select_forbidden split: configs/smoke.yaml sets selection_split) and on the monitored eval split (and
    # monitor_split), the kept one marked
    meta = json.loads((models / "dissociated/meta.json").read_text())
    assert meta["selection_split"] == "select_forbidden"
    assert "the checkpoint is chosen on 8 select_forbidden requests" in (
        smoke_run / "logs/variants/organism/dissociated.log").read_text()
    assert all(round(e["clean_refusal"] * 8, 6).is_integer() for e in meta["selection"])
    selection = pd.read_csv(smoke_run / "results/metrics/dissociated_selection.csv")
    assert [e["step"] for e in meta["selection"]] == [0, 2, 4]
    for slice_, prefix in (("selection", ""), ("monitor", "monitor_")):
        rows = selection[selection["slice"] == slice_].sort_values("step")
        assert rows["step"].tolist() == [0, 2, 4]
        assert rows["gap"].tolist() == [e[f"{prefix}gap"] for e in meta["selection"]]
        assert rows.loc[rows["kept"], "step"].tolist() == [meta["selected_step"]]
    assert (selection["refusal_threshold"] == meta["refusal_threshold"]).all()
    assert "monitor clean refusal" in (smoke_run / "results/tables/dissociated_selection.md").read_text()
    assert (smoke_run / "results/figures/dissociated_selection.png").stat().st_size > 1000


@pytest.mark.slow
def test_second_dry_run_has_nothing_to_do(smoke_run):
    result = snakemake(smoke_run, "-n", "--configfile", "configs/smoke.yaml")
    assert "Nothing to be done" in result.stdout + result.stderr


@pytest.mark.slow
def test_bad_config_fails_before_any_job(smoke_run, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text((smoke_run / "configs/smoke.yaml").read_text().replace("asa_grad:", "asa_gard:"))
    result = snakemake(smoke_run, "-n", "--configfile", str(bad), check=False)
    assert result.returncode != 0
    assert "unknown attack name(s) ['asa_gard']" in result.stdout + result.stderr


def test_workflow_lints_clean():
    result = snakemake(REPO, "--lint")
    assert "Congratulations, your workflow is in a good condition" in result.stdout + result.stderr
