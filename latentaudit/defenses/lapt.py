"""Layer-wise Adversarial Patch Training (arXiv 2506.16078; shared/papers/asa_lapt.md).

Full fine-tuning on (prompt, safe response) pairs (refusals for forbidden requests, answers
for the rest), cross-entropy on the response with the prompt masked, while every row is pushed
at one fragile layer, at the response positions, by a fresh Eq. 1 perturbation (a new z each
step, sized to the row's clean last-prompt hidden state, as the ASA attack it patches; with
``noise_statistics: each_position``, a z per position sized to that position's own hidden state,
as the public train.py). Fragile layers come from the aligned
model's ASA sweep (the top-k layers by LASR) or from a config list; or, with ``layers: per_sample``,
each forbidden request is trained at each block where it broke (the public code's ASABench and its
per-sample ``layer_idx``): the build runs ASA_random itself over every block on its own training
requests (Eq. 1 at ``alpha``, one direction per request, the build's judge), and trains the
(request, block) pairs that complied, with the benign rows at blocks drawn from those pairs (the
public code trains ASABench alone; the project's LAPT always keeps its benign answers). Afterwards the weights are
interpolated, θ = λ·θ_LAPT + (1 − λ)·θ_orig, with λ the largest grid value whose benign
accuracy stays within ``capability_tolerance`` of the original model's (the paper's rule), or
a fixed λ.

"Response positions" are read as the positions whose next-token predictions are the response:
the last prompt token and the response tokens (``last_prompt+generated``), exactly where the ASA
attack adds its vector. Perturbing the response tokens alone (``generated``) leaves the first
response token's prediction, the refusal's opening, unperturbed; on the organism of 2026-11-24
that patch cut ASA_grad MASR at s* by 39 % only, against 100 % (a defense search recorded in the
message of commit 9975835, not rerun since).
"""
from __future__ import annotations

import logging

import torch

from ..batching import prompt_token_ids
from ..harmful_pole import prompt_activations
from ..hooks import Perturbation, hidden_index, intervene, n_layers, position_code, residual_stream
from ..perturbation_size import asa_random_vectors, eq1_normalise, random_directions
from ..registry import VARIANTS
from ..shared_prefix import generate_sweep
from ..training import MAX_LENGTH_SCHEMA, optim_properties, Sampler, device_of, optimise, pair_batch, token_ce
from .common import defense_data, forbidden_request_label

log = logging.getLogger(__name__)

SCHEMA = {
    "type": "object", "additionalProperties": False, "required": ["steps", "lr"],
    "properties": {
        **optim_properties("cosine", 0.1),
        "layers": {"oneOf": [{"type": "array", "items": {"type": "integer", "minimum": 0}, "minItems": 1},
                             {"enum": ["fragile", "per_sample"]}], "default": "fragile",
                   "description": "block indices; 'fragile': the top_k layers of the aligned model's ASA sweep; "
                                  "'per_sample': each forbidden training request at each block where the "
                                  "build's own ASA_random sweep on it complied (the public code's ASABench)"},
        "fragile_from": {"type": "string", "default": "asa_random", "description": "the attack whose LASR ranks layers"},
        "sweep_max_new_tokens": {"type": ["integer", "null"], "minimum": 1, "default": None,
                                 "description": "new tokens of each generation in the per_sample ASA sweep; null: "
                                                "the run's generation length (paper: 50, the ASA sweep's)"},
        "top_k": {"type": "integer", "minimum": 1, "default": 1},
        "alpha": {"type": "number", "exclusiveMinimum": 0, "default": 1.0, "description": "Eq. 1 size (1 = paper)"},
        "noise_statistics": {"enum": ["last_prompt", "each_position"], "default": "last_prompt",
                             "description": "whose statistics Eq. 1 takes: the row's clean last-prompt hidden "
                                            "state for one δ at every position (the ASA attack's), or each "
                                            "position's own, with its own z (the public train.py)"},
        "positions": {"type": "string", "default": "last_prompt+generated",
                      "description": "where the perturbation acts: the positions that predict the response "
                                     "(last prompt token + response tokens), the sites ASA perturbs"},
        "interpolation": {"oneOf": [{"const": "auto"}, {"type": "number", "minimum": 0, "maximum": 1}],
                          "default": "auto", "description": "λ, or auto: largest grid λ within the tolerance"},
        "lambda_grid": {"type": "array", "items": {"type": "number", "minimum": 0, "maximum": 1}, "minItems": 1,
                        "default": [0.1, 0.2, 0.3, 0.4, 0.5]},
        "capability_tolerance": {"type": "number", "minimum": 0, "maximum": 1, "default": 0.05},
        "max_length": MAX_LENGTH_SCHEMA,
    },
}


