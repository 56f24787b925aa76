"""What every attack shares: the prompts it sees, layer lists, and the generations table."""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import pandas as pd
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ..batching import make_batch, prompt_token_ids, target_nll
from ..depth import nudge_layer
from ..generation import Sampling, model_device
from ..shared_prefix import generate_sweep, target_nll_sweep
from ..hooks import Perturbation, PromptDeltas, batch_vectors, hidden_index, intervene, n_layers, position_code

RECORD_COLUMNS = ["id", "split", "kind", "category", "entity", "expected", "prompt"]
# Carried when every record has them (real data sets): the HarmBench judge reads a contextual
# behaviour's text and context separately from the combined prompt.
OPTIONAL_RECORD_COLUMNS = ["behavior", "context"]


@dataclass
class AttackContext:
    """Everything an attack needs, built once per (model, variant) job."""
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    eval_records: dict[str, list[dict]]   # eval_forbidden, eval_benign (paired by index), eval_twin
    max_new_tokens: int
    batch_size: int
    chat_template: bool
    seed: int
    norm_model: PreTrainedModel | None = None  # whose activations relative budgets use (None: model's own)
    # What an attack registered with ``needs=(...)`` asked for (e.g. steering: the training
    # records its direction is fitted on, the harmful pole and the aligned model).
    extras: dict = field(default_factory=dict)
    sampling: Sampling | None = None            # None: greedy decoding (generation.temperature 0)
    grad_batch_size: int | None = None          # rows per PGD step (None: batch_size)

    def __post_init__(self):
        if self.norm_model is None:
            self.norm_model = self.model
        if self.grad_batch_size is None:
            self.grad_batch_size = self.batch_size

    def prompt_ids(self, records: list[dict]) -> list[list[int]]:
        return [prompt_token_ids(self.tokenizer, r["prompt"], self.chat_template) for r in records]

    def generate(self, prompts: list[list[int]], hidden_index: torch.Tensor | None = None,
                 vectors: torch.Tensor | PromptDeltas | None = None, positions: torch.Tensor | None = None,
                 desc: str = "generate", return_token_ids: bool = False):
        """Every attack's generations: the sweep path with the run's length, batch size and decoding."""
        return generate_sweep(self.model, self.tokenizer, prompts, self.max_new_tokens, self.batch_size, hidden_index,
                              vectors, positions, desc, return_token_ids, self.sampling)


SWEEP_AXES = ("strength", "layer", "direction", "prompt")


@dataclass(frozen=True)
class SweepGrid:
    """The rows of a sweep, one entry per row in each column: row r perturbs eval prompt
    ``index[r]`` at ``layer[r]`` (a block index, or ``"embed"``) with size ``strength[r]`` (the
    attack's alpha, budget or fraction) along direction ``direction[r]`` (a random draw, or 1 for
    a control row). Attacks, their generations table and the benchmark read the same columns."""
    index: list[int]
    layer: list
    strength: list[float]
    direction: list[int]

    @classmethod
    def product(cls, strengths, layers, n_prompts: int, n_directions: int = 1,
                order: tuple[str, ...] = SWEEP_AXES) -> "SweepGrid":
        """Every (strength, layer, direction, prompt), nested in ``order`` (the last varies fastest):
        the row order, hence each row's ``row_id``, is part of an attack's output."""
        axes = {"strength": [float(s) for s in strengths], "layer": list(layers), "direction": range(n_directions),
                "prompt": range(n_prompts)}
        if sorted(order) != sorted(SWEEP_AXES):
            raise ValueError(f"sweep order {order} must name each of {SWEEP_AXES} once")
        rows = [dict(zip(order, values)) for values in itertools.product(*(axes[axis] for axis in order))]
        return cls([r["prompt"] for r in rows], [r["layer"] for r in rows], [r["strength"] for r in rows],
                   [r["direction"] for r in rows])

    def __len__(self) -> int:
        return len(self.index)

    def settings(self) -> list[tuple[float, object, int]]:
        """(strength, layer, direction) of each block of rows, in row order, for a grid whose prompts
        vary fastest (``order`` ending in ``"prompt"``): a block is one pass over the prompts."""
        starts = [r for r, i in enumerate(self.index) if i == 0]
        return [(self.strength[r], self.layer[r], self.direction[r]) for r in starts]

    def with_control(self) -> "SweepGrid":
        """The rows, then each row again as its control (direction 1)."""
        return SweepGrid(self.index * 2, self.layer * 2, self.strength * 2, self.direction + [1] * len(self))


