"""Benchmark: attack sweeps run the naive way (one ``model.generate`` call and one NLL-probe
forward per (prompt, layer, setting), single-row hook, as the papers' public codes do) against
the shared-prefix batched path (``shared_prefix.generate_sweep``, ``shared_prefix.target_nll_sweep``).

Both paths must agree: greedy tokens equal, NLL-probe values within ``tolerance``. The naive
loop is too slow to run in full on a CPU, so it is timed on a seeded random subsample of the
grid (``naive_sample`` rows) and its time is extrapolated per generation; identity is checked
on that subsample. The CSV says which rows were subsampled and how many were measured.

Each path's achieved FLOP/s is its counted work (``flops.count_flops``: tokens × 2 × parameters
layer by layer, plus the PGD backward) over its time, set against this machine's matmul
throughput measured in the same process (``flops.matmul_flop_per_s``, in the bench's dtype).
"""
from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Callable

import pandas as pd
import torch

from .attacks.asa import last_prompt_hidden
from .attacks.common import SweepGrid, nll_probe, resolve_layers, site_indices
from .attacks.latent_pgd import latent_pgd_deltas
from .batching import prompt_token_ids, target_token_ids
from .flops import FlopCount, count_flops, flop_rate, matmul_flop_per_s, synchronize
from .generation import Sampling, generate, model_device
from .shared_prefix import generate_sweep, target_nll_sweep
from .hooks import PromptDeltas, n_layers, position_code
from .io import read_jsonl
from .memory import resolve_batch_sizes
from .perturbation_size import asa_random_vectors, random_directions
from .provenance import write_meta

log = logging.getLogger(__name__)

COLUMNS = ["setting", "n_generations", "naive_s", "fast_s", "speedup", "identical", "naive_peak_mb", "fast_peak_mb",
           "naive_flop_per_s", "fast_flop_per_s", "matmul_flop_per_s", "naive_fraction_of_matmul",
           "fast_fraction_of_matmul"]


@dataclass(frozen=True)
class BenchSettings:
    """One benchmark run (configs/bench/cpu.yaml; configs/bench/gpu.yaml for the GPU variant)."""
    model: str = "given"                # "given": the weights in the model directory given; "random_llama": built from `random_llama`
    device: str = "cpu"
    dtype: str = "float32"
    random_llama: dict = field(default_factory=lambda: {
        "hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 16, "num_attention_heads": 32,
        "num_key_value_heads": 8})      # about 1B parameters with a 32k vocabulary; the organism's vocabulary here
    chat_template: bool = True
    n_prompts: int = 0                  # eval prompts used; 0 = all
    layers: list | str = "all"
    alphas: list = field(default_factory=lambda: [0.5, 1.0, 2.0, 4.0, 8.0])
    n_directions: int = 8
    normalisation: str = "eq1"
    asa_positions: str = "last_prompt+generated"
    lvs_budgets: list = field(default_factory=lambda: [0.05, 0.1, 0.25, 0.5])
    lvs_steps: int = 10
    lvs_step_size: float = 0.25
    max_new_tokens: int = 20
    temperature: float = 0.0            # 0: greedy; > 0: both paths sample (generation.Sampling, seed `seed`)
    batch_size: int | str = 256         # "auto": generation and PGD batches sized from free memory (memory.py)
    naive_sample: int = 256             # grid rows the naive loop runs; 0 = the whole grid
    tolerance: float = 1e-5             # max |NLL naive - NLL fast|
    seed: int = 0
    matmul_size: int = 2048             # the matmul timed for the machine's limit: size x size by size x size
    matmul_repeats: int = 5             # its best time is taken

    @property
    def sampling(self) -> Sampling | None:
        return Sampling.from_config({"temperature": self.temperature, "sample_seed": self.seed})

    @classmethod
    def from_dict(cls, values: dict) -> "BenchSettings":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown bench settings {unknown}; valid: {sorted(known)}")
        return cls(**values)


