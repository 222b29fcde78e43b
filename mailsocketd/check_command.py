"""``mailsocketd-check``: the environment check, done properly, for Nagios, Icinga and friends.

Reads the daemon's TOML configuration, checks one account (connect, verified TLS, login, one
STATUS per configured mailbox) and prints one line in the monitoring-plugins format, exiting
0/1/2/3 for OK/WARNING/CRITICAL/UNKNOWN::

    $ mailsocketd-check --config /etc/mailsocketd/mailsocketd.toml --account work -w 50
    IMAP OK - work INBOX: 12 messages, 3 unseen, 0.045 s | time=0.045s messages=12 unseen=3;50;;0

Every text not of the plugin's own making (server replies, configuration values, arguments) is
passed through ``probe.plugin_text``, so a ``|`` in the line can only be the one that starts
the perfdata.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from twisted.internet import task
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.python.failure import Failure

from mailsocketd import __version__
from mailsocketd.config import ConfigError, load_config
from mailsocketd.mail.accounts.check import (
    UNKNOWN,
    Limits,
    Outcome,
    ProbeResult,
    Range,
    failed,
    parse_range,
    plugin_text,
    probe,
    verdict,
)
from mailsocketd.mail.accounts.config import AccountConfig
from mailsocketd.mail.accounts.service import AccountReactor

__all__ = ["choose_account", "main", "parse_arguments", "run_check"]


class _Parser(argparse.ArgumentParser):
    """Usage errors are UNKNOWN (exit 3) in the plugin convention, not argparse's 2."""

    def error(self, message: str) -> NoReturn:
        print(f"IMAP UNKNOWN - {self.prog}: {plugin_text(message)}")
        raise SystemExit(UNKNOWN)


def _positive(kind: type[int] | type[float]) -> Any:
    def convert(text: str) -> int | float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if value < 0:
            raise argparse.ArgumentTypeError(f"must not be negative: {text!r}")
        return value
    return convert


def _range(text: str) -> Range:
    try:
        return parse_range(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def parse_arguments(argv: Sequence[str]) -> argparse.Namespace:
    parser = _Parser(prog="mailsocketd-check", description=(
        "Check one IMAP account of a mailsocketd configuration: connect, verify TLS, log in, "
        "STATUS each configured mailbox. Prints one monitoring-plugins line; exit status "
        "0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN."))
    parser.add_argument("-V", "--version", action="version",
                        version=f"mailsocketd-check {__version__}")
    parser.add_argument("--config", required=True, help="the TOML configuration file")
    parser.add_argument("--account", "-a", help="account name ([accounts.NAME]); may be "
                        "left out when only one account is configured")
    parser.add_argument("--warning-time", type=_positive(float), metavar="S",
                        help="WARNING when the check takes longer than S seconds")
    parser.add_argument("--critical-time", type=_positive(float), metavar="S",
                        help="CRITICAL when the check takes longer than S seconds")
    parser.add_argument("-w", "--warning-unseen", type=_range, metavar="RANGE",
                        help="WARNING when a mailbox's unseen count is outside RANGE, in the "
                        "Monitoring Plugins syntax: 10 (more than 10), 10: (fewer than 10), "
                        "~:10, 10:20 (outside), @10:20 (inside)")
    parser.add_argument("-c", "--critical-unseen", type=_range, metavar="RANGE",
                        help="CRITICAL when a mailbox's unseen count is outside RANGE")
    parser.add_argument("--cert-days", type=_positive(int), metavar="N",
                        help="WARNING when the server certificate expires within N days")
    parser.add_argument("--timeout", "-t", type=_positive(float), default=10.0, metavar="S",
                        help="give up (CRITICAL) after S seconds in all [default: 10]")
    return parser.parse_args(argv)


def choose_account(accounts: Sequence[AccountConfig], name: str | None) -> AccountConfig:
    """The account to check; ConfigError when it is missing or ambiguous."""
    if name is not None:
        for account in accounts:
            if account.name == name:
                return account
        known = ", ".join(a.name for a in accounts) or "none"
        raise ConfigError("accounts", f"no account named {name!r} (configured: {known})")
    if len(accounts) == 1:
        return accounts[0]
    if not accounts:
        raise ConfigError("accounts", "no [accounts.NAME] table in the configuration")
    names = ", ".join(a.name for a in accounts)
    raise ConfigError("accounts", f"several accounts are configured ({names}); choose one "
                      "with --account")


def run_check(reactor: AccountReactor, account: AccountConfig,
              limits: Limits) -> Deferred[Outcome]:
    """Probe ``account`` and judge it; never fails (a failure is a CRITICAL/UNKNOWN Outcome)."""
    d = ensureDeferred(probe(reactor, account, limits.timeout))

    def judged(result: ProbeResult) -> Outcome:
        return verdict(account, result, limits)

    def broken(failure: Failure) -> Outcome:
        return failed(account, failure)

    return d.addCallbacks(judged, broken)


def main(argv: list[str] | None = None) -> int:
    """The console script: print one line, return the plugin exit status."""
    try:
        args = parse_arguments(sys.argv[1:] if argv is None else argv)
    except SystemExit as e:
        return int(e.code) if isinstance(e.code, int) else UNKNOWN
    try:
        account = choose_account(load_config(args.config).accounts, args.account)
    except ConfigError as e:
        print(f"IMAP UNKNOWN - {plugin_text(str(e))}")
        return UNKNOWN
    limits = Limits(args.warning_time, args.critical_time, args.warning_unseen,
                    args.critical_unseen, args.cert_days, args.timeout)
    outcomes: list[Outcome] = []

    def check(reactor: AccountReactor) -> Deferred[None]:
        return run_check(reactor, account, limits).addCallback(outcomes.append)

    with contextlib.suppress(SystemExit):  # react() always exits; we print and return
        task.react(check)
    outcome = outcomes[0] if outcomes else Outcome(UNKNOWN, "IMAP UNKNOWN - internal error")
    print(outcome.line)
    return outcome.code


if __name__ == "__main__":
    sys.exit(main())
