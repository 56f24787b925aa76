# Speed of the attack sweeps: naive per-row loop vs the shared-prefix batched path (issue 7).
# Not part of `rule all`: run with `make bench` or `snakemake bench`.
rule bench:
    input:
        "results/bench/sweep.csv",
        "results/bench/sweep.md",


rule bench_sweep:
    input:
        script="workflow_scripts/bench.py",
        code=code_inputs("workflow_scripts/bench.py"),
        settings="configs/bench/cpu.yaml",
        model="results/models/organism/aligned",
        forbidden=organism_split("eval_forbidden"),
    output:
        csv="results/bench/sweep.csv",
        md="results/bench/sweep.md",
    threads: config["organism"]["threads"] or config["threads"]  # timed alone: the whole machine
    conda:
        "../envs/latentaudit.yaml"
    log:
        "logs/bench/sweep.log",
    resources:
        runtime=120,
        mem_mb=8000,
    script:
        "../workflow_scripts/bench.py"


# The GPU variant: a random ~1B Llama in bf16 (tokenizer and prompts from the organism).
rule bench_gpu:
    input:
        script="workflow_scripts/bench.py",
        code=code_inputs("workflow_scripts/bench.py"),
        settings="configs/bench/gpu.yaml",
        model="results/models/organism/aligned",
        forbidden=organism_split("eval_forbidden"),
    output:
        csv="results/bench/gpu/sweep.csv",
        md="results/bench/gpu/sweep.md",
    threads: config["organism"]["threads"] or config["threads"]  # timed alone: the whole machine
    conda:
        "../envs/latentaudit.yaml"
    log:
        "logs/bench/gpu.log",
    resources:
        gpu=1,
        runtime=120,
        mem_mb=32000,
    script:
        "../workflow_scripts/bench.py"


# The same bench on a configured hub/path model's weights as given (e.g. the real CPU track's
# SmolLM2: `snakemake --cores 2 --configfile configs/smollm2.yaml results/bench/models/smollm2/sweep.md`),
# over its real eval_forbidden prompts; settings in configs/bench/real.yaml.
rule bench_model:
    input:
        script="workflow_scripts/bench.py",
        code=code_inputs("workflow_scripts/bench.py"),
        settings="configs/bench/real.yaml",
        model=lambda wildcards: config["models"][wildcards.model]["source"],
        forbidden=real_split("eval_forbidden"),
    output:
        csv="results/bench/models/{model}/sweep.csv",
        md="results/bench/models/{model}/sweep.md",
    wildcard_constraints:
        model="(?!organism$)[^/]+",
    threads: config["threads"]  # timed alone: the whole machine
    conda:
        "../envs/latentaudit.yaml"
    log:
        "logs/bench/models/{model}.log",
    resources:
        gpu=1,
        runtime=120,
        mem_mb=16000,
    script:
        "../workflow_scripts/bench.py"
