"""Run-wide hooks: a bare ``pytest`` runs the unit tests and says how to run the rest.

``testpaths`` (pyproject.toml) is ``tests/unit``: those need no servers and pass from a fresh
venv with the test extra.  The integration tests start a real Dovecot and Postfix, which need
Debian packages installed as root; ``bash scripts/test.sh`` installs them and runs everything.

Here rather than in tests/conftest.py: mypy checks all of tests/ with tests/ and
tests/integration as package bases (pyproject.toml [tool.mypy]), where a tests/conftest.py and
tests/integration/conftest.py would both be module ``conftest``.  These hooks are run-wide all
the same, and this file is loaded by every run that collects a unit test: the only runs that
need the hint.
"""

from __future__ import annotations

from pathlib import Path

import pytest

INTEGRATION = Path(__file__).resolve().parent.parent / "integration"
HOW = ("unit tests only: the integration tests (a real Dovecot and Postfix on loopback) run with "
       "'bash scripts/test.sh' (as root: it installs them), or 'pytest tests/integration' once "
       "the Debian packages are installed")


_collected_integration = pytest.StashKey[bool]()


def pytest_collection_finish(session: pytest.Session) -> None:
    session.config.stash[_collected_integration] = any(
        INTEGRATION in item.path.parents for item in session.items)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter,
                            config: pytest.Config) -> None:
    """After a run that collected no integration test, say how to run them."""
    if not config.stash.get(_collected_integration, True):
        terminalreporter.write_line(HOW)
