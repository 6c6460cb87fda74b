"""MEMIT hyperparameters: one documented dataclass, plus presets per model.

λ is stored relative to d_ff (``lam_per_dff``) because over the statistics sample
E[kᵀC₀⁻¹k] = d_ff: the same raw λ weighs preservation ~10× more on a model with 10× smaller
d_ff (docs/algorithm.md §5). The paper's GPT-J λ = 15,000 is 15,000 / 16,384 ≈ 0.92 per d_ff.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

# The fields that the target vectors depend on are marked, and the target cache's key is made of
# them (target_dict): a new setting of the target loop marked here cannot be forgotten by the key.
# Grouping requests into chunks (batch_tokens) changes nothing but the float summation order.
TARGETS = {"targets": "always"}
STOPS = {"targets": "unless the paper's rule"}  # paper: the keys stay as they were before stopping rules
LATER = {"targets": "when not the default"}  # added later: at their defaults, earlier caches stay valid


@dataclass
class RomeConfig:
    clamp_norm_factor: float = 4.0  # ROME's target vectors may move further (docs/algorithm.md §2)


@dataclass
class FtConfig:
    """FT-L (ROME paper's constrained fine-tuning): Adam on the layer's MLP output weights, the
    change bounded elementwise by ``norm_bound``; FT-W replaces the bound by ``weight_decay``."""
    lr: float = 5e-4
    steps: int = 25
    norm_bound: float = 5e-4
    weight_decay: float = 0.5


@dataclass
class AlphaEditConfig:
    """The null space of C₀ is spanned by eigenvectors with eigenvalue < ``null_threshold``
    (AlphaEdit's value, on C₀ normalised per token as here); ``alpha`` is its ridge term α.

    An absolute threshold does not carry over between models: on SmolLM2 2·10⁻² calls "null"
    directions that hold a large share of ordinary text's key energy. With ``null_energy`` set, the
    null space is instead the smallest eigendirections that together hold at most that share of tr C₀.
    """
    null_threshold: float = 2e-2
    null_energy: float | None = None
    alpha: float = 1.0


@dataclass
class EncoreConfig:
    """ENCORE (Gupta et al., 2025): MEMIT whose facts stop as soon as each target is the most
    probable continuation (``stop_margin`` 0, their "most-probable early stopping") and whose
    update carries a norm term on ΔW, here the ridge term (``ridge``, in the units of
    ``MemitHyperParams.ridge``)."""
    stop_margin: float = 0.0
    ridge: float = 1.0


# The method settings' names before they had dataclasses of their own: files written then (and the
# sweep scripts' changes) still use them, and from_dict reads them into the groups.
FLAT_NAMES = {"rome_clamp_norm_factor": ("rome", "clamp_norm_factor"),
              **{f"ft_{k}": ("ft", k) for k in ("lr", "steps", "norm_bound", "weight_decay")},
              **{k: ("alphaedit", k) for k in ("null_threshold", "null_energy", "alpha")}}
GROUPS = {"rome": RomeConfig, "ft": FtConfig, "alphaedit": AlphaEditConfig, "encore": EncoreConfig}


@dataclass
class MemitHyperParams:
    layers: list[int] = field(default_factory=lambda: [3, 4, 5, 6, 7, 8])
    # Preservation weight λ of λC₀ + KKᵀ: λ = lam_per_dff · d_ff, unless ``lam`` is given.
    lam_per_dff: float = 15_000 / 16_384
    lam: float | None = None
    # Target-vector optimisation (docs/algorithm.md §2.1).
    v_lr: float = field(default=0.5, metadata=TARGETS)
    v_num_grad_steps: int = field(default=25, metadata=TARGETS)
    v_loss_threshold: float = field(default=0.05, metadata=TARGETS)
    kl_factor: float = field(default=0.0625, metadata=TARGETS)
    v_weight_decay: float = field(default=0.5, metadata=TARGETS)
    clamp_norm_factor: float = field(default=0.75, metadata=TARGETS)  # ROME passes its own here
    # What the clamp is a share of: "fact", each fact's own ‖h‖ at the subject (the paper's), or
    # "typical", the median residual norm of ordinary text at that block (residual.py), the same for all.
    clamp_ref: str = field(default="fact", metadata=LATER)
    # Where δ enters when a norm follows the MLP (Gemma 2/3, postnorm.py): "mlp", on the MLP's
    # output before that norm, so that the target is one the edited layer can reach; Adam's step is
    # then v_lr_post_norm per coordinate in units of that output's rms, and the clamp is a share
    # of its norm. "residual": on the block's output, as for every other model (the paper's).
    post_norm_delta: str = field(default="mlp", metadata=LATER)
    v_lr_post_norm: float = field(default=0.1, metadata=LATER)
    # δ's start: "zero" (the paper's) or "gradient": one step along the normalised gradient of the
    # loss at δ = 0, to v_init_scale of the clamp, before Adam goes on (UltraEdit's closed-form
    # targets take such a step); fewer steps when the first direction is already a good one.
    v_init: str = field(default="zero", metadata=LATER)
    v_init_scale: float = field(default=0.5, metadata=LATER)
    # When each request's optimisation stops (targets.py): "paper" (loss below v_loss_threshold,
    # or the step cap) or "margin" (every target token top-1 by stop_margin nats in every prompt
    # row; or δ at the clamp with its margin gaining < plateau_gain over plateau_steps steps).
    stop: str = field(default="paper", metadata=STOPS)
    stop_margin: float = field(default=1.0, metadata=STOPS)
    plateau_steps: int = field(default=4, metadata=STOPS)
    plateau_gain: float = field(default=0.1, metadata=STOPS)
    # Verification (methods/rounds.py): requests that do not hold on the edited model are edited
    # again, up to this many rounds in all, the earlier rounds' keys kept in the preservation term.
    rounds: int = 1
    # Which requests are checked after a round between the first and the last: "all", or only
    # those it "edited" (a round edits a few and rarely breaks the rest; the last round's check
    # covers every request whichever is set, so what is reported is always checked).
    middle_check: str = "all"
    # A ridge term λ_I·I added to λC₀ + KKᵀ, which bounds ‖ΔW‖: λ_I = ridge · λ · tr(C₀)/d_ff,
    # relative to C₀'s mean eigenvalue so that it carries over between models (ENCORE's norm term).
    # MEMIT's own closed form only (memit, memit-seq); the other methods' solvers leave C₀ as it is.
    ridge: float = 0.0
    # Context prefixes put before each prompt; None generates them from the model with ``seed``.
    prefixes: list[str] | None = field(default=None, metadata=TARGETS)
    prefix_starts: list[str] = field(default_factory=lambda: ["The", "Therefore", "Because", "I", "You"],
                                     metadata=TARGETS)
    prefix_tokens: int = field(default=10, metadata=TARGETS)
    seed: int = field(default=0, metadata=TARGETS)
    # Second-moment statistics (C₀).
    stats_corpus: str | None = None  # None: the small corpus bundled with memit
    stats_tokens: int = 100_000
    stats_seq_len: int = 256
    # Forward passes are cut into batches of at most this many (padded) tokens.
    batch_tokens: int = field(default=4096, metadata=TARGETS)
    # Side on which batched prompts are padded; results do not depend on it (tested).
    padding_side: str = field(default="right", metadata=TARGETS)
    # The preservation term, for ablations: "cov" is MEMIT's λC₀; "identity" replaces C₀ by I
    # (plain ridge regression on the edits); "none" sets λ = 0 (the minimum-norm ΔW with ΔK = R).
    preservation: str = "cov"
    # With preservation "identity": ‖ΔW_l‖/‖W_l‖ per edited layer, from a reference edit; λ is
    # then chosen per layer to give exactly that change (methods/ridge.py), not taken from ``lam``.
    match_rel_norms: list[float] | None = None
    # ROME and FT-L change one layer: this one, or else the middle of ``layers`` (5 of 3–8, as the
    # paper's ROME on GPT-J).
    single_layer: int | None = None
    # The other methods' own settings (``memit edit --method``), one dataclass each; MEMIT ignores them.
    rome: RomeConfig = field(default_factory=RomeConfig)
    ft: FtConfig = field(default_factory=FtConfig)
    alphaedit: AlphaEditConfig = field(default_factory=AlphaEditConfig)
    encore: EncoreConfig = field(default_factory=EncoreConfig)
    # Editing batch after batch (a journal, or ``memit eval --batch-size``): the statistics C₀ (and
    # AlphaEdit's projector) of the model as each batch finds it ("current", recomputed after
    # every batch), or of the unedited model the sequence started from ("base"), which is what
    # MEMIT's and AlphaEdit's own code do: they compute C₀ and P once and keep them.
    sequential_stats: str = "current"
    # Per-layer diagnostics in the delta's metadata: "cheap" (‖ΔW‖/‖W‖, cond, text change, key
    # overlap) or "full", which adds what the review of the paper asks for: the spectra of the
    # system and of KKᵀ, and how much the update directions of different requests overlap. Those
    # take more eigendecompositions and solves per layer, which at large N cost minutes.
    diagnostics: str = "cheap"

    def rome_layer(self) -> int:
        return self.single_layer if self.single_layer is not None else self.layers[(len(self.layers) - 1) // 2]

    def lambda_for(self, d_ff: int) -> float:
        return float(self.lam) if self.lam is not None else self.lam_per_dff * d_ff

    def to_dict(self) -> dict:
        return asdict(self)

    def target_dict(self) -> dict:
        """The settings the target vectors depend on (with the last edited layer, which the caller
        adds): the key of the target-vector cache, so runs that differ only in λ, the first layers,
        the preservation term or the statistics reuse one optimisation."""
        fields_ = TARGET_FIELDS | (STOP_FIELDS if self.stop != "paper" else set())  # paper: the keys stay as they were
        fields_ |= {f.name for f in fields(self) if f.name in LATER_FIELDS and getattr(self, f.name) != f.default}
        return {k: v for k, v in asdict(self).items() if k in fields_}

    def with_changes(self, changes: dict) -> MemitHyperParams:
        """A copy with ``changes`` applied: field names, a group's fields as a dict, or the flat names."""
        d = self.to_dict()
        merged = {k: {**d[k], **v} if k in GROUPS else v for k, v in changes.items()}  # a group's other fields stay
        return MemitHyperParams.from_dict({**d, **merged})

    @classmethod
    def from_dict(cls, d: dict) -> MemitHyperParams:
        d = dict(d)
        groups = {g: dict(d.pop(g, None) or {}) for g in GROUPS}
        for flat, (group, name) in FLAT_NAMES.items():
            if flat in d:
                groups[group][name] = d.pop(flat)
        unknown = set(d) - {f.name for f in fields(cls)}
        for g, config in GROUPS.items():
            unknown |= {f"{g}.{k}" for k in set(groups[g]) - {f.name for f in fields(config)}}
        if unknown:
            raise ValueError(f"unknown hyperparameter(s): {', '.join(sorted(unknown))}")
        return cls(**d, **{g: GROUPS[g](**groups[g]) for g in GROUPS})

    @classmethod
    def from_json(cls, path: str | Path) -> MemitHyperParams:
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise ValueError(f"{path}: cannot read hyperparameters ({e})") from None
        preset = data.pop("preset", None)
        base = preset_for(preset).to_dict() if preset else {}
        return cls.from_dict({**base, **data})


TARGET_FIELDS = frozenset(f.name for f in fields(MemitHyperParams) if f.metadata == TARGETS)
STOP_FIELDS = frozenset(f.name for f in fields(MemitHyperParams) if f.metadata == STOPS)
LATER_FIELDS = frozenset(f.name for f in fields(MemitHyperParams) if f.metadata == LATER)

PRESETS: dict[str, MemitHyperParams] = {
    # The paper's settings (docs/algorithm.md §1–2).
    "gpt-j": MemitHyperParams(layers=[3, 4, 5, 6, 7, 8], lam_per_dff=15_000 / 16_384),
    "gpt2-xl": MemitHyperParams(layers=[13, 14, 15, 16, 17], lam_per_dff=20_000 / 6_400),
    # SmolLM2-135M (30 blocks, d_ff 1536): chosen by measurement on counterfact-train, see
    # docs/presets.md. λ ≈ 1 per d_ff is the paper's GPT-J weight carried over by d_ff.
    "smollm2-135m": MemitHyperParams(layers=[3, 4, 5, 6, 7, 8], lam_per_dff=1.0, prefixes=[
        # Sampled prefixes are noise on this model ("The-1998-200. "), so the preset fixes
        # five plain ones of ~10 tokens with the paper's first words.
        "The weather was pleasant for most of the day. ",
        "Therefore, the committee decided to meet again soon. ",
        "Because of the delay, we arrived later than planned. ",
        "I read an interesting article this morning. ",
        "You can find more information in the library. ",
    ]),
}
# SmolLM2 as above with the paper's stopping rule and no re-edit rounds: the preset before
# per-fact stopping, kept so that earlier results can be reproduced (``--preset smollm2-135m-paper``).
PRESETS["smollm2-135m-paper"] = MemitHyperParams.from_dict(PRESETS["smollm2-135m"].to_dict())
# The default stops each fact at a 3-nat margin, re-edits what does not hold (up to 3 rounds), uses
# the first two prefixes only (three prompt rows per fact instead of six) and bounds ΔW with a ridge
# term of 1.0: chosen on counterfact-train by benchmarks/tune_stop.py (docs/presets.md).
PRESETS["smollm2-135m"] = replace(PRESETS["smollm2-135m"], stop="margin", stop_margin=3.0, rounds=3,
                                  prefixes=PRESETS["smollm2-135m"].prefixes[:2], ridge=1.0)

# Gemma 3 270M: the SmolLM2 preset with a weaker preservation term, a larger step for δ on the
# MLP output before Gemma's post-MLP norm, and the band that causal tracing suggests, chosen on
# counterfact-train by benchmarks/tune_gemma.py (docs/presets.md).
PRESETS["gemma3-270m"] = replace(PRESETS["smollm2-135m"], layers=[1, 2, 3, 4, 5, 6], lam_per_dff=0.1,
                                 v_lr_post_norm=0.3)

# Which preset a model gets by default, keyed by (model_type, number of blocks).
DEFAULT_PRESET = {("gptj", 28): "gpt-j", ("gpt2", 48): "gpt2-xl", ("llama", 30): "smollm2-135m",
                  ("gemma3_text", 18): "gemma3-270m"}


def preset_for(name: str) -> MemitHyperParams:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; known: {', '.join(PRESETS)}")
    return MemitHyperParams.from_dict(PRESETS[name].to_dict())


def default_hparams(model_type: str, n_blocks: int) -> MemitHyperParams:
    """The preset for a known model, else the paper's GPT-J settings on the early layers that exist."""
    name = DEFAULT_PRESET.get((model_type, n_blocks))
    if name:
        return preset_for(name)
    hp = preset_for("gpt-j")
    last = max(1, min(8, n_blocks * 8 // 28))
    first = max(0, last - 5)
    hp.layers = list(range(first, last + 1))
    return hp
