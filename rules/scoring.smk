# Judging reads stored generations and never regenerates.
rule judge:
    input:
        script="workflow_scripts/judge.py",
        code=judge_code,
        generations="results/attacks/{model}/{variant}/{attack}/generations.parquet",
    output:
        "results/scores/{model}/{variant}/{attack}/{judge}.parquet",
    params:
        settings=judge_settings,
    conda:
        "../envs/latentaudit.yaml"
    log:
        "logs/scores/{model}/{variant}/{attack}/{judge}.log",
    script:
        "../workflow_scripts/judge.py"


rule metrics:
    input:
        script="workflow_scripts/metrics.py",
        code=code("metrics.py", "io.py", "steps/scoring.py"),
        generations=generation_outputs(),
        scores=score_outputs(),
    output:
        **METRICS,
    conda:
        "../envs/latentaudit.yaml"
    log:
        "logs/metrics.log",
    script:
        "../workflow_scripts/metrics.py"
