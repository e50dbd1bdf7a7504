"""MONAI without its import-everything start-up: what octopi uses works, the rest is not
loaded (nor the packages MONAI imports only for features octopi does not use), and MONAI's own
functions are left as they were."""

from __future__ import annotations

import json
import os
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
    "optional_import": monai.utils.module.optional_import.__module__,
    "optional_import_reexported": monai.utils.optional_import is monai.utils.module.optional_import,
    "loaded": sorted(n for n in DEFERRED if type(sys.modules.get(n)).__name__ == "module"),
}))
"""
DEFERRED = ["pandas", "matplotlib.pyplot", "scipy.signal", "scipy.stats", "sklearn.metrics"]
DEFERRED += ["skimage.morphology"]
_PROBE = _PROBE.replace("import json, sys", f"import json, sys\nDEFERRED = {DEFERRED!r}", 1)

# Each deferred object works once used: a function called, a class in isinstance, a module
# whose attribute is read, pyplot imported plainly; and MONAI's optional_import called after
# the import gives the real module again.
_USE_DEFERRED = """
import json, sys
import numpy as np
from octopi.models.monai_import import Deferred, import_monai
import_monai()
import monai.data.ultrasound_confidence_map as confidence_map
import monai.data.utils as data_utils
import monai.utils.profiling as profiling
from monai.utils import optional_import
deferred = [type(confidence_map.hilbert) is Deferred, type(data_utils.DataFrame) is Deferred]
import pandas
import matplotlib.pyplot as plt
late, found = optional_import("scipy.signal", name="hilbert")
print(json.dumps({
    "deferred": deferred,
    "hilbert": confidence_map.hilbert(np.ones(4)).shape[0],
    "isinstance": isinstance(pandas.DataFrame(), data_utils.DataFrame),
    "attribute": profiling.pd.DataFrame is pandas.DataFrame,
    "pyplot": callable(plt.figure),
    "late": [type(late).__name__, found],
}))
"""


def _probe(code: str = _PROBE) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
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
    assert found["loaded"] == []  # each imported by MONAI's modules without the deferral


def test_what_monai_imports_for_other_features_loads_when_used() -> None:
    found = _probe(_USE_DEFERRED)
    assert found["deferred"] == [True, True]
    assert found["hilbert"] == 4
    assert found["isinstance"] and found["attribute"] and found["pyplot"]
    assert found["late"] == ["function", True]  # after import_monai: MONAI's own behaviour


def test_the_walk_and_optional_import_functions_are_monais_own_again() -> None:
    found = _probe()
    assert found["walk"] == "monai.utils.module"
    assert found["walk_reexported"]
    assert found["optional_import"] == "monai.utils.module"
    assert found["optional_import_reexported"]


def test_after_a_plain_import_monai_it_changes_nothing() -> None:
    code = (
        "import monai, sys; n = len([m for m in sys.modules if m.startswith('monai')]); "
        "from octopi.models.monai_import import import_monai; import_monai(); "
        "print(n == len([m for m in sys.modules if m.startswith('monai')]), n > 380)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["True", "True"]


def test_transformers_and_torchvision_where_installed_are_deferred(tmp_path) -> None:
    """GPU images often have both; TransCheX imported transformers' BERT at import time (2.9 s
    of 5.6 s for MONAI in such a Python). Stand-in packages (they record being imported, and
    TransCheX's BertConfig resolves to them when used) show that neither is imported any more."""
    for package in ("transformers", "torchvision"):
        folder = tmp_path / package
        folder.mkdir()
        (folder / "__init__.py").write_text(
            "import os\nopen(os.environ['IMPORTED'], 'a').write(__name__ + '\\n')\n"
            "class BertConfig:\n    pass\n"
        )
    imported = tmp_path / "imported.txt"
    imported.touch()
    code = (
        "import json, sys\n"
        "from octopi.models.monai_import import Deferred, import_monai\n"
        "import_monai()\n"
        "import monai.networks.nets.transchex as transchex\n"
        "before = open(sys.argv[1]).read().split()\n"
        "deferred = type(transchex.BertConfig) is Deferred\n"
        "config = transchex.BertConfig()\n"
        "print(json.dumps({'before': before, 'deferred': deferred,\n"
        "                  'used': type(config).__module__}))\n"
    )
    env = {**os.environ, "IMPORTED": str(imported)}
    env["PYTHONPATH"] = f"{tmp_path}:{env.get('PYTHONPATH', '')}"
    out = subprocess.run(
        [sys.executable, "-c", code, str(imported)],
        capture_output=True, text=True, check=True, env=env,
    ).stdout  # fmt: skip
    found = json.loads(out.strip().splitlines()[-1])
    assert found["before"] == []  # neither imported by import_monai
    assert found["deferred"] and found["used"] == "transformers"  # imported once used
