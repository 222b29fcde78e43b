"""One complete check of an account, as ``mailsocketd-check`` runs it, and its verdict.

``probe`` connects, logs in (with the daemon's TLS and password rules), sends one STATUS per
configured mailbox and logs out, all within one overall timeout.  ``verdict`` turns the result
(or the failure) into a monitoring-plugins line and exit code::

    IMAP OK - work INBOX: 12 messages, 3 unseen, 0.045 s | time=0.045s messages=12 unseen=3

Everything not of our own making (server replies, TLS reasons, mailbox names) goes through
``plugin_text`` before it is printed, so it cannot break the line: no ``|`` (which starts the
perfdata), no control characters, bounded length.  Perfdata labels are quoted as the
monitoring-plugins guidelines ask (``perf_label``).
"""

from __future__ import annotations

import contextlib
import datetime
import math
from collections.abc import Mapping
from dataclasses import dataclass

from twisted.python.failure import Failure

from mailsocketd.mail.accounts.auth import account_credentials, account_tokens
from mailsocketd.mail.accounts.config import AccountConfig
from mailsocketd.mail.accounts.service import AccountReactor
from mailsocketd.mail.errors import (
    CheckTimeout,
    ServerRefused,
    TokenError,
    clean_text,
    describe_failure,
)
from mailsocketd.mail.imap.client import LOGOUT_TIMEOUT, ImapClient, MailboxCounts
from mailsocketd.mail.imap.connect import ImapClientFactory, connect
from mailsocketd.mail.imap.login import log_in
from mailsocketd.mail.secrets import SecretError

__all__ = ["CRITICAL", "OK", "UNKNOWN", "WARNING", "Limits", "Outcome", "ProbeResult", "Range",
           "failed", "parse_range", "perf_label", "plugin_text", "probe", "verdict"]

OK, WARNING, CRITICAL, UNKNOWN = 0, 1, 2, 3
NAMES = {OK: "OK", WARNING: "WARNING", CRITICAL: "CRITICAL", UNKNOWN: "UNKNOWN"}
TEXT_LIMIT = 300  # characters of one piece of foreign text (an error, a reply)
NAME_LIMIT = 100  # characters of a mailbox name, in the text and in perfdata labels


def plugin_text(text: str | bytes, limit: int = TEXT_LIMIT) -> str:
    """Foreign text made safe for the plugin line: one line, bounded, and no ``|``."""
    return clean_text(text, limit).replace("|", "/")


def perf_label(label: str) -> str:
    """A perfdata label per the monitoring-plugins guidelines: quoted with ``'`` when it holds
    a space, ``=`` or ``'``, a ``'`` in it doubled."""
    text = plugin_text(label, NAME_LIMIT + 20)
    if any(c in text for c in " ='"):
        return "'" + text.replace("'", "''") + "'"
    return text


@dataclass(frozen=True)
class Range:
    """A threshold in the Monitoring Plugins range syntax, ``[@]START:END``: ``10`` alerts
    outside 0..10, ``10:`` below 10, ``~:10`` above 10, ``10:20`` outside 10..20, ``@10:20``
    inside 10..20 (ends included in the range).  ``text`` is as given, for the perfdata."""

    text: str
    start: float
    end: float
    inside: bool = False

    def alerts(self, value: float) -> bool:
        within = self.start <= value <= self.end
        return within if self.inside else not within

    def violation(self, value: float) -> str:
        """How ``value`` breaks the range, for the plugin line (``3 > 2``)."""
        if self.inside:
            return f"{value:g} inside @{self.text.lstrip('@')}"
        if value > self.end:
            return f"{value:g} > {self.end:g}"
        if value < self.start:
            return f"{value:g} < {self.start:g}"
        return f"{value:g} outside {self.text}"  # never: the value is within

    def __str__(self) -> str:
        return self.text


def parse_range(text: str) -> Range:
    """A threshold range (see Range); ValueError saying what is wrong, an inverted range
    (``20:10``) included."""
    body = text[1:] if text.startswith("@") else text
    start_text, colon, end_text = body.rpartition(":") if ":" in body else ("0", ":", body)
    if not colon or not body:
        raise ValueError(f"not a range: {text!r}")
    try:
        start = float("-inf") if start_text == "~" else float(start_text or "0")
        end = float(end_text) if end_text else float("inf")
    except ValueError:
        raise ValueError(f"not a range: {text!r} (e.g. 10, 10:, ~:10, 10:20, @10:20)"
                         ) from None
    if math.isnan(start) or math.isnan(end) or start == math.inf or end == -math.inf:
        raise ValueError(f"not a range: {text!r}")
    if start > end:
        raise ValueError(f"inverted range {text!r}: its start is above its end")
    return Range(text, start, end, inside=text.startswith("@"))


@dataclass(frozen=True)
class Limits:
    """Thresholds (a value above a time, or outside an unseen range, is a WARNING /
    CRITICAL) and the overall timeout."""

    warning_time: float | None = None
    critical_time: float | None = None
    warning_unseen: Range | None = None
    critical_unseen: Range | None = None
    cert_days: int | None = None
    timeout: float = 10.0


@dataclass(frozen=True)
class ProbeResult:
    """What one check found: counts per mailbox (or its refusal), time, certificate expiry."""

    mailboxes: tuple[tuple[str, MailboxCounts | str], ...]
    elapsed: float
    cert_expires: datetime.datetime | None = None


@dataclass(frozen=True)
class Outcome:
    """A monitoring-plugins result: the exit code and the one line to print."""

    code: int
    line: str


