"""tests/planted_bugs.py stays usable: every planted change still applies to today's code and
names tests that exist. (Running the harness itself takes minutes: it is run by hand.)"""

import os
import sys

import pytest
from conftest import ROOT

sys.path.insert(0, os.path.join(ROOT, "tests"))
import planted_bugs  # noqa: E402


@pytest.mark.parametrize("bug", planted_bugs.BUGS, ids=lambda b: b.name)
def test_the_planted_change_applies_and_names_real_tests(bug, tmp_path):
    with open(os.path.join(ROOT, bug.path)) as f:
        assert f.read().count(bug.old) == 1, (bug.path, bug.old)
    for node in bug.tests:
        path, _, name = node.partition("::")
        with open(os.path.join(ROOT, path)) as f:
            assert not name or f"def {name}(" in f.read(), node


def _tiny_project(dest):
    """A stand-in project: one function, one test of it, and a comment no test reads."""
    os.makedirs(os.path.join(dest, "tests"))
    with open(os.path.join(dest, "tiny.py"), "w") as f:
        f.write("# a comment\ndef answer():\n    return 42\n")
    with open(os.path.join(dest, "tests", "test_tiny.py"), "w") as f:
        f.write("from tiny import answer\n\n\ndef test_answer():\n    assert answer() == 42\n")


def test_the_harness_tells_a_caught_bug_from_a_missed_one(monkeypatch, capsys):
    caught = planted_bugs.Bug("wrong_answer", "returns 41", "tiny.py", "return 42", "return 41",
                              ("tests/test_tiny.py",))
    missed = planted_bugs.Bug("comment", "a comment changes", "tiny.py", "# a comment",
                              "# another comment", ("tests/test_tiny.py",))
    monkeypatch.setattr(planted_bugs, "BUGS", (caught, missed))
    monkeypatch.setattr(planted_bugs, "_copy_project", _tiny_project)
    assert planted_bugs.main(["wrong_answer"]) == 0
    assert planted_bugs.main([]) == 1
    out = capsys.readouterr().out
    assert "CAUGHT wrong_answer" in out and "MISSED comment" in out
    assert "1 of 2 planted bugs caught; missed: comment" in out
