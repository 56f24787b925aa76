# Optional capability benchmarks (lm-eval-harness) of every hub/path (model, variant); in the DAG
# only when the config sets `capability: {tasks: [...]}`. Install with `pip install -e .[lm_eval]`.
if "capability" in config:

    rule capability:
        input:
            script="workflow_scripts/capability.py",
            code=code_inputs("workflow_scripts/capability.py"),
            model=model_path_input,
        output:
            scores="results/capability/{model}/{variant}/scores.csv",
            raw=directory("results/capability/{model}/{variant}/lm_eval"),
        params:
            settings=config["capability"],
            spec=model_spec,
            load=model_load_params,
            device=config["device"],
        threads: config["threads"]
        conda:
            "../envs/latentaudit.yaml"
        log:
            "logs/capability/{model}/{variant}.log",
        resources:
            gpu=1,
            runtime=240,
            mem_mb=32000,
        script:
            "../workflow_scripts/capability.py"
