# Variants trained on top of a model's aligned weights (the defenses). One job per (model, variant).
rule build_variant:
    input:
        unpack(fragile_inputs),
        unpack(required_variant_inputs),
        unpack(benign_input),
        unpack(checkpoint_split_inputs),
        script="workflow_scripts/build_variant.py",
        code=method_code_inputs("workflow_scripts/build_variant.py", VARIANTS, "variant"),
        base=lambda w: model_inputs(w.model, "aligned"),
        records=variant_records,
    output:
        model=directory("results/models/{model}/{variant}"),
    wildcard_constraints:
        variant=BUILT_VARIANTS,
    params:
        module=lambda w: method_module(VARIANTS, w.variant),
        settings=variant_settings,
        judges=variant_judges,
        spec=model_spec,
        base=lambda w: base_path(w.model),
        generation=config["generation"],
        seed=config["seed"],
        device=config["device"],
    threads: config["threads"]
    priority: 1  # its attacks wait on it: builds start before ready attacks
    conda:
        "../envs/latentaudit.yaml"
    log:
        "logs/variants/{model}/{variant}.log",
    resources:
        gpu=1,
        runtime=240,
        mem_mb=lambda w: 16000 if is_organism(w.model) else 128000,  # a full fine-tune of a 7-8B model
    script:
        "../workflow_scripts/build_variant.py"
