"""A preset for Gemma 3 270M, chosen on counterfact-train only, from the SmolLM2 preset as it is.

The SmolLM2 preset is stated in relative units (λ per d_ff, a margin in nats, a ridge term
relative to C₀'s mean eigenvalue), so its transfer is the first configuration: the claim that it
carries over, measured. The others move what is not relative: the layer band (Gemma has 18
blocks, SmolLM2 30) and λ. The same sweep as tune_stop.py (sweep.py): ES/PS/NS/Score, perplexity
on wikitext-2 validation, known facts still known, steps, rounds and time per phase; resumable.

    python benchmarks/tune_gemma.py --n 50
"""

from __future__ import annotations

import sweep
import tune_stop
from pages.sweeps import stop_table

from memit.models.loading import cache_dir

CONFIGS: sweep.Configs = {
    "smollm2_preset": ("memit", {}),
    # after δ moved onto the MLP output before Gemma's post-MLP norm (postnorm.py, commit 0d44572):
    # the SmolLM2 preset with that default, and with λ and the step that the demo facts wanted
    "mlp_delta_smollm2_preset": ("memit", {}),
    "mlp_delta_lam0.1_lr0.3": ("memit", {"lam_per_dff": 0.1, "v_lr_post_norm": 0.3}),
    "mlp_delta_lr0.3": ("memit", {"v_lr_post_norm": 0.3}),
    "mlp_delta_lam0.3_lr0.3": ("memit", {"lam_per_dff": 0.3, "v_lr_post_norm": 0.3}),
    # the band causal tracing suggests on Gemma (benchmarks/results/gemma/trace)
    "mlp_delta_lam0.1_lr0.3_layers_1_6": ("memit", {"lam_per_dff": 0.1, "v_lr_post_norm": 0.3, "layers": [1, 2, 3, 4, 5, 6]}),
    # the stopping and verification settings, on that band: a smaller and a larger margin, and
    # verification without re-edit rounds
    **{f"mlp_delta_lam0.1_lr0.3_layers_1_6_{name}": ("memit", {"lam_per_dff": 0.1, "v_lr_post_norm": 0.3,
                                                                "layers": [1, 2, 3, 4, 5, 6], **change})
       for name, change in (("margin1", {"stop_margin": 1.0}), ("margin5", {"stop_margin": 5.0}),
                            ("rounds1", {"rounds": 1}))},
}

if __name__ == "__main__":
    sweep.main(__doc__, CONFIGS, tune_stop.plot, stop_table, "benchmarks/results/gemma_tuning",
               model="gemma3-270m", retention=True, checkpoint=cache_dir() / "targets")
