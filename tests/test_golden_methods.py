"""Every method writes exactly the delta it wrote when tests/golden/methods.safetensors was made:
a change of the edit pipeline that alters one bit of any method's output fails here."""

import torch

from golden.make_methods import __file__ as golden_script
from golden.make_methods import golden_deltas
from memit.eval.run import machine
from memit.files import load_tensors


def test_every_method_gives_the_stored_delta_bit_for_bit():
    stored, meta = load_tensors(golden_script.replace("make_methods.py", "methods.safetensors"))
    got = golden_deltas()
    assert sorted(got) == sorted(stored)
    # another torch build, or another CPU's kernels, may sum in another order: then each entry may
    # move by rounding of the tensor's own scale (ROME's rank-one chain carries it to its near-zero
    # entries), not only of its own size
    exact = meta.get("torch") == torch.__version__ and meta.get("cpu") == machine()["cpu"]
    for name, w in got.items():
        if exact:
            assert torch.equal(w, stored[name]), f"{name} differs from the golden delta (commit {meta['commit']})"
        else:
            scale = float(stored[name].abs().max())
            assert torch.allclose(w, stored[name], rtol=1e-4, atol=max(1e-6, 1e-5 * scale)), name
