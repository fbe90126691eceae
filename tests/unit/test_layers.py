"""The product package never imports the lab: dockship_lab uses dockship, not the other way."""

from __future__ import annotations

import ast
from pathlib import Path

import dockship

PRODUCT = Path(dockship.__file__).resolve().parent
LAB = "dockship_lab"


def _imported_modules(tree: ast.AST) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
    return found


def test_no_module_of_dockship_imports_the_lab():
    sources = sorted(PRODUCT.rglob("*.py"))
    assert len(sources) > 10, PRODUCT
    offenders = [f"{path.relative_to(PRODUCT.parent)}:{line} imports {name}"
                 for path in sources
                 for line, name in _imported_modules(ast.parse(path.read_text(), str(path)))
                 if name == LAB or name.startswith(LAB + ".")]
    assert offenders == []


def test_the_lab_is_not_inside_the_product_package():
    assert not (PRODUCT / "lab").exists()
