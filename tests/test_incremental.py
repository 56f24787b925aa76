"""Incremental reruns after config edits, by the dry-run job lists of a completed smoke run."""
import re

import pytest
import yaml

from conftest import dry_run_jobs, snakemake


def _edited(smoke_run, tmp_path, edit):
    config = yaml.safe_load((smoke_run / "configs/smoke.yaml").read_text())
    edit(config)
    path = tmp_path / "edited.yaml"
    path.write_text(yaml.safe_dump(config))
    return str(path)


@pytest.mark.slow
def test_touching_nothing_reruns_nothing(smoke_run):
    assert dry_run_jobs(smoke_run, "--configfile", "configs/smoke.yaml") == {}


@pytest.mark.slow
def _variants(smoke_run):
    return yaml.safe_load((smoke_run / "configs/smoke.yaml").read_text())["models"]["organism"]["variants"]


@pytest.mark.slow
def test_editing_an_attack_grid_reruns_that_attack_its_judging_and_the_report(smoke_run, tmp_path):
    config = _edited(smoke_run, tmp_path, lambda c: c["attacks"]["asa_grad"].update(alphas=[0.25, 2.0]))
    jobs = dry_run_jobs(smoke_run, "--configfile", config)
    n = len(_variants(smoke_run))  # the attack reruns on every variant, nothing is retrained
    assert jobs == {"attack": n, "judge": 2 * n, "metrics": 1, "tables": 1, "figures": 1, "audit_gap_report": 1,
                    "all": 1}
    result = snakemake(smoke_run, "-n", "--configfile", config)
    assert "attack=asa_grad" in result.stdout and "attack=asa_random" not in result.stdout


@pytest.mark.slow
def test_editing_the_sweep_lapt_reads_rebuilds_lapt(smoke_run, tmp_path):
    """LAPT picks its layers from the aligned model's ASA_random sweep: a new sweep retrains it
    (and re-attacks it), and leaves the other defense alone."""
    config = _edited(smoke_run, tmp_path, lambda c: c["attacks"]["asa_random"].update(alphas=[1.0, 2.0]))
    result = snakemake(smoke_run, "-n", "--configfile", config)
    builds = re.findall(r"rule build_variant:\n(?:    .*\n)*?    wildcards: model=organism, variant=(\w+)", result.stdout)
    assert builds == ["lapt"], result.stdout[-2000:]
    jobs = dry_run_jobs(smoke_run, "--configfile", config)
    n_attacks = len(yaml.safe_load((smoke_run / "configs/smoke.yaml").read_text())["attacks"])
    assert jobs["build_variant"] == 1 and jobs["attack"] == len(_variants(smoke_run)) - 1 + n_attacks


@pytest.mark.slow
def test_editing_a_judge_rejudges_without_regenerating(smoke_run, tmp_path):
    config = _edited(smoke_run, tmp_path, lambda c: c["judges"].update(refusal_keyword={"keywords": ["sorry"]}))
    jobs = dry_run_jobs(smoke_run, "--configfile", config)
    n_attacks = len(yaml.safe_load((smoke_run / "configs/smoke.yaml").read_text())["attacks"])
    assert jobs == {"judge": n_attacks * len(_variants(smoke_run)), "metrics": 1, "tables": 1, "figures": 1,
                    "audit_gap_report": 1, "all": 1}


@pytest.mark.slow
def test_editing_plot_style_reruns_only_plots(smoke_run, tmp_path):
    config = _edited(smoke_run, tmp_path, lambda c: c.setdefault("report", {}).update(style="ggplot"))
    assert dry_run_jobs(smoke_run, "--configfile", config) == {"figures": 1, "audit_gap_report": 1, "all": 1}


@pytest.mark.slow
def test_dropping_a_variant_reruns_only_the_aggregates(smoke_run, tmp_path):
    # a job's `spec` param is how the model loads, not the model's variant list: no attack, judge or
    # build reruns when a variant leaves the list, only what aggregates over the variants
    config = _edited(smoke_run, tmp_path, lambda c: c["models"]["organism"]["variants"].remove("lapt"))
    jobs = dry_run_jobs(smoke_run, "--configfile", config)
    assert set(jobs) <= {"metrics", "tables", "figures", "audit_gap_report", "all"}, jobs


@pytest.mark.slow
def test_narrowing_a_variants_attacks_reruns_only_the_aggregates(smoke_run, tmp_path):
    # models.<name>.variant_attacks: the attacks left out are no longer targets (nothing is regenerated,
    # no job's params change), so only what aggregates over the generations reruns
    config = _edited(smoke_run, tmp_path, lambda c: c["models"]["organism"].update(variant_attacks={"lat": ["asa_grad"]}))
    jobs = dry_run_jobs(smoke_run, "--configfile", config)
    assert set(jobs) <= {"metrics", "tables", "figures", "audit_gap_report", "all"} and "metrics" in jobs, jobs


@pytest.mark.slow
def test_narrowing_a_judges_attacks_reruns_only_the_aggregates(smoke_run, tmp_path):
    # judges.<name>.attacks says which generations a judge scores, not how: no judge job reruns, the
    # score files of the attacks left out are no longer read
    config = _edited(smoke_run, tmp_path, lambda c: c["judges"].update(refusal_keyword={"attacks": ["none"]}))
    jobs = dry_run_jobs(smoke_run, "--configfile", config)
    assert set(jobs) <= {"metrics", "tables", "figures", "audit_gap_report", "all"} and "metrics" in jobs, jobs
    listed = snakemake(smoke_run, "--list-input-changes", "--configfile", config).stdout
    assert "results/metrics/attacks.csv" in listed
