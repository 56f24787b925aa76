"""The job that turns judged generations into the results-contract CSVs (the judging itself is
``jobs.judging``: apart, so that an edit of a table never re-judges, which with a model judge on a
cluster is the most expensive rerun there is)."""
from __future__ import annotations

import pandas as pd

from .. import metrics
from ..capability import join_capability
from ..io import GENERATION_KEYS
from ..catalog import catalog


# Stored texts no table reads: prompts, answers, the clean answer beside a perturbed one, the
# organism's expected answer, a prefilled target.
TEXT_COLUMNS = ("prompt", "generation", "clean_generation", "expected", "prefill_target")


def one_chunk(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with each string column in one Arrow chunk: concatenated from many parquet files,
    a column has as many chunks as files, and every row filter of the tables pays per chunk (~4x
    here). The same values and dtypes."""
    arrow_strings = [c for c, dtype in frame.dtypes.items()
                     if isinstance(dtype, pd.StringDtype) and dtype.storage == "pyarrow"]  # pandas 3's `str`
    return frame.assign(**{c: pd.Series(frame[c].to_numpy(), index=frame.index, dtype=frame[c].dtype)
                           for c in arrow_strings})


def collect_metrics(job) -> None:
    """Rule metrics / audit_metrics: join every generation file (``input.generations``) with every
    judge's scores (``input.scores``) and write the results-contract CSVs, one per named output
    (``output.attacks``, ``output.behavior``, ...; ``lvs`` and ``harmful_ft`` when the rule names
    them). Judges that score rather than label (registered with ``scores=...``: harmlessness) feed
    ``lvs.csv`` only, whose ASR reads ``params.primary_judge`` and whose bootstrap reads
    ``params.lvs``; attacks' random-control rows count as the attack ``<attack>_control``; the
    harmful fine-tuning attack's steps and seeds go to ``harmful_ft.csv`` (and per-step rows to
    attacks.csv); lm-eval capability scores (``input.capability``), when any, join behavior.csv;
    ``dissociated_selection.csv``, when the rule names it, from the dissociated builds
    (``input.dissociated``, of the models ``params.dissociated_models``)."""
    outputs, primary_judge, lvs_settings = dict(job.output.items()), job.params.primary_judge, dict(job.params.lvs)
    generation_paths, score_paths = list(job.input.generations), list(job.input.scores)
    capability_paths = list(job.input.capability)
    generations = pd.concat([pd.read_parquet(p) for p in generation_paths], ignore_index=True)
    # The texts are the judges' input, not the tables': copied through every merge and filter below
    # they were most of this job's time (336k judged rows on the default experiment).
    generations = one_chunk(generations.drop(columns=[c for c in TEXT_COLUMNS if c in generations]))
    scores = one_chunk(pd.concat([pd.read_parquet(p) for p in score_paths], ignore_index=True))
    judged = generations.merge(scores, on=[*GENERATION_KEYS, "row_id"], how="inner", validate="one_to_many")
    judged = metrics.split_controls(judged)
    # the judges' options from the catalog: this job imports no method module (no torch)
    score_judges = [name for name, entry in catalog().judges.items() if entry.options.get("scores")]
    if "lvs" in outputs:
        metrics.lvs_table(judged, primary_judge, lvs_settings).to_csv(outputs["lvs"], index=False)
    judged = judged[~judged["judge"].isin(score_judges)]
    harmful_ft, harmful_ft_attacks = metrics.harmful_ft_tables(judged)
    if "harmful_ft" in outputs:
        harmful_ft.to_csv(outputs["harmful_ft"], index=False)
    judged = judged[judged["attack"] != "harmful_ft"]  # steps and seeds, not layers and directions
    attacks, summary = metrics.attack_tables(judged)
    attacks = pd.concat([attacks, harmful_ft_attacks], ignore_index=True) if len(harmful_ft_attacks) else attacks
    attacks.to_csv(outputs["attacks"], index=False)
    summary.to_csv(outputs["attack_summary"], index=False)
    behavior = metrics.behavior_table(judged)
    if capability_paths:
        behavior = join_capability(behavior, pd.concat([pd.read_csv(p) for p in capability_paths], ignore_index=True))
    behavior.to_csv(outputs["behavior"], index=False)
    metrics.nll_probe_table(generations).to_csv(outputs["nll_probe"], index=False)
    metrics.defense_table(summary, behavior).to_csv(outputs["defenses"], index=False)
    if "dissociated_selection" in outputs:  # the dissociated builds' checkpoints, from their sidecars
        builds = dict(zip(job.params.dissociated_models, job.input.dissociated, strict=True))
        metrics.dissociated_selection_table(builds).to_csv(outputs["dissociated_selection"], index=False)
