# Speed of the attack sweeps: naive per-row loop vs the shared-prefix batched path (issue 7).
# Not part of `rule all`: run with `make bench` or `snakemake bench`.
BENCH_CODE = code("bench.py", "generation.py", "hooks.py", "batching.py", "models.py", "io.py", "attacks/asa.py",
                  "attacks/common.py", "attacks/latent_pgd.py")


rule bench:
    input:
        "results/bench/sweep.csv",
        "results/bench/sweep.md",


rule bench_sweep:
    input:
        script="workflow_scripts/bench.py",
        code=BENCH_CODE,
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
        code=BENCH_CODE,
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
