"""The generated blocks of docs/results.md, by the name their markers carry there."""

from __future__ import annotations

from functools import partial

from .gemma import gemma_section
from .generated import generated_section
from .methods import alphaedit_section, ft_tuning_section, methods_section
from .one_batch import bands_section, preset_tuning_section, scaling_section, trace_section
from .sequential import margin_sequence_section, sequential_section
from .shipping import export_section
from .speed import edit_phases_section, gpu_check_section, gpu_speed_section, profile_section, speed_section
from .stopping import peer_section, stop_section

CF_EDIT = "../shared/data/counterfact/easyedit/counterfact-edit.json"

# The page's generated blocks, by the name their markers carry in docs/results.md.
BLOCKS = {
    "counterfact-scaling": partial(scaling_section, "counterfact", "scaling",
                                   f"memit eval --dataset counterfact --data {CF_EDIT} --n {{ns}} "
                                   "--out benchmarks/results/scaling"),
    "zsre-scaling": partial(scaling_section, "zsre", "scaling",
                            "memit eval --dataset zsre --data ../shared/data/zsre/zsre_mend_eval_portability_gpt4.json"
                            " --n {ns} --out benchmarks/results/scaling"),
    "train100": partial(scaling_section, "counterfact", "train100",
                        "memit eval --dataset counterfact --data ../shared/data/counterfact/easyedit/"
                        "counterfact-train.json --n {ns} --out benchmarks/results/train100"),
    "trace": trace_section,
    "bands": bands_section,
    "methods": methods_section,
    "sequential": sequential_section,
    "margin-sequence": margin_sequence_section,
    "alphaedit": alphaedit_section,
    "ft-tuning": ft_tuning_section,
    "stop": stop_section,
    "peer": peer_section,
    "export": export_section,
    "generated": generated_section,
    "gemma": gemma_section,
    "preset-tuning": preset_tuning_section,
    "speed": speed_section,
    "edit-phases": edit_phases_section,
    "profile": profile_section,
    "gpu-speed": gpu_speed_section,
    "gpu-check": gpu_check_section,
}
