"""What a reload changes in each part of the service tree (the parts ``reload.Reloader`` runs).

* listeners: opened and closed where ``[line] listen``/``daytime`` changed; the TLS files of
  those kept read again (``listeners.ListenerSet``);
* the line service: ``[line]``'s limits and ``[log] commands`` for what comes next (the open
  connections keep their line length; the idle limit applies to all from now on);
* the mail bridge: ``[imap]`` for new logins, ``[smtp]`` for new sends, the login limits;
  logged-in users keep their IMAP sessions and watches;
* the accounts: added, removed, changed ones reconnect, waiting ones retry now;
* the log: ``[log] format`` and ``keep_files``.

Also the one-line summary systemd shows (``STATUS=``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Sequence
from dataclasses import fields
from typing import Any

from mailsocketd import logs
from mailsocketd.config import Config
from mailsocketd.line.factory import LineFactory
from mailsocketd.line.mail.commands import MailBridge
from mailsocketd.line.server import LineServer
from mailsocketd.listeners import ListenerSet, wanted_listeners
from mailsocketd.mail.accounts.service import AccountsService
from mailsocketd.reload import Change, Reloader

__all__ = ["add_parts", "changed_keys", "status_summary"]

UP_STATES = ("connected", "idling", "checking")


def changed_keys(section: str, old: Any, new: Any, skip: Sequence[str] = ()) -> list[str]:
    """The dotted keys whose values differ between two settings dataclasses."""
    if old is None or new is None:
        return [] if old is new else [f"[{section}] {'added' if old is None else 'removed'}"]
    return [f"{section}.{f.name}" for f in fields(old)
            if f.name not in skip and getattr(old, f.name) != getattr(new, f.name)]


def _listeners(listeners: ListenerSet) -> Any:
    def prepare(old: Config, new: Config) -> Awaitable[Change]:
        return listeners.prepare(wanted_listeners(new))
    return prepare


def _line(server: LineServer, factory: LineFactory) -> Any:
    def prepare(old: Config, new: Config) -> Change:
        changed = changed_keys("line", old.line, new.line, skip=("listen", "daytime"))
        changed += changed_keys("log", old.log, new.log)

        def commit() -> list[str]:
            server.config = new.line
            server.log_commands = new.log.commands
            factory.reconfigure()
            ours = logs.reconfigure(new.log.format, new.log.keep_files)
            if not ours and (old.log.format, old.log.keep_files) != (new.log.format,
                                                                     new.log.keep_files):
                return ["log.format and log.keep_files not applied: twistd's own observers "
                        "(--logger, --syslog) write the log"]
            return []

        return Change(commit=commit, summary=tuple(f"{key} changed" for key in changed
                                                   if "added" not in key))
    return prepare


def _mail(bridge: MailBridge) -> Any:
    def prepare(old: Config, new: Config) -> Change:
        changed = changed_keys("imap", old.imap, new.imap) + changed_keys("smtp", old.smtp,
                                                                          new.smtp)

        def commit() -> None:
            bridge.reconfigure(new.line, new.imap, new.smtp)

        return Change(commit=commit, summary=tuple(
            key if key.startswith("[") else f"{key} changed (for new logins and sends)"
            for key in changed))
    return prepare


def _accounts(accounts: AccountsService) -> Any:
    def prepare(old: Config, new: Config) -> Change:
        return Change(commit=lambda: accounts.reconfigure(new.accounts))
    return prepare


def add_parts(reloader: Reloader, *, listeners: ListenerSet, server: LineServer,
              factory: LineFactory, bridge: MailBridge, accounts: AccountsService) -> None:
    """Register the service tree's parts, the listeners first (binding a port can fail)."""
    reloader.add("listeners", _listeners(listeners))
    reloader.add("line", _line(server, factory))
    reloader.add("mail", _mail(bridge))
    reloader.add("accounts", _accounts(accounts))


def status_summary(server: LineServer, bridge: MailBridge, accounts: AccountsService,
                   reloader: Reloader) -> str:
    """One line for systemd's ``STATUS=``: clients, mail users, accounts up, reloads."""
    users, watching = bridge.session_counts()
    watchers = accounts.watchers
    up = sum(1 for w in watchers if w.state.state in UP_STATES)
    text = f"{server.open_connections} clients, {users} logged in, {watching} watching"
    if watchers:
        text += f"; accounts {up}/{len(watchers)} up"
    if reloader.reloads or reloader.failures:
        text += f"; {reloader.reloads} reloads, {reloader.failures} refused"
    return text