@torch.no_grad()
def asa_bench(model, tokenizer, forbidden: list[dict], settings: dict, seed: int, context: dict
              ) -> list[tuple[int, int]]:
    """ASABench on the training requests: (request index, block) for every block at which ASA_random
    (Eq. 1 at ``settings["alpha"]``, one seeded direction per request, at ``settings["positions"]``,
    ``settings["sweep_max_new_tokens"]`` new tokens, else the run's generation length) made the model
    comply with ``forbidden[index]``, as the build's judge labels it (``forbidden_request_label``).
    Every block is swept, as the paper's ASA sweep."""
    generation, pad, L = context["generation"], tokenizer.pad_token_id, n_layers(model)
    new_tokens = settings["sweep_max_new_tokens"] or generation["max_new_tokens"]
    prompts = [prompt_token_ids(tokenizer, r["prompt"], context["chat_template"]) for r in forbidden]
    sites = [hidden_index(block, L) for block in range(L)]
    h_last, _ = prompt_activations(model, prompts, sites, pad, generation["batch_size"])  # [N, L, d]
    z = random_directions(len(prompts), 1, h_last.shape[-1], True, seed)[0]
    rows = [(i, block) for block in range(L) for i in range(len(prompts))]  # the attack's order: prompts fastest
    vectors = torch.cat([asa_random_vectors(h_last[:, block], z, settings["alpha"], "eq1") for block in range(L)])
    texts = generate_sweep(model, tokenizer, [prompts[i] for i, _ in rows], new_tokens,
                           generation["batch_size"], torch.tensor([sites[block] for _, block in rows]), vectors,
                           torch.full((len(rows),), position_code(settings["positions"])),
                           desc="lapt: ASA sweep on the training requests")
    coherent = context["judges"].get("coherent")
    return [(i, block) for (i, block), text in zip(rows, texts)
            if forbidden_request_label(text, forbidden[i], coherent) == "harmful"]


def fragile_layers(lasr_by_layer: dict[int, float], top_k: int) -> list[int]:
    """The ``top_k`` layers with the highest LASR (ties: the shallower layer)."""
    ranked = sorted(lasr_by_layer, key=lambda layer: (-lasr_by_layer[layer], layer))
    return sorted(ranked[:top_k])


@torch.no_grad()
def interpolate(model: torch.nn.Module, original: dict[str, torch.Tensor], trained: dict[str, torch.Tensor],
                lam: float) -> None:
    """Set the weights to λ·trained + (1 − λ)·original, in place (λ = 0: the original exactly)."""
    for name, param in model.state_dict().items():
        if lam == 0:
            param.copy_(original[name])
        elif lam == 1:
            param.copy_(trained[name])
        else:
            param.copy_((lam * trained[name].float() + (1 - lam) * original[name].float()).to(param.dtype))


def choose_lambda(grid: list[float], accuracy: dict[float, float], base: float, tolerance: float) -> float:
    """Largest λ whose accuracy is ≥ base − tolerance; the smallest λ when none is (the paper does
    not say; the build logs it, and the smallest grid λ is the nearest to the original model)."""
    within = [lam for lam in grid if accuracy[lam] >= base - tolerance]
    return max(within) if within else min(grid)


# benign accuracy on real data is the coherent judge's usable-answer rate (jobs/variants.py)
@VARIANTS.register("lapt", SCHEMA, kind="full", needs=("fragile_layers", "benign_accuracy"),
                   reads_judges=("coherent",))