@dataclass
class BenchSweep:
    """A sweep ready to time: the rows of a ``SweepGrid`` as prompts perturbed at sites;
    ``vectors(rows, batch_size, fast)`` computes the rows' perturbations (cheap for ASA, latent PGD
    for LVS, timed with the sweep; ``fast`` False: the whole hooked forward at every PGD step, as
    the public codes)."""
    name: str
    prompts: list[list[int]]
    responses: list[list[int]]          # each row's clean response, for the NLL probe
    sites: torch.Tensor
    positions: torch.Tensor
    vectors: Callable[[list[int], int, bool], "torch.Tensor | PromptDeltas"]


# --- memory -----------------------------------------------------------------------------

class PeakMemory:
    """Peak memory of a phase, in MB above its start: CUDA allocator peak on a GPU, else the
    process's peak resident set (Linux VmHWM, reset through /proc/self/clear_refs)."""

    def __init__(self, device: torch.device):
        self.device = device

    def __enter__(self) -> "PeakMemory":
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats(self.device)
            self.start = torch.cuda.memory_allocated(self.device)
        else:
            self.start = _proc_status_kb("VmRSS")
            try:
                Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
            except OSError:
                log.warning("cannot reset the peak RSS; peak memory is the process's peak so far")
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            self.peak_mb = (torch.cuda.max_memory_allocated(self.device) - self.start) / 2**20
        else:
            self.peak_mb = max(0.0, (_proc_status_kb("VmHWM") - self.start) / 1024)  # 0: within pages already held


