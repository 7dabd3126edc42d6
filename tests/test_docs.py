"""README.md and .ci/run must say the same thing: CI runs exactly the README's test command."""

import os
import re

from conftest import ROOT


def _bash_blocks(text):
    return re.findall(r"```bash\n(.*?)```", text, re.S)


def test_ci_runs_the_readme_test_command():
    readme = open(os.path.join(ROOT, "README.md")).read()
    first, second = _bash_blocks(readme)[:2]
    assert "python -m jaxcolor.train" in first and "pip install" in first
    test_command = second.strip()
    assert "pytest" in test_command
    ci = open(os.path.join(ROOT, ".ci", "run")).read()
    assert test_command in ci.splitlines()