def build_lapt(model, tokenizer, records: list[dict], settings: dict, seed: int, context: dict):
    data = defense_data(tokenizer, records, context["chat_template"], settings["max_length"])
    L, layers, report = n_layers(model), settings["layers"], {}
    safe_pairs = [(p, refusal) for p, refusal, _ in data.forbidden]
    if layers == "per_sample":
        bench = asa_bench(model, tokenizer, [r for r in records if r["kind"] == "forbidden"], settings, seed, context)
        layers = sorted({block for _, block in bench})
        report["asa_bench"] = {"pairs": len(bench), "requests": len({i for i, _ in bench}),
                               "of_requests": len(safe_pairs), "blocks": L,
                               "pairs_by_block": {b: sum(block == b for _, block in bench) for b in layers}}
        log.info("lapt: ASABench, %d (request, block) pairs that complied under ASA_random, %d of %d training "
                 "requests; pairs by block %s", len(bench), report["asa_bench"]["requests"], len(safe_pairs),
                 report["asa_bench"]["pairs_by_block"])
        if bench:
            safe_pairs = [safe_pairs[i] for i, _ in bench]
            own_block = [block for _, block in bench] + [None] * len(data.benign)
            drawn_blocks = [block for _, block in bench]  # benign rows: blocks in ASABench's proportions
        else:  # no block broke any request: nothing marks one block as more fragile than another
            log.warning("lapt: no training request complied under ASA_random at any block; every row is trained "
                        "at a block drawn from all %d", L)
            layers = list(range(L))
            own_block, drawn_blocks = [None] * (len(safe_pairs) + len(data.benign)), layers
    else:
        if layers == "fragile":
            layers = fragile_layers(context["fragile_layers"], settings["top_k"])
        own_block, drawn_blocks = [None] * (len(safe_pairs) + len(data.benign)), list(layers)
    own_site = torch.tensor([-1 if b is None else hidden_index(b, L) for b in own_block])
    sites = torch.tensor([hidden_index(b, L) for b in drawn_blocks])
    log.info("lapt: perturbing blocks %s", layers)
    original = {k: v.detach().clone() for k, v in model.state_dict().items()}
    pairs = safe_pairs + data.benign
    size, pad, device = settings["batch_size"], tokenizer.pad_token_id, device_of(model)
    rows = Sampler(len(pairs), size, seed)
    gen = torch.Generator().manual_seed(seed)
    code = position_code(settings["positions"])

    def step(_):
        chosen = rows()
        batch = pair_batch(pairs, chosen, 1, pad, device)
        b = len(batch.input_ids)
        drawn, own = sites[torch.randint(len(sites), (b,), generator=gen)], own_site[chosen]
        site = torch.where(own >= 0, own, drawn).to(device)
        with torch.no_grad():
            clean = residual_stream(model, batch)
        h = torch.stack(clean)[site, torch.arange(b, device=device)].float()  # [b, T, d]
        if settings["noise_statistics"] == "last_prompt":
            h = h[torch.arange(b, device=device), batch.prompt_end - 1]
        z = torch.randn(*h.shape, generator=gen).to(device)  # fresh noise every step
        delta = settings["alpha"] * eq1_normalise(z, h)
        with intervene(model, Perturbation(site, delta, torch.full((b,), code, device=device), batch.prompt_end)):
            loss = token_ce(model(**batch.model_inputs()).logits, batch.labels)
        return {"loss": loss}

    for p in model.parameters():
        p.requires_grad_(True)
    history = optimise(model, settings, step, "lapt")
    for p in model.parameters():
        p.requires_grad_(False)
    trained = {k: v.detach().clone() for k, v in model.state_dict().items()}
    lam = settings["interpolation"]
    selection = {}
    if lam == "auto":
        interpolate(model, original, trained, 0.0)
        base = context["benign_accuracy"](model)
        for candidate in settings["lambda_grid"]:
            interpolate(model, original, trained, candidate)
            selection[candidate] = context["benign_accuracy"](model)
        lam = choose_lambda(settings["lambda_grid"], selection, base, settings["capability_tolerance"])
        log.info("lapt: benign accuracy original %.3f, by λ %s -> λ = %.2f", base, selection, lam)
        selection = {"base": base, **{str(k): v for k, v in selection.items()}}
    interpolate(model, original, trained, lam)
    return model, {"history": history, "lambda": lam, "layers": list(layers), "lambda_selection": selection, **report}
