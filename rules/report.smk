rule tables:
    input:
        script="workflow_scripts/tables.py",
        code=code_inputs("workflow_scripts/tables.py"),
        summary=METRICS["attack_summary"],
        behavior=METRICS["behavior"],
        defenses=METRICS["defenses"],
    output:
        defenses_md="results/tables/defenses.md",
        defenses_tex="results/tables/defenses.tex",
        summary_md="results/tables/attack_summary.md",
        summary_tex="results/tables/attack_summary.tex",
        behavior_md="results/tables/behavior.md",
        behavior_tex="results/tables/behavior.tex",
    params:
        judge=config["report"]["primary_judge"],
    conda:
        "../envs/latentaudit.yaml"
    log:
        "logs/report/tables.log",
    script:
        "../workflow_scripts/tables.py"


rule figures:
    input:
        script="workflow_scripts/figures.py",
        code=code_inputs("workflow_scripts/figures.py"),
        attacks=METRICS["attacks"],
        summary=METRICS["attack_summary"],
        nll=METRICS["nll_probe"],
        defenses=METRICS["defenses"],
    output:
        pareto=report(expand("results/figures/defense_pareto.{ext}", ext=config["report"]["formats"]),
                      caption="../captions/defense_pareto.rst", category="Defenses"),
        lasr=report(expand("results/figures/lasr_vs_layer.{ext}", ext=config["report"]["formats"]),
                    caption="../captions/lasr_vs_layer.rst", category="ASA"),
        masr=report(expand("results/figures/masr_vs_strength.{ext}", ext=config["report"]["formats"]),
                    caption="../captions/masr_vs_strength.rst", category="ASA"),
        nll=report(expand("results/figures/nll_probe.{ext}", ext=config["report"]["formats"]),
                   caption="../captions/nll_probe.rst", category="ASA"),
    threads: 4  # one process per figure, scaled down to --cores
    params:
        judge=config["report"]["primary_judge"],
        style=config["report"]["style"],
        dpi=config["report"]["dpi"],
    conda:
        "../envs/latentaudit.yaml"
    log:
        "logs/report/figures.log",
    script:
        "../workflow_scripts/figures.py"