def site_indices(layers: list[int], n_layers: int) -> torch.Tensor:
    """Block indices -> hook site indices (``hooks.hidden_index``), one per row."""
    return torch.tensor([hidden_index(layer, n_layers) for layer in layers])


def layers_schema(default: str = "all", nudge: bool = False) -> dict:
    """The schema of a layer spec that ``resolve_layers`` reads: ``"all"`` or a list of block
    indices, and with ``nudge`` also ``"nudge"`` (the attack then shares the config's nudge_depth)."""
    names = {"enum": ["nudge", "all"]} if nudge else {"const": "all"}
    return {"oneOf": [names, {"type": "array", "items": {"type": "integer", "minimum": 0}, "minItems": 1}],
            "default": default}


def resolve_layers(spec, n_layers: int, nudge_depth: float | None = None) -> list[int]:
    """``"all"``, ``"nudge"`` (the one block round(nudge_depth · L); attacks that accept it share
    the config's ``nudge_depth``) or a list of block indices -> validated list."""
    if spec == "nudge":
        if nudge_depth is None:
            raise ValueError("layers: nudge needs the config's nudge_depth (the attack must share it)")
        return [nudge_layer(n_layers, nudge_depth)]
    layers = list(range(n_layers)) if spec == "all" else list(spec)
    bad = [layer for layer in layers if not isinstance(layer, int) or not 0 <= layer < n_layers]
    if bad:
        raise ValueError(f"layers {bad} out of range: the model has blocks 0..{n_layers - 1}")
    return layers


def generations_frame(records: list[dict], generations: list[str], **columns) -> pd.DataFrame:
    """One row per generation: the record's fields, the attack's setting columns, the text."""
    carried = RECORD_COLUMNS + [c for c in OPTIONAL_RECORD_COLUMNS if records and all(c in r for r in records)]
    frame = pd.DataFrame([{c: r[c] for c in carried} for r in records]).rename(columns={"id": "prompt_id"})
    for name, values in columns.items():
        frame[name] = values
    frame["generation"] = generations
    return frame



def init_rows(context: AttackContext, frame: pd.DataFrame) -> pd.DataFrame:
    """The unperturbed greedy answer to each of the attack's own harmful requests (``init`` True,
    layer -1, strength 0): the papers' INIT, the clean ASR that MASR/PASR on those prompts are read
    against. Taken from the sweep's ``clean_generation`` where the attack stored one for every
    prompt (the same greedy tokens), else generated."""
    forbidden = context.eval_records["eval_forbidden"]
    stored = frame[frame["split"] == "eval_forbidden"]
    by_prompt = dict(zip(stored["prompt_id"], stored["clean_generation"])) if "clean_generation" in frame else {}
    if all(r["id"] in by_prompt for r in forbidden):
        texts = [by_prompt[r["id"]] for r in forbidden]
    else:
        texts = context.generate(context.prompt_ids(forbidden), desc="clean (INIT)")
    rows = generations_frame(forbidden, texts, layer=-1, strength=0.0, direction=0, init=True)
    rows["pair_id"] = rows["prompt_id"]
    return rows

@torch.no_grad()
def nll_probe(model: PreTrainedModel, prompts: list[list[int]], responses: list[list[int]],
              hidden_index: torch.Tensor | None, vectors: torch.Tensor | PromptDeltas | None,
              positions: torch.Tensor | None,
              pad_id: int, batch_size: int = 256) -> torch.Tensor:
    """L(x, y) = −Σ_t log p(y_t | x, y_<t) of each row's original clean response y, summed over
    response tokens only, with the row's perturbation active (None: clean)."""
    device, out = model_device(model), []
    for start in range(0, len(prompts), batch_size):
        rows = slice(start, start + batch_size)
        batch = make_batch(prompts[rows], responses[rows], pad_id).to(device)
        perturbation = None
        if hidden_index is not None:
            row_ids = range(start, min(start + batch_size, len(prompts)))
            perturbation = Perturbation(hidden_index[rows], batch_vectors(vectors, row_ids, int(batch.prompt_end[0])),
                                        positions[rows], batch.prompt_end)
        with intervene(model, perturbation):
            logits = model(**batch.model_inputs()).logits
        out.append(target_nll(logits, batch.labels).cpu())
    return torch.cat(out)


