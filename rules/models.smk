rule pretrain_organism:
    input:
        script="workflow_scripts/pretrain_organism.py",
        code=code_inputs("workflow_scripts/pretrain_organism.py"),
        tokenizer="results/models/organism/tokenizer",
        records=organism_split("pretrain"),
    output:
        model=directory("results/models/organism/pretrained"),
    params:
        model=config["organism"]["model"],
        train=config["organism"]["pretrain"],
        seed=config["seed"],
        device=config["device"],
        checkpoint="results/checkpoints/organism/pretrained.pt",
    threads: config["organism"]["threads"] or config["threads"]
    conda:
        "../envs/latentaudit.yaml"
    log:
        "logs/pretrain_organism.log",
    resources:
        gpu=1,
        runtime=60,
        mem_mb=8000,
    script:
        "../workflow_scripts/pretrain_organism.py"


rule align_organism:
    input:
        script="workflow_scripts/align_organism.py",
        code=code_inputs("workflow_scripts/align_organism.py"),
        pretrained="results/models/organism/pretrained",
        records=organism_split("align"),
    output:
        model=directory("results/models/organism/aligned"),
    params:
        train=config["organism"]["align"],
        lora=config["align_lora"],
        seed=config["seed"],
        device=config["device"],
        checkpoint="results/checkpoints/organism/aligned.pt",
    threads: config["organism"]["threads"] or config["threads"]
    conda:
        "../envs/latentaudit.yaml"
    log:
        "logs/align_organism.log",
    resources:
        gpu=1,
        runtime=60,
        mem_mb=8000,
    script:
        "../workflow_scripts/align_organism.py"
