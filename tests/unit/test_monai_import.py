"""MONAI without its import-everything start-up: what octopi uses works, the rest is not
loaded, and MONAI's own walk function is left as it was."""

from __future__ import annotations

import json
import subprocess
import sys

_PROBE = """
import json, sys
from octopi.models.monai_import import import_monai
import_monai()
import_monai()  # a second call is a no-op
import torch
from monai.networks.nets import UNet
from monai.losses import DiceCELoss
from monai.data.utils import compute_importance_map
import monai, monai.utils, monai.utils.module
net = UNet(3, 1, 3, (4, 8), (2,), num_res_units=1)
logits = net(torch.zeros(1, 1, 16, 16, 16))
loss = DiceCELoss(to_onehot_y=True, softmax=True)(logits, torch.zeros(1, 1, 16, 16, 16))
print(json.dumps({
    "shape": list(logits.shape),
    "loss_finite": bool(torch.isfinite(loss)),
    "importance": list(compute_importance_map((4, 4, 4), mode="gaussian").shape),
    "version": monai.__version__,
    "walk": monai.utils.module.load_submodules.__module__,
    "walk_reexported": monai.utils.load_submodules is monai.utils.module.load_submodules,
    "modules": sorted(name for name in sys.modules if name.startswith("monai")),
}))
"""


def _probe() -> dict:
    out = subprocess.run(
        [sys.executable, "-c", _PROBE], capture_output=True, text=True, check=True
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def test_what_octopi_uses_works_and_the_rest_is_not_loaded() -> None:
    found = _probe()
    assert found["shape"] == [1, 3, 16, 16, 16]
    assert found["loss_finite"]
    assert found["importance"] == [4, 4, 4]
    assert found["version"][0].isdigit()
    # MONAI's walk would have loaded these (and ~170 more modules) too:
    modules = set(found["modules"])
    for untouched in ("monai.auto3dseg", "monai.bundle", "monai.fl", "monai.visualize"):
        assert untouched not in modules
    assert len(modules) < 330, len(modules)  # about 250 against about 430 after import monai


def test_the_walk_function_is_monais_own_again() -> None:
    found = _probe()
    assert found["walk"] == "monai.utils.module"
    assert found["walk_reexported"]


def test_after_a_plain_import_monai_it_changes_nothing() -> None:
    code = (
        "import monai, sys; n = len([m for m in sys.modules if m.startswith('monai')]); "
        "from octopi.models.monai_import import import_monai; import_monai(); "
        "print(n == len([m for m in sys.modules if m.startswith('monai')]), n > 380)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["True", "True"]
