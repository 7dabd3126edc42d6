"""`imagenette.py` at 128x128: the same photos, splits, filter, model, batch and number of steps
(so the two compare at equal examples seen), only the resolution differs. A step costs about 4x
the 64x64 one (4x the pixels): 3.0-4.3 s on the shared 2-core host at load 5-7 (a 40-step run,
jax 0.10.2), so 1,500 steps take 1.5-2 hours there; it is meant for a faster machine.

Experiment files are loaded by path, not as a package, so this one loads `imagenette.py` beside
it by path too: one definition of the recipe, whatever the working directory.
"""

import importlib.util
import os

_spec = importlib.util.spec_from_file_location(
    "imagenette64", os.path.join(os.path.dirname(os.path.abspath(__file__)), "imagenette.py"))
_imagenette = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_imagenette)


def get_config():
    c = _imagenette.get_config()
    c.data.image_size = 128
    return c
