"""Layer-wise Adversarial Patch Training (arXiv 2506.16078; shared/papers/asa_lapt.md).

Full fine-tuning on (prompt, safe response) pairs (refusals for forbidden requests, answers
for the rest), cross-entropy on the response with the prompt masked, while every row is pushed
at one fragile layer, at the response positions, by a fresh Eq. 1 perturbation (a new z each
step, sized to the row's clean last-prompt hidden state, as the ASA attack it patches; with
``noise_statistics: each_position``, a z per position sized to that position's own hidden state,
as the public train.py). Fragile layers come from the aligned
model's ASA sweep (the top-k layers by LASR) or from a config list. Afterwards the weights are
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

from ..hooks import Perturbation, hidden_index, intervene, n_layers, position_code, residual_stream
from ..perturbation_size import eq1_normalise
from ..registry import VARIANTS
from ..training import MAX_LENGTH_SCHEMA, optim_properties, Sampler, device_of, optimise, pair_batch, token_ce
from .common import defense_data

log = logging.getLogger(__name__)

SCHEMA = {
    "type": "object", "additionalProperties": False, "required": ["steps", "lr"],
    "properties": {
        **optim_properties("cosine", 0.1),
        "layers": {"oneOf": [{"type": "array", "items": {"type": "integer", "minimum": 0}, "minItems": 1},
                             {"const": "fragile"}], "default": "fragile",
                   "description": "block indices, or 'fragile': the top_k layers of the aligned model's ASA sweep"},
        "fragile_from": {"type": "string", "default": "asa_random", "description": "the attack whose LASR ranks layers"},
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
    layers = settings["layers"]
    if layers == "fragile":
        layers = fragile_layers(context["fragile_layers"], settings["top_k"])
    sites = torch.tensor([hidden_index(b, n_layers(model)) for b in layers])
    log.info("lapt: perturbing blocks %s", layers)
    original = {k: v.detach().clone() for k, v in model.state_dict().items()}
    pairs = [(p, refusal) for p, refusal, _ in data.forbidden] + data.benign
    size, pad, device = settings["batch_size"], tokenizer.pad_token_id, device_of(model)
    rows = Sampler(len(pairs), size, seed)
    gen = torch.Generator().manual_seed(seed)
    code = position_code(settings["positions"])

    def step(_):
        batch = pair_batch(pairs, rows(), 1, pad, device)
        b = len(batch.input_ids)
        site = sites[torch.randint(len(sites), (b,), generator=gen)].to(device)
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
    return model, {"history": history, "lambda": lam, "layers": list(layers), "lambda_selection": selection}
