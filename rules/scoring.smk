# Judging reads stored generations and never regenerates. Rule judges run on the submit node
# (localrules); judges that run a model (registered with gpu=True) are GPU jobs.
rule judge:
    wildcard_constraints:
        judge=judge_names_pattern(gpu=False),
    input:
        script="workflow_scripts/judge.py",
        code=method_code_inputs("workflow_scripts/judge.py", JUDGES, "judge"),
        generations="results/attacks/{model}/{variant}/{attack}/generations.parquet",
    output:
        scores="results/scores/{model}/{variant}/{attack}/{judge}.parquet",
    params:
        settings=judge_settings,
        module=lambda w: method_module(JUDGES, w.judge),
    priority: feeds_a_build
    conda:
        "../envs/latentaudit.yaml"
    log:
        "logs/scores/{model}/{variant}/{attack}/{judge}.log",
    script:
        "../workflow_scripts/judge.py"


rule model_judge:
    wildcard_constraints:
        judge=judge_names_pattern(gpu=True),
    input:
        script="workflow_scripts/judge.py",
        code=method_code_inputs("workflow_scripts/judge.py", JUDGES, "judge"),
        generations="results/attacks/{model}/{variant}/{attack}/generations.parquet",
    output:
        scores="results/scores/{model}/{variant}/{attack}/{judge}.parquet",
    params:
        settings=judge_settings,
        module=lambda w: method_module(JUDGES, w.judge),
    threads: config["threads"]
    conda:
        "../envs/latentaudit.yaml"
    log:
        "logs/scores/{model}/{variant}/{attack}/{judge}.log",
    resources:
        gpu=1,
        runtime=60,
        mem_mb=32000,
    script:
        "../workflow_scripts/judge.py"


rule metrics:
    input:
        script="workflow_scripts/metrics.py",
        code=code_inputs("workflow_scripts/metrics.py"),
        generations=generation_outputs(),
        scores=score_outputs(),
        capability=capability_outputs(),
        dissociated=expand("results/models/{model}/dissociated", model=DISSOCIATED_MODELS),
    output:
        **METRICS,
        **DISSOCIATED_SELECTION,
    params:
        **METRICS_PARAMS,
        dissociated_models=DISSOCIATED_MODELS,
    conda:
        "../envs/latentaudit.yaml"
    log:
        "logs/metrics.log",
    script:
        "../workflow_scripts/metrics.py"
