# The audit-gap report (LVS paper): behaviour vs latent vulnerability per variant.
rule audit_gap_report:
    input:
        script="workflow_scripts/audit_gap_report.py",
        code=code_inputs("workflow_scripts/audit_gap_report.py"),
        behavior=METRICS["behavior"],
        attacks=METRICS["attacks"],
        lvs=METRICS["lvs"],
        harmful_ft=METRICS["harmful_ft"],
        **DISSOCIATED_SELECTION,
    output:
        table_csv="results/tables/audit_gap.csv",
        table_md="results/tables/audit_gap.md",
        table_tex="results/tables/audit_gap.tex",
        lvs_profile=report(expand("results/figures/lvs_layer_profile.{ext}", ext=config["report"]["formats"]),
                           caption="../captions/lvs_layer_profile.rst", category="Audit gap"),
        steering=report(expand("results/figures/steering_vs_fraction.{ext}", ext=config["report"]["formats"]),
                        caption="../captions/steering_vs_fraction.rst", category="Audit gap"),
        dumbbell=report(expand("results/figures/audit_gap_dumbbell.{ext}", ext=config["report"]["formats"]),
                        caption="../captions/audit_gap_dumbbell.rst", category="Audit gap"),
        # the harmful fine-tuning attack's compliance curves, when it is configured
        **({"harmful_ft": report(expand("results/figures/harmful_ft_compliance.{ext}", ext=config["report"]["formats"]),
                                 caption="../captions/harmful_ft_compliance.rst", category="Audit gap")}
           if "harmful_ft" in config["attacks"] else {}),
        # the dissociated construction's checkpoints (held-out slice, monitored eval split), when one is built
        **({"selection_md": "results/tables/dissociated_selection.md",
            "selection_tex": "results/tables/dissociated_selection.tex",
            "selection": report(expand("results/figures/dissociated_selection.{ext}", ext=config["report"]["formats"]),
                                caption="../captions/dissociated_selection.rst", category="Audit gap")}
           if DISSOCIATED_MODELS else {}),
    params:
        judge=config["report"]["primary_judge"],
        settings=config["report"]["audit_gap"],
        nudge_depth=config["nudge_depth"],
        style=config["report"]["style"],
        dpi=config["report"]["dpi"],
    conda:
        "../envs/latentaudit.yaml"
    log:
        "logs/report/audit_gap.log",
    script:
        "../workflow_scripts/audit_gap_report.py"
