"""infra is the bottom layer: it imports nothing from preprocess or trainer."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ABOVE = {"infra": {"preprocess", "trainer"}, "preprocess": {"trainer"}}


def imported_packages(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_no_module_imports_from_a_layer_above_it():
    offences = []
    for package, forbidden in ABOVE.items():
        for path in (REPO / package).rglob("*.py"):
            bad = imported_packages(path) & forbidden
            if bad:
                offences.append(f"{path.relative_to(REPO)} imports {sorted(bad)}")
    assert offences == []
