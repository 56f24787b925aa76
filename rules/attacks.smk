# One job per (model, variant, attack): the model is loaded once and the whole sweep runs in it.
rule attack:
    input:
        unpack(attack_extra_inputs),
        script="workflow_scripts/attack.py",
        code=method_code_inputs("workflow_scripts/attack.py", ATTACKS, "attack"),
        model=model_path_input,
        eval=eval_input,
    output:
        generations="results/attacks/{model}/{variant}/{attack}/generations.parquet",
    params:
        settings=attack_settings,
        module=lambda w: method_module(ATTACKS, w.attack),
        spec=model_spec,
        load=model_load_params,
        aligned=aligned_spec,
        generation=config["generation"],
        seed=config["seed"],
        device=config["device"],
    threads: config["threads"]
    priority: feeds_a_build
    conda:
        "../envs/latentaudit.yaml"
    log:
        "logs/attacks/{model}/{variant}/{attack}.log",
    resources:
        gpu=1,
        runtime=120,
        mem_mb=16000,
    script:
        "../workflow_scripts/attack.py"