def certificate_expiry(client: ImapClient) -> datetime.datetime | None:
    """The server certificate's notAfter, when the connection is TLS."""
    cert = client.peer_certificate()
    if cert is None:
        return None
    stamp: bytes = cert.get_notAfter()
    parsed = datetime.datetime.strptime(stamp.decode("ascii"), "%Y%m%d%H%M%SZ")
    return parsed.replace(tzinfo=datetime.UTC)


async def probe(reactor: AccountReactor, account: AccountConfig, timeout: float,
                environ: Mapping[str, str] | None = None) -> ProbeResult:
    """Connect, log in, STATUS every mailbox, log out, every step by the one deadline
    ``timeout`` seconds from now; raises on any failure."""
    start = reactor.seconds()
    factory = ImapClientFactory(lambda: ImapClient(reactor, timeout, label=account.name),
                                deadline=start + timeout)
    credentials = account_credentials(account, reactor, environ,
                                      account_tokens(account, reactor, environ))
    client = await connect(reactor, account.address, account.tls, factory, timeout)
    try:
        await log_in(client, account.address, account.tls, account.user, credentials)
        found: list[tuple[str, MailboxCounts | str]] = []
        for mailbox in account.mailboxes:
            try:
                found.append((mailbox, await client.status_counts(mailbox)))
            except ServerRefused as e:
                found.append((mailbox, str(e)))
        elapsed = reactor.seconds() - start
        expires = certificate_expiry(client)
        with contextlib.suppress(Exception):
            await client.log_out(min(LOGOUT_TIMEOUT, timeout))
        return ProbeResult(tuple(found), elapsed, expires)
    finally:
        if client.connected_ok:
            client.drop(CheckTimeout("the end of the check", 0))


def failed(account: AccountConfig, failure: Failure) -> Outcome:
    """A check that did not get through: CRITICAL, or UNKNOWN when the plugin itself could not
    work (an unreadable password source, no access token from the token endpoint)."""
    code = UNKNOWN if isinstance(failure.value, SecretError | TokenError) else CRITICAL
    why = plugin_text(describe_failure(failure))
    return Outcome(code, f"IMAP {NAMES[code]} - {account.name}: {why} "
                         f"({plugin_text(str(account.address))})")


def _level(value: float, warning: float | None, critical: float | None
           ) -> tuple[int, float | None]:
    """The level ``value`` reaches, and the threshold it went over."""
    if critical is not None and value > critical:
        return CRITICAL, critical
    if warning is not None and value > warning:
        return WARNING, warning
    return OK, None


def _range_level(value: float, warning: Range | None, critical: Range | None
                 ) -> tuple[int, Range | None]:
    """The level ``value`` reaches, and the range it broke."""
    if critical is not None and critical.alerts(value):
        return CRITICAL, critical
    if warning is not None and warning.alerts(value):
        return WARNING, warning
    return OK, None


def _threshold(value: float | None, fmt: str) -> str:
    return "" if value is None else format(value, fmt)


def _perf(label: str, value: str, warning: str, critical: str) -> str:
    text = f"{perf_label(label)}={value}"
    return text + f";{warning};{critical};0" if warning or critical else text


def verdict(account: AccountConfig, result: ProbeResult, limits: Limits,
            now: datetime.datetime | None = None) -> Outcome:
    """The monitoring-plugins line for a check that got through."""
    code, parts, notes = OK, [], []
    perf = [_perf("time", f"{result.elapsed:.3f}s", _threshold(limits.warning_time, "g"),
                  _threshold(limits.critical_time, "g"))]
    time_level, limit = _level(result.elapsed, limits.warning_time, limits.critical_time)
    if time_level:
        notes.append(f"time {result.elapsed:.3f} s > {limit:g} s")
    code = max(code, time_level)
    for index, (mailbox, counts) in enumerate(result.mailboxes):
        name = plugin_text(mailbox, NAME_LIMIT)
        prefix = f"{account.name} {name}" if index == 0 else name
        if isinstance(counts, str):
            parts.append(f"{prefix}: {plugin_text(counts)}")
            code = CRITICAL
            continue
        parts.append(f"{prefix}: {counts.messages} messages, {counts.unseen} unseen")
        level, broken = _range_level(counts.unseen, limits.warning_unseen,
                                     limits.critical_unseen)
        if broken is not None:
            notes.append(f"{name} unseen {broken.violation(counts.unseen)}")
        code = max(code, level)
        label = "" if index == 0 else f"{name} "
        perf.append(_perf(f"{label}messages", str(counts.messages), "", ""))
        perf.append(_perf(f"{label}unseen", str(counts.unseen),
                          str(limits.warning_unseen or ""), str(limits.critical_unseen or "")))
    cert_note = _certificate_note(result, limits, now)
    if cert_note:
        notes.append(cert_note)
        code = max(code, WARNING)
    text = "; ".join(parts) + f", {result.elapsed:.3f} s"
    if notes:
        text += " (" + "; ".join(notes) + ")"
    return Outcome(code, f"IMAP {NAMES[code]} - {text} | {' '.join(perf)}")


def _certificate_note(result: ProbeResult, limits: Limits,
                      now: datetime.datetime | None) -> str | None:
    if limits.cert_days is None or result.cert_expires is None:
        return None
    now = now or datetime.datetime.now(datetime.UTC)
    left = result.cert_expires - now
    if left >= datetime.timedelta(days=limits.cert_days):
        return None
    return (f"certificate expires in {max(left.days, 0)} days "
            f"({result.cert_expires:%Y-%m-%d %H:%M} UTC)")
