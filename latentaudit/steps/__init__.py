"""One function per pipeline step, one module per stage: workflow scripts parse Snakemake's
paths and config slices and call exactly one of these. Stages live in separate modules so that
a rule lists only its own stage as code input (editing the metrics step does not retrain)."""
