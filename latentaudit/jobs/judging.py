"""The job that labels stored generations with one judge (never regenerates)."""
from __future__ import annotations

import pandas as pd

from ..io import GENERATION_KEYS
from ..provenance import write_meta
from ..registry import JUDGES, load_module


def run_judge(job) -> None:
    """Rule judge / model_judge: label the stored generations ``input.generations`` with the judge
    ``wildcards.judge`` (``params.settings``) into ``output.scores``; never regenerates. A judge
    returns its scores, or ``(scores, provenance)`` when a model judges (model id, revision,
    template hash, token limit, unparseable count): that goes into the sidecar as
    ``judge_provenance``. ``params.module``, the judge's own module, is all that is imported."""
    judge, settings, out_path = job.wildcards.judge, dict(job.params.settings), job.output.scores
    load_module(job.params.module)
    generations = pd.read_parquet(job.input.generations)
    entry = JUDGES.get_entry(judge)
    result = entry.function(generations, entry.settings(settings))
    scores, provenance = result if isinstance(result, tuple) else (result, {})
    scores.insert(0, "judge", judge)
    for column in reversed(GENERATION_KEYS):
        scores.insert(0, column, generations[column].to_numpy())
    scores.to_parquet(out_path, index=False)
    write_meta(out_path, settings, judge=judge, rows=len(scores), judge_provenance=provenance)
