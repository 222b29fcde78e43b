"""Puts the test suite's shared helpers on ``sys.path``: the line client (tests/lineclient.py)
and the real mail server (tests/integration/mailserver.py) are the tests' own, not copies.

Imported for its effect, before ``from lineclient import ...``.  The directories are appended,
so a module of benchmarks/ wins over one of the same name in tests/.  mypy finds the same
modules through ``mypy_path = "tests"`` in pyproject.toml.
"""

from __future__ import annotations

import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent.parent / "tests"
for _path in (TESTS, TESTS / "integration"):
    if str(_path) not in sys.path:
        sys.path.append(str(_path))
