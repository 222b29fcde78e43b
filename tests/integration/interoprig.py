"""Courier folders that no client has opened read-write (issue 15 point 1), for the interop
tests: Courier derives such a folder's UIDVALIDITY from the clock until a read-write SELECT
writes its UID database."""

from __future__ import annotations

import os
import subprocess
import time
import uuid

from imapservers import ImapServer


def new_courier_folder(server: ImapServer, user: str) -> str:
    """A folder made in the Maildir (``maildirmake -f``, as an administrator or a delivery
    agent makes one; Courier's own CREATE writes the UID database at once): its name as the
    server spells it.  Mail for it goes into its ``new/`` (``server.deliver``), as a delivery
    agent's does, so no client opens it read-write."""
    name = "T-" + uuid.uuid4().hex[:8]
    maildir = server.dir / "home" / user / "Maildir"
    subprocess.run(["maildirmake.courier", "-f", name, str(maildir)], check=True, timeout=30)
    owner = maildir.stat()
    for path in [maildir / f".{name}", *(maildir / f".{name}").rglob("*")]:
        os.chown(path, owner.st_uid, owner.st_gid)
    return server.mailbox(name)


def unsettled_folder(server: ImapServer, user: str) -> str:
    """A new Courier folder with one message; checked: its UIDVALIDITY changes from one STATUS
    to the next, a second apart."""
    box = new_courier_folder(server, user)
    server.deliver(user, "first", mailbox=box)
    first = server.uidvalidity(user, box)
    time.sleep(1.1)
    assert server.uidvalidity(user, box) != first, "the folder's UIDVALIDITY held still"
    return box
