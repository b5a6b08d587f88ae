"""Every property in properties/ is paired with its witness by name, as the report pairs
them (``report/junit.py``: ``test_witness_<claim>`` beside ``test_<claim>``).

A witness named any other way still runs, but the report then shows the property as having
no working witness and the witness as a property that is missing: both wrong.
"""

import ast
from pathlib import Path

import pytest

PROPERTIES = Path(__file__).resolve().parents[1] / "properties"
PREFIX = "test_witness_"


def _tests(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return [
        n.name for n in tree.body if isinstance(n, ast.FunctionDef) and n.name.startswith("test_")
    ]


FILES = sorted(p for p in PROPERTIES.glob("test_*.py"))


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_every_witness_names_a_property_in_its_file(path: Path) -> None:
    names = set(_tests(path))
    orphans = [w for w in names if w.startswith(PREFIX) and "test_" + w[len(PREFIX) :] not in names]
    assert not orphans, f"{path.name}: witnesses with no property of that name: {orphans}"


def test_the_rule_catches_a_misnamed_witness(tmp_path: Path) -> None:
    bad = tmp_path / "test_x.py"
    bad.write_text("def test_claim():\n    pass\n\ndef test_witness_clam():\n    pass\n")
    with pytest.raises(AssertionError, match="test_witness_clam"):
        test_every_witness_names_a_property_in_its_file(bad)


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_every_property_in_its_file_has_a_witness(path: Path) -> None:
    """The other direction: a property with no ``test_witness_<claim>`` beside it is a
    claim nobody showed can fail (the project's rule: every property has a witness)."""
    names = set(_tests(path))
    bare = [
        n for n in names if not n.startswith(PREFIX) and PREFIX + n[len("test_") :] not in names
    ]
    assert not bare, f"{path.name}: properties with no witness of that name: {sorted(bare)}"


def test_the_rule_catches_a_property_without_a_witness(tmp_path: Path) -> None:
    bad = tmp_path / "test_y.py"
    bad.write_text("def test_claim():\n    pass\n\ndef test_witness_claim():\n    pass\n\n"
                   "def test_alone():\n    pass\n")  # fmt: skip
    with pytest.raises(AssertionError, match="test_alone"):
        test_every_property_in_its_file_has_a_witness(bad)
