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


# A hub/path model that is not safety-aligned as given (`models.<name>.align`, e.g. SmolLM2 on the
# CPU): its weights as given are the variant `base`, and `aligned` is a refusal LoRA trained here
# on the training records (latentaudit/alignment.py); every later variant and attack loads it.
ALIGNED_HERE = [m for m in config["models"] if not is_organism(m) and aligned_here(m)]
if ALIGNED_HERE:

    rule align_model:
        input:
            script="workflow_scripts/align_model.py",
            code=code_inputs("workflow_scripts/align_model.py"),
            base=lambda w: model_inputs(w.model, "base"),
            records=ALIGN_RECORDS,
        output:
            model=directory(aligned_adapter_dir("{model}")),
        wildcard_constraints:
            model="|".join(re.escape(m) for m in ALIGNED_HERE),
        params:
            settings=lambda w: config["models"][w.model]["align"],
            spec=lambda w: base_spec(w.model),
            chat_template=config["generation"]["chat_template"],
            seed=config["seed"],
            device=config["device"],
        threads: config["threads"]
        conda:
            "../envs/latentaudit.yaml"
        log:
            "logs/align_model/{model}.log",
        resources:
            gpu=1,
            runtime=60,
            mem_mb=16000,
        script:
            "../workflow_scripts/align_model.py"
