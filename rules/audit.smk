# `snakemake audit --config audit_model=<hub id or local path> [audit_adapter=...] [audit_name=...]`:
# the audited model (added to `models` in common.smk) and its reference, attacked and judged by the
# ordinary rules, summarised in results/audit/<name>/card.md with its figures. Or
# `--config audit_variant=<model>/<variant>`: a variant the experiment builds, from its own results.
rule audit:
    localrule: True
    input:
        audit_targets,


if AUDIT_NAME:

    rule audit_metrics:
        localrule: True
        input:
            script="workflow_scripts/metrics.py",
            code=code_inputs("workflow_scripts/metrics.py"),
            generations=audit_generations,
            scores=audit_scores,
            capability=[],
            dissociated=[],  # the card reads no construction's checkpoints (rule metrics writes them)
        output:
            **{name: f"results/audit/{AUDIT_NAME}/metrics/{name}.csv" for name in METRICS},
        params:
            # LVS ASR from the judge the card reports
            **dict(METRICS_PARAMS, primary_judge=audit_judge()),
            dissociated_models=[],
        conda:
            "../envs/latentaudit.yaml"
        log:
            f"logs/audit/{AUDIT_NAME}/metrics.log",
        script:
            "../workflow_scripts/metrics.py"

    rule audit_card:
        localrule: True
        input:
            script="workflow_scripts/audit_card.py",
            code=code_inputs("workflow_scripts/audit_card.py"),
            behavior=f"results/audit/{AUDIT_NAME}/metrics/behavior.csv",
            attacks=f"results/audit/{AUDIT_NAME}/metrics/attacks.csv",
            attack_summary=f"results/audit/{AUDIT_NAME}/metrics/attack_summary.csv",
            # the LVS layer profile, once the metrics step writes lvs.csv (the results contract)
            lvs=[f"results/audit/{AUDIT_NAME}/metrics/lvs.csv"] if "lvs" in METRICS else [],
        output:
            card=report(f"results/audit/{AUDIT_NAME}/card.md", caption="../captions/audit_card.rst", category="Audit"),
            figures=list(audit_figure_paths(AUDIT_NAME).values()),
        params:
            name=AUDIT_NAME,
            subject=audit_subject(config),
            reference=config["audit_reference"],
            spec=config["models"][audit_subject(config)[0]],
            judge=audit_judge(),
            tolerance=config["audit_tolerance"],
            latent_attacks=latent_attacks(config["attacks"]),  # whose MASR the verdict reads
            audit_gap=config["report"]["audit_gap"],  # and the audit gap's reference points
            nudge_depth=config["nudge_depth"],
            figures=audit_figure_paths(AUDIT_NAME),
        conda:
            "../envs/latentaudit.yaml"
        log:
            f"logs/audit/{AUDIT_NAME}/card.log",
        script:
            "../workflow_scripts/audit_card.py"
