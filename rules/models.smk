rule pretrain_organism:
    input:
        script="workflow_scripts/pretrain_organism.py",
        code=code_inputs("workflow_scripts/pretrain_organism.py"),
        tokenizer="results/models/organism/tokenizer",
        records=organism_split("pretrain"),
    output:
        # draw 0, the seed's own; align_organism writes the pretrained model its organism was aligned from
        model=directory("results/models/organism/pretrained_draw0"),
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
        # judging draws imports generation and the structural judge by name: code inputs only where it runs
        code=code_inputs("workflow_scripts/align_organism.py", *([ORGANISM_BEHAVIOUR_MODULE] if ORGANISM_DRAWS > 1 else [])),
        pretrained="results/models/organism/pretrained_draw0",
        records=organism_split("align"),
        # read only where organism.selection draws: the pretraining drawn anew, judged on the selection splits
        pretrain_records=organism_split("pretrain") if ORGANISM_DRAWS > 1 else [],
        selection=[organism_split(s) for s in ORGANISM_JUDGED_SPLITS] if ORGANISM_DRAWS > 1 else [],
    output:
        model=directory("results/models/organism/aligned"),
        pretrained=directory("results/models/organism/pretrained"),
    params:
        train=config["organism"]["align"],
        lora=config["align_lora"],
        seed=config["seed"],
        device=config["device"],
        checkpoint="results/checkpoints/organism/aligned.pt",
        # with one draw nothing is judged or redrawn: the spec, the judge and the pretraining are not its params
        selection=config["organism"]["selection"] if ORGANISM_DRAWS > 1 else {"max_draws": 1},
        model=config["organism"]["model"] if ORGANISM_DRAWS > 1 else None,
        pretrain=config["organism"]["pretrain"] if ORGANISM_DRAWS > 1 else None,
        generation={k: config["generation"][k] for k in ("max_new_tokens", "batch_size", "chat_template")}
        if ORGANISM_DRAWS > 1 else None,
    threads: config["organism"]["threads"] or config["threads"]
    conda:
        "../envs/latentaudit.yaml"
    log:
        "logs/align_organism.log",
    resources:
        gpu=1,
        runtime=60 * ORGANISM_DRAWS,  # each draw a pretraining and an alignment, at most
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