def evaluate_vectors(context: AttackContext, grid: SweepGrid, vectors: torch.Tensor | PromptDeltas, positions: str,
                     name: str) -> pd.DataFrame:
    """Generate every row of ``grid`` (forbidden prompt ``grid.index[r]`` perturbed at
    ``grid.layer[r]`` by ``vectors[r]``), apply the same vector to the paired benign prompt (the capability control),
    and NLL-probe the original clean response under each perturbation (its text is kept on the
    forbidden rows as ``clean_generation``: the LVS compares it with the perturbed one)."""
    forbidden, benign = context.eval_records["eval_forbidden"], context.eval_records["eval_benign"]
    f_ids, b_ids = context.prompt_ids(forbidden), context.prompt_ids(benign)
    prompt_index = grid.index
    sites = site_indices(grid.layer, n_layers(context.model))
    codes = torch.full((len(grid),), position_code(positions))
    rows_f = [f_ids[i] for i in prompt_index]
    # The sweep path: one clean prefill per prompt below each row's site (same greedy tokens).
    texts_f = context.generate(rows_f, sites, vectors, codes, desc=f"{name} forbidden")
    texts_b = context.generate([b_ids[i] for i in prompt_index], sites, vectors, codes, desc=f"{name} benign control")
    # NLL probe: the original clean response, scored under each perturbation.
    pad = context.tokenizer.pad_token_id
    clean_texts, clean_ids = context.generate(f_ids, desc="clean", return_token_ids=True)
    nll_clean = nll_probe(context.model, f_ids, clean_ids, None, None, None, pad, context.batch_size)
    nll = target_nll_sweep(context.model, rows_f, [clean_ids[i] for i in prompt_index], sites, vectors, codes, pad,
                           context.batch_size)
    settings = {"layer": grid.layer, "strength": grid.strength, "direction": grid.direction}
    frame_f = generations_frame([forbidden[i] for i in prompt_index], texts_f, **settings,
                                nll=nll.numpy(), nll_clean=nll_clean[prompt_index].numpy(),
                                clean_generation=[clean_texts[i] for i in prompt_index])
    frame_b = generations_frame([benign[i] for i in prompt_index], texts_b, **settings,
                                pair_id=[forbidden[i]["id"] for i in prompt_index])
    frame_f["pair_id"] = frame_f["prompt_id"]
    return pd.concat([frame_f, frame_b], ignore_index=True)


def matched_random_vectors(vectors: torch.Tensor, seed: int, groups: torch.Tensor | None = None) -> torch.Tensor:
    """A seeded random direction per row with the same ℓ2 norm as that row's vector; with ``groups``
    ([N] integers 0..G-1), one direction per group, shared by its rows."""
    generator = torch.Generator().manual_seed(seed)
    z = torch.randn(vectors.shape, generator=generator) if groups is None else \
        torch.randn(int(groups.max()) + 1, vectors.shape[-1], generator=generator)[groups]
    return z / z.norm(dim=-1, keepdim=True) * vectors.norm(dim=-1, keepdim=True)


def evaluate_with_matched_control(context: AttackContext, grid: SweepGrid, vectors: torch.Tensor, control: bool,
                                  desc: str, control_groups: torch.Tensor | None = None
                                  ) -> tuple[pd.DataFrame, SweepGrid, torch.Tensor]:
    """``vectors`` [N, d] added at every position, plus (``control``) a matched-norm random direction
    per row, or per ``control_groups`` group (``direction`` 1); the frame gains ``control`` and
    ``vector_l2``. Returns the frame, the grid and the vectors as evaluated (controls appended)."""
    if control:
        vectors = torch.cat([vectors, matched_random_vectors(vectors, context.seed, control_groups)])
        grid = grid.with_control()
    frame = evaluate_vectors(context, grid, vectors, "all", desc)
    frame["control"] = [d == 1 for d in grid.direction] * 2  # x2: the forbidden rows, then the benign
    frame["vector_l2"] = vectors.norm(dim=-1).tolist() * 2
    return frame, grid, vectors