def _proc_status_kb(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


# --- the two paths ----------------------------------------------------------------------

def run_naive(model, tokenizer, sweep: BenchSweep, rows: list[int], max_new_tokens: int,
              sampling: Sampling | None = None):
    """One model.generate call and one NLL-probe forward per row, each with a single-row hook.
    Returns (token ids, NLLs, the rows' perturbation vectors)."""
    vectors = sweep.vectors(rows, 1, False)
    token_ids, nll = [], []
    pad = tokenizer.pad_token_id
    for j, i in enumerate(rows):
        vector = vectors[j:j + 1] if isinstance(vectors, torch.Tensor) else [vectors[j]]
        site, code = sweep.sites[i:i + 1], sweep.positions[i:i + 1]
        _, ids = generate(model, tokenizer, [sweep.prompts[i]], max_new_tokens, 1, site, vector, code,
                          desc="naive", return_token_ids=True, sampling=sampling)
        token_ids.append(ids[0])
        nll.append(nll_probe(model, [sweep.prompts[i]], [sweep.responses[i]], site, vector, code, pad, 1))
    return token_ids, torch.cat(nll), vectors


def fast_outputs(model, tokenizer, sweep: BenchSweep, rows: list[int], vectors, max_new_tokens: int,
                 batch_size: int, sampling: Sampling | None = None):
    """(token ids, NLLs) of ``rows`` perturbed by ``vectors`` (one per row, in ``rows`` order)
    through the shared-prefix batched path."""
    index = torch.as_tensor(rows)
    prompts = [sweep.prompts[i] for i in rows]
    sites, positions = sweep.sites[index], sweep.positions[index]
    _, token_ids = generate_sweep(model, tokenizer, prompts, max_new_tokens, batch_size, sites, vectors, positions,
                                  desc=f"{sweep.name} fast", return_token_ids=True, sampling=sampling)
    nll = target_nll_sweep(model, prompts, [sweep.responses[i] for i in rows], sites, vectors, positions,
                           tokenizer.pad_token_id, batch_size)
    return token_ids, nll


def run_fast(model, tokenizer, sweep: BenchSweep, max_new_tokens: int, batch_size: int,
             sampling: Sampling | None = None, pgd_batch_size: int | None = None):
    """Every row of the sweep through the shared-prefix batched path (vectors computed batched,
    ``pgd_batch_size`` rows at a time; default ``batch_size``)."""
    rows = list(range(len(sweep.prompts)))
    vectors = sweep.vectors(rows, pgd_batch_size or batch_size, True)
    return (*fast_outputs(model, tokenizer, sweep, rows, vectors, max_new_tokens, batch_size, sampling), vectors)


def _take(vectors, rows: list[int]):
    return vectors[torch.as_tensor(rows)] if isinstance(vectors, torch.Tensor) else [vectors[i] for i in rows]


def vector_agreement(a, b, rtol: float = 1e-5) -> tuple[float, int]:
    """(fraction of perturbation coordinates, number of rows) on which ``a`` and ``b`` agree to
    ``rtol`` times the row's largest coordinate: float rounding (e.g. a relative budget computed
    from a batched vs a single-row forward) moves every coordinate by an ulp, a sign flip of
    a PGD step by a quarter of the budget."""
    rows_a = list(a) if isinstance(a, torch.Tensor) else a
    rows_b = list(b) if isinstance(b, torch.Tensor) else b
    close = [(x - y).abs() <= rtol * x.abs().max() for x, y in zip(rows_a, rows_b)]
    coordinates = torch.cat([c.flatten() for c in close]).float().mean()
    return float(coordinates), sum(bool(c.all()) for c in close)


def _agree(naive_ids, naive_nll, fast_ids, fast_nll, tolerance: float) -> tuple[int, float, bool]:
    """(rows with equal greedy tokens, max |ΔNLL|, identical)."""
    tokens_equal = sum(a == b for a, b in zip(naive_ids, fast_ids))
    nll_diff = float((fast_nll - naive_nll).abs().max())
    return tokens_equal, nll_diff, tokens_equal == len(naive_ids) and nll_diff <= tolerance


@dataclass(frozen=True)
class BenchMachine:
    """What a bench run resolved on this machine: batch sizes (``auto`` sized from free memory)
    and the matmul throughput each path's FLOP/s is set against."""
    batch_size: int
    pgd_batch_size: int
    matmul_flop_per_s: float
    matmul_dtype: str


def flop_columns(path: str, count: FlopCount, seconds: float, matmul: float) -> dict:
    """One path's counted FLOPs, its achieved FLOP/s and that rate's fraction of ``matmul``."""
    rate = count.total / seconds
    return {f"{path}_flop_per_s": rate, f"{path}_fraction_of_matmul": rate / matmul,
            f"{path}_forward_flops": count.forward, f"{path}_backward_flops": count.backward}


def compare_sweep(model, tokenizer, sweep: BenchSweep, settings: BenchSettings, machine: BenchMachine) -> dict:
    """Time both paths on ``sweep``; one results row."""
    device = model_device(model)
    n = len(sweep.prompts)
    sample = list(range(n))
    if 0 < settings.naive_sample < n:
        sample = sorted(random.Random(settings.seed).sample(sample, settings.naive_sample))
    with PeakMemory(device) as naive_memory, count_flops(model) as naive_flops:
        synchronize(device)
        start = time.perf_counter()
        naive_ids, naive_nll, naive_vectors = run_naive(model, tokenizer, sweep, sample, settings.max_new_tokens,
                                                        settings.sampling)
        synchronize(device)
        naive_measured = time.perf_counter() - start
    with PeakMemory(device) as fast_memory, count_flops(model) as fast_flops:
        synchronize(device)
        start = time.perf_counter()
        fast_ids, fast_nll, fast_vectors = run_fast(model, tokenizer, sweep, settings.max_new_tokens,
                                                    machine.batch_size, settings.sampling, machine.pgd_batch_size)
        synchronize(device)
        fast_s = time.perf_counter() - start
    naive_s = naive_measured / len(sample) * n
    tokens_equal, nll_diff, identical = _agree(naive_ids, naive_nll, [fast_ids[i] for i in sample],
                                               fast_nll[sample], settings.tolerance)
    # Where the vectors are computed (LVS's sign-PGD), the paths' vectors can differ: the sign of
    # a near-zero gradient coordinate follows float rounding, which batching changes. So, apart
    # from the end-to-end check: how many coordinates agree, and whether the fast path given the
    # naive path's own vectors reproduces its tokens and NLLs (untimed).
    agreement, rows_agree = vector_agreement(naive_vectors, _take(fast_vectors, sample))
    given = fast_outputs(model, tokenizer, sweep, sample, naive_vectors, settings.max_new_tokens, machine.batch_size,
                         settings.sampling)
    _, nll_diff_given, identical_given = _agree(naive_ids, naive_nll, *given, settings.tolerance)
    naive_tokens = sum(len(ids) for ids in naive_ids)
    fast_tokens = sum(len(ids) for ids in fast_ids)
    row = {"setting": sweep.name, "n_generations": n, "naive_s": naive_s, "fast_s": fast_s,
           "speedup": naive_s / fast_s, "identical": identical,
           "naive_peak_mb": naive_memory.peak_mb, "fast_peak_mb": fast_memory.peak_mb,
           "naive_measured": len(sample), "naive_extrapolated": len(sample) < n, "naive_measured_s": naive_measured,
           "tokens_equal": tokens_equal, "max_nll_diff": nll_diff, "vector_agreement": agreement, "vector_rows_equal": rows_agree,
           "identical_given_vectors": identical_given, "max_nll_diff_given_vectors": nll_diff_given,
           "naive_tokens_per_s": naive_tokens / naive_measured, "fast_tokens_per_s": fast_tokens / fast_s,
           # the naive path's work counted on the rows it ran, over the time it took them
           **flop_columns("naive", naive_flops, naive_measured, machine.matmul_flop_per_s),
           **flop_columns("fast", fast_flops, fast_s, machine.matmul_flop_per_s),
           "matmul_flop_per_s": machine.matmul_flop_per_s, "matmul_dtype": machine.matmul_dtype,
           "batch_size": machine.batch_size, "pgd_batch_size": machine.pgd_batch_size,
           "parameters": sum(p.numel() for p in model.parameters()), "device": device.type}
    log.info("%s", row)
    return row


# --- the two sweeps ---------------------------------------------------------------------

def asa_random_sweep(model, tokenizer, prompts: list[list[int]], responses: list[list[int]],
                     settings: BenchSettings, batch_size: int) -> BenchSweep:
    """ASA_random: every layer x alpha x direction x prompt, as ``attack_asa_random`` lays it out."""
    n_blocks = n_layers(model)
    layers = resolve_layers(settings.layers, n_blocks)
    h_last = last_prompt_hidden(model, prompts, tokenizer.pad_token_id, batch_size)
    z = random_directions(len(prompts), settings.n_directions, h_last.shape[-1], True, settings.seed)
    grid = SweepGrid.product(settings.alphas, layers, len(prompts), settings.n_directions)
    table = torch.cat([asa_random_vectors(h_last[:, block + 1], z[k], alpha, settings.normalisation)
                       for alpha, block, k in grid.settings()])
    return BenchSweep("asa_random", [prompts[i] for i in grid.index], [responses[i] for i in grid.index],
                      site_indices(grid.layer, n_blocks),
                      torch.full((len(grid),), position_code(settings.asa_positions)),
                      lambda rows, _batch_size, _fast: table[torch.as_tensor(rows)])


def lvs_sweep(model, tokenizer, prompts: list[list[int]], responses: list[list[int]], targets: list[list[int]],
             settings: BenchSettings) -> BenchSweep:
    """LVS-style: ℓ∞ sign-PGD on prompt positions toward the affirmative prefix, per budget and
    layer, then generation; the PGD is part of each path's time (batch 1 naive, batched fast)."""
    n_blocks = n_layers(model)
    layers = resolve_layers(settings.layers, n_blocks)
    grid = SweepGrid.product(settings.lvs_budgets, layers, len(prompts))
    index = grid.index
    sites = site_indices(grid.layer, n_blocks)
    budgets = torch.tensor(grid.strength)

    def vectors(rows: list[int], batch_size: int, fast: bool) -> PromptDeltas:
        rows_t = torch.as_tensor(rows)
        return latent_pgd_deltas(model, [prompts[index[r]] for r in rows], [targets[index[r]] for r in rows],
                                 sites[rows_t], budgets[rows_t], "linf", settings.lvs_steps, settings.lvs_step_size,
                                 tokenizer.pad_token_id, batch_size, desc="lvs pgd", shared_prefix=fast)

    return BenchSweep("lvs_linf_pgd", [prompts[i] for i in index], [responses[i] for i in index], sites,
                      torch.full((len(index),), position_code("prompt")), vectors)


# --- the run ----------------------------------------------------------------------------

def build_random_llama(tokenizer, settings: BenchSettings, device: torch.device):
    """A randomly initialised Llama (the GPU benchmark's stand-in for a ~1B model)."""
    from transformers import LlamaConfig, LlamaForCausalLM
    from .models import DTYPES

    config = LlamaConfig(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         max_position_embeddings=512, **settings.random_llama)
    torch.manual_seed(settings.seed)
    with torch.device(device):  # initialise in place: a 1B model is slow to initialise on the CPU
        model = LlamaForCausalLM(config)
    return model.to(dtype=DTYPES[settings.dtype]).eval()


def load_bench_model(model_path: str, settings: BenchSettings):
    """(model, tokenizer): the weights at ``model_path``, or a random Llama with its tokenizer."""
    from .models import load_model, resolve_device

    if settings.model == "given":
        return load_model(model_path, None, settings.dtype, settings.device)
    if settings.model == "random_llama":
        _, tokenizer = load_model(model_path, None, "float32", "cpu")
        return build_random_llama(tokenizer, settings, resolve_device(settings.device)), tokenizer
    raise ValueError(f"bench model {settings.model!r} unknown; valid: 'given', 'random_llama'")


def run_bench(model_path: str, forbidden_path: str, settings: BenchSettings) -> pd.DataFrame:
    """Both sweeps, naive vs fast, on the bench model over the eval_forbidden prompts at
    ``forbidden_path``: one row per sweep (``COLUMNS`` first)."""
    torch.manual_seed(settings.seed)
    model, tokenizer = load_bench_model(model_path, settings)
    frame = bench_sweeps(model, tokenizer, read_jsonl(forbidden_path), settings)
    frame["model"] = model_path if settings.model == "given" else "random Llama ({num_hidden_layers} blocks, hidden " \
        "{hidden_size})".format(**settings.random_llama)
    return frame


def bench_sweeps(model, tokenizer, records: list[dict], settings: BenchSettings) -> pd.DataFrame:
    """Both sweeps, naive vs fast, on ``model`` over ``records`` (eval_forbidden rows: prompt,
    affirmative_prefix): one row per sweep (``COLUMNS`` first)."""
    if settings.n_prompts:
        records = records[:settings.n_prompts]
    prompts = [prompt_token_ids(tokenizer, r["prompt"], settings.chat_template) for r in records]
    targets = [target_token_ids(tokenizer, r["affirmative_prefix"]) for r in records]
    batch_size, pgd_batch_size = resolve_batch_sizes(settings.batch_size, model, max(map(len, prompts)),
                                                     settings.max_new_tokens)
    dtype = next(model.parameters()).dtype
    machine = BenchMachine(batch_size, pgd_batch_size,
                           matmul_flop_per_s(model_device(model), dtype, settings.matmul_size, settings.matmul_repeats),
                           str(dtype).removeprefix("torch."))
    log.info("%s", machine)
    # The NLL probe scores each prompt's clean response; both paths share it, so it is not timed.
    _, responses = generate(model, tokenizer, prompts, settings.max_new_tokens, batch_size,
                            desc="clean", return_token_ids=True)
    sweeps = [asa_random_sweep(model, tokenizer, prompts, responses, settings, batch_size),
              lvs_sweep(model, tokenizer, prompts, responses, targets, settings)]
    frame = pd.DataFrame([compare_sweep(model, tokenizer, sweep, settings, machine) for sweep in sweeps])
    return frame[COLUMNS + [c for c in frame.columns if c not in COLUMNS]]


def flop_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Each path's counted work, achieved FLOP/s and fraction of the measured matmul limit."""
    table = {"setting": frame["setting"]}
    for path in ("naive", "fast"):
        table[f"{path} GFLOP"] = (frame[f"{path}_forward_flops"] + frame[f"{path}_backward_flops"]) / 1e9
        table[f"{path} of which backward"] = frame[f"{path}_backward_flops"] / 1e9
        table[f"{path} FLOP/s"] = frame[f"{path}_flop_per_s"].map(flop_rate)
        table[f"{path} of limit"] = frame[f"{path}_fraction_of_matmul"].map(lambda f: f"{100 * f:.1f} %")
    table["matmul limit"] = [f"{flop_rate(r)} ({d})" for r, d in zip(frame["matmul_flop_per_s"], frame["matmul_dtype"])]
    return pd.DataFrame(table)


def render_markdown(frame: pd.DataFrame, settings: BenchSettings) -> str:
    """The tables plus what was measured how."""
    resolved = ("batch_size", "pgd_batch_size", "parameters")  # one value per run: in the heading
    shown = frame.drop(columns=[c for c in frame.columns if "flop" in c or "matmul" in c or c in resolved])
    for column in ("naive_s", "fast_s", "naive_measured_s"):
        shown[column] = shown[column].map(lambda s: f"{s:.1f}")
    shown["speedup"] = shown["speedup"].map(lambda s: f"{s:.1f}x")
    for column in ("naive_peak_mb", "fast_peak_mb", "naive_tokens_per_s", "fast_tokens_per_s"):
        shown[column] = shown[column].map(lambda v: f"{v:.0f}")
    for column in ("max_nll_diff", "max_nll_diff_given_vectors"):
        shown[column] = shown[column].map(lambda v: f"{v:.1e}")
    shown["vector_agreement"] = shown["vector_agreement"].map(lambda v: f"{v:.5f}")
    notes = [
        "# Sweep benchmark: naive loop vs shared-prefix batched path", "",
        f"Model: {frame['model'].iloc[0] if 'model' in frame else settings.model} ({int(frame['parameters'].iloc[0]):,} parameters, {settings.dtype}) "
        f"on {frame['device'].iloc[0]}; "
        f"max_new_tokens {settings.max_new_tokens}, batch size {settings.batch_size} "
        f"({frame['batch_size'].iloc[0]} generation, {frame['pgd_batch_size'].iloc[0]} PGD rows), "
        f"{'greedy decoding' if settings.sampling is None else f'sampled at T = {settings.temperature:g}'}.", "",
        shown.to_markdown(index=False), "",
        "- naive: one `model.generate` call and one NLL-probe forward per grid row, single-row hook "
        "(LVS: latent PGD with batch size 1 as well).",
        "- fast: `generate_sweep` + `target_nll_sweep` (one clean prefill per prompt, blocks from the "
        "site up per setting, batched decoding); LVS: batched latent PGD.",
        f"- naive_s is extrapolated from `naive_measured` rows (seeded random subsample, seed {settings.seed}) "
        "where `naive_extrapolated` is true; `identical` (greedy tokens equal and |ΔNLL| ≤ "
        f"{settings.tolerance:g}) is checked on those rows.",
        "- `vector_agreement` / `vector_rows_equal`: fraction of perturbation coordinates / number of rows "
        "equal in both paths to 1e-5 of the row's largest coordinate (ASA: one shared table; LVS: each "
        "path's own sign-PGD, where a near-zero gradient coordinate's sign follows float rounding, which "
        "batching changes, and one flipped step moves the delta by a quarter of the budget). "
        "`identical_given_vectors`: the fast path given the naive path's vectors reproduces its tokens "
        "and NLLs (max |ΔNLL| in `max_nll_diff_given_vectors`).",
        "- peak memory: MB above the phase's start (CUDA allocator peak on a GPU, peak RSS on a CPU).",
        "", "## Achieved FLOP/s", "",
        flop_table(frame).to_markdown(index=False, floatfmt=".2f"), "",
        "- work: tokens × 2 × parameters, counted layer by layer on the tokens each linear layer processed "
        "(the fast path runs the blocks below a row's site once per prompt; padding counts), plus the PGD "
        "backward: input gradients only (the weights are frozen), so 1× the forward of the blocks above "
        "the site. Attention scores, norms and activations are not counted: a lower bound on the work "
        "(latentaudit/flops.py).",
        "- naive: the work of the measured rows over `naive_measured_s`; fast: the whole grid over `fast_s`.",
        f"- limit: the best of {settings.matmul_repeats} timed {settings.matmul_size}³ matmuls in the bench's "
        "dtype, in the same process (same threads, same pinned kernels).",
    ]
    return "\n".join(notes) + "\n"


def write_results(frame: pd.DataFrame, settings: BenchSettings, csv_path: str, md_path: str) -> None:
    frame.to_csv(csv_path, index=False)
    Path(md_path).write_text(render_markdown(frame, settings))
    write_meta(csv_path, settings.__dict__, seed=settings.seed)
