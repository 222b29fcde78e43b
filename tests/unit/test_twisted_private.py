"""The canary for a Twisted upgrade: every private name in mailsocketd.twisted_private exists.

pyproject.toml allows a range of Twisted releases; this test is what makes that safe.  When it
fails, a Twisted release renamed or changed something the daemon reaches into: read the entry's
``why``, adapt the module named in ``used_in``, then update the declaration.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from twisted.application.internet import StreamServerEndpointService
from twisted.internet.abstract import FileDescriptor
from twisted.internet.endpoints import SSL4ServerEndpoint
from twisted.internet.testing import MemoryReactor
from twisted.mail import imap4, smtp
from twisted.protocols.haproxy._wrapper import HAProxyProtocolWrapper
from twisted.python.logfile import LogFile

import mailsocketd
import twisted
from mailsocketd.twisted_private import COPIED, SURFACE, Private

PACKAGE = Path(mailsocketd.__file__).resolve().parent

def log_file_closed_beneath() -> LogFile:
    """A LogFile whose file is closed without Twisted's close (which deletes ``_file``)."""
    log = LogFile("test.log", tempfile.mkdtemp())
    log._file.close()
    return log


# How to build an owner whose private names are set in __init__.
INSTANCES: dict[str, Callable[[], Any]] = {
    "twisted.mail.imap4.IMAP4Client": imap4.IMAP4Client,
    "twisted.mail.imap4.Command": lambda: imap4.Command(b"NOOP"),
    "twisted.mail.smtp.ESMTPSender": lambda: smtp.ESMTPSender(b"user", b"secret", None, b"id"),
    "twisted.application.internet.StreamServerEndpointService":
        lambda: StreamServerEndpointService(None, None),
    "twisted.internet.abstract.FileDescriptor": lambda: FileDescriptor(MemoryReactor()),
    "twisted.python.logfile.BaseLogFile": log_file_closed_beneath,
    "twisted.internet.endpoints.SSL4ServerEndpoint":
        lambda: SSL4ServerEndpoint(MemoryReactor(), 0, None),
    "twisted.protocols.haproxy._wrapper.HAProxyProtocolWrapper":
        lambda: HAProxyProtocolWrapper(None, None),  # type: ignore[arg-type]
}


def resolve(dotted: str) -> Any:
    """A module, or a class inside one, by its dotted name."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            found: Any = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for name in parts[cut:]:
            found = getattr(found, name)
        return found
    raise ImportError(dotted)


def source_of(module: str) -> str:
    return Path(importlib.import_module(module).__file__ or "").read_text()


@pytest.mark.parametrize("entry", SURFACE, ids=lambda e: f"{e.owner.rsplit('.', 1)[-1]}.{e.name}")
def test_each_private_name_is_still_there(entry: Private) -> None:
    owner = INSTANCES[entry.owner]() if entry.instance else resolve(entry.owner)
    assert hasattr(owner, entry.name), (
        f"Twisted {twisted.__version__} has no {entry.owner}.{entry.name}, which "
        f"{entry.used_in} relies on ({entry.why})")


@pytest.mark.parametrize("entry", SURFACE, ids=lambda e: f"{e.used_in}:{e.name}")
def test_each_declared_name_is_really_used_where_it_says(entry: Private) -> None:
    """A declaration outliving its use would hide what the code really depends on."""
    assert re.search(rf"\b{re.escape(entry.name)}\b", source_of(entry.used_in)), (
        f"{entry.used_in} no longer uses {entry.name}: drop it from twisted_private.SURFACE")


def test_every_module_private_function_of_twisted_we_call_is_declared() -> None:
    """``imap4._quote``-style calls anywhere in the package must be in SURFACE."""
    declared = {(e.owner.rsplit(".", 1)[-1], e.name) for e in SURFACE}
    used = set()
    for path in PACKAGE.rglob("*.py"):
        for module, name in re.findall(r"\b(imap4|smtp|tsmtp|basic|tcp|abstract)\.(_\w+)",
                                       path.read_text()):
            used.add(("smtp" if module == "tsmtp" else module, name))
    assert used <= declared, f"undeclared Twisted-private names: {sorted(used - declared)}"


@pytest.mark.parametrize("original", sorted(COPIED))
def test_methods_we_copied_are_unchanged_upstream(original: str) -> None:
    fingerprint, copy = COPIED[original]
    source = inspect.getsource(resolve(original))
    assert hashlib.sha256(source.encode()).hexdigest() == fingerprint, (
        f"Twisted {twisted.__version__} changed {original}; {copy} is a near-copy of it: "
        "compare the two, update the copy, then the fingerprint")


def test_the_private_helpers_still_behave_as_we_use_them() -> None:
    """Existing is not enough for the two functions whose output goes on the wire."""
    assert imap4._quote(b'a"b\\c') == b'"a\\"b\\\\c"'
