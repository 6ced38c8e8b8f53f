"""Every ``from asr.X import name`` in the package, function-local ones included, names something
that exists. Function-local imports keep command start-up light but are only executed on the path
that needs them; this catches a moved or renamed helper before a recipe run does."""
from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "asr"


def _asr_imports() -> list[tuple[str, int, str, str]]:
    out = []
    for f in sorted(PKG.rglob("*.py")):
        tree = ast.parse(f.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("asr") and node.level == 0:
                for alias in node.names:
                    out.append((str(f.relative_to(PKG.parent)), node.lineno, node.module, alias.name))
    return out


def test_every_asr_import_resolves():
    missing = []
    for where, line, module, name in _asr_imports():
        if module.startswith("asr.generative.demos") or name == "*":
            continue
        try:
            mod = importlib.import_module(module)
        except ImportError as e:
            missing.append(f"{where}:{line}: {module} ({e})")
            continue
        if not hasattr(mod, name):
            try:
                importlib.import_module(f"{module}.{name}")
            except ImportError:
                missing.append(f"{where}:{line}: {module} has no {name!r}")
    assert not missing, "\n".join(missing)


def test_the_check_sees_function_local_imports():
    found = {(m, n) for _, _, m, n in _asr_imports()}
    assert ("asr.gmm.system", "load_system") in found       # imported inside functions only
    if not found:
        pytest.fail("no imports found")
