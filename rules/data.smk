rule organism_data:
    input:
        script="workflow_scripts/organism_data.py",
        code=code("organism/world.py", "organism/data.py", "organism/tokenizer.py", "io.py", "steps/organism.py"),
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
