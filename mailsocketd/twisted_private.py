"""Every Twisted-private name mailsocketd relies on, in one place.

Twisted gives no public hook for some things the daemon must do: bound an IMAP reply's memory,
end IDLE, refuse data injected before a STARTTLS handshake, parse replies faster, report a
failed listen at start-up, know whether a socket still holds output, or keep SMTP's own
dot-stuffing off the data.  So a few subclasses reach into Twisted's internals.  Each such name
is declared here with where and why; ``tests/unit/test_twisted_private.py`` checks every one on
the installed Twisted and fails loudly on a release that renamed or changed one.  That test is
what lets pyproject.toml allow a range of Twisted releases instead of one.

``COPIED`` fingerprints Twisted methods we keep a near-copy of: a change upstream must be
looked at (and the copy updated) before the fingerprint is.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["COPIED", "SURFACE", "Private"]


@dataclass(frozen=True)
class Private:
    """One private name: ``owner`` (a module or class, dotted) has ``name``; ``instance`` when
    it is set only on instances (in ``__init__``), so the check must build one."""

    owner: str
    name: str
    used_in: str
    why: str
    instance: bool = False


_IMAP = "twisted.mail.imap4.IMAP4Client"
_CMD = "twisted.mail.imap4.Command"
_SMTP = "twisted.mail.smtp.ESMTPSender"
_CLIENT = "mailsocketd.mail.imap.client"
_SUBMIT = "mailsocketd.mail.smtp.submit"

SURFACE: tuple[Private, ...] = (
    # -- the IMAP client: dispatch, limits, IDLE ---------------------------------------------
    Private(_IMAP, "tags", _CLIENT, "the commands awaiting a tagged reply, by tag", True),
    Private(_IMAP, "waiting", _CLIENT, "the tag of the command in flight", True),
    Private(_IMAP, "state", _CLIENT, "None before the greeting (BYE there is a refusal)", True),
    Private(_IMAP, "startedTLS", _CLIENT, "whether STARTTLS succeeded (for `encrypted`)", True),
    Private(_IMAP, "_parts", _CLIENT, "a literal being collected (bounds MAX_RESPONSE)", True),
    Private(_IMAP, "_buffer", _CLIENT, "bytes after STARTTLS's reply, before the handshake",
            True),
    Private(_IMAP, "dispatchCommand", _CLIENT, "overridden: a malformed line drops the link"),
    Private(_IMAP, "response_UNAUTH", _CLIENT, "the greeting, before any command"),
    Private(_IMAP, "_defaultHandler", _CLIENT, "overridden: untagged lines, continuations"),
    Private(_IMAP, "_setupForLiteral", _CLIENT, "overridden: refuse an oversized literal"),
    Private(_IMAP, "rawDataReceived", _CLIENT,
            "wrapped: a literal ending a response must not swallow the next line"),
    Private(_IMAP, "_startedTLS", _CLIENT, "overridden: refuse data injected before TLS"),
    Private(_IMAP, "_flushQueue", _CLIENT, "send the next queued command after a reply"),
    Private(_IMAP, "_extraInfo", _CLIENT, "overridden: drop unsolicited data, not log it"),
    Private(_CMD, "lines", _CLIENT, "a command's untagged lines (bounded by MAX_UNTAGGED)",
            True),
    Private(_CMD, "defer", _CLIENT, "a command's result", True),
    Private(_CMD, "command", _CLIENT, "a command's name (commands_sent, refusals)", True),
    Private(_CMD, "continuation", "mailsocketd.mail.imap.login", "AUTHENTICATE and IDLE's +",
            True),
    Private(_CMD, "_1_RESPONSES", "mailsocketd.mail.imap.parse", "FastCommand.finish"),
    Private(_CMD, "_2_RESPONSES", "mailsocketd.mail.imap.parse", "FastCommand.finish"),
    Private(_CMD, "_OK_RESPONSES", "mailsocketd.mail.imap.parse", "FastCommand.finish"),
    Private("twisted.mail.imap4", "_quote", _CLIENT, "LOGIN's arguments"),
    Private("twisted.mail.imap4", "Command", _CLIENT,
            "not exported: the commands we send ourselves (fourth argument: continuation)"),
    Private("twisted.application.internet.ClientService", "_log",
            "mailsocketd.mail.imap.connect",
            "replaced (QuietClientService): no info line at every account retry"),
    # -- SMTP submission ---------------------------------------------------------------------
    Private(_SMTP, "_from", _SUBMIT, "whether the outcome is still to be reported", True),
    Private(_SMTP, "_tlsMode", _SUBMIT, "whether STARTTLS is done (AUTH preference)", True),
    Private(_SMTP, "_disconnectFromServer", _SUBMIT, "QUIT after the one message"),
    Private(_SMTP, "smtpState_msgSent", _SUBMIT, "overridden: no RSET round after DATA"),
    # -- the line service --------------------------------------------------------------------
    Private("twisted.application.internet.StreamServerEndpointService", "_raiseSynchronously",
            "mailsocketd.tap", "a failed listen stops twistd at start-up", True),
    Private("twisted.internet.abstract.FileDescriptor", "dataBuffer",
            "mailsocketd.line.protocol", "does the socket still hold output (lingering close)"),
    Private("twisted.internet.abstract.FileDescriptor", "offset",
            "mailsocketd.line.protocol", "how much of dataBuffer is sent"),
    Private("twisted.protocols.haproxy._wrapper", "HAProxyProtocolWrapper",
            "mailsocketd.line.proxy", "not exported: the PROXY header parsing wrapper"),
    Private("twisted.protocols.haproxy._wrapper", "HAProxyWrappingFactory",
            "mailsocketd.line.proxy", "not exported: its factory"),
    Private("twisted.protocols.haproxy._wrapper.HAProxyProtocolWrapper", "_proxyInfo",
            "mailsocketd.line.proxy", "set once the header is read: the client is known",
            True),
    Private("twisted.python.logfile.BaseLogFile", "_file", "mailsocketd.logs",
            "the log file being written: is it still the one at its path (logrotate)", True),
    Private("twisted.internet.endpoints.SSL4ServerEndpoint", "_sslContextFactory",
            "mailsocketd.listeners", "a TLS listener's certificate, replaced on reload", True),
    Private("twisted.internet.abstract.FileDescriptor", "_tempDataLen",
            "mailsocketd.line.protocol", "bytes queued behind dataBuffer", True),
)

# sha256 of ``inspect.getsource`` of Twisted methods we keep a near-copy of.
COPIED: dict[str, tuple[str, str]] = {
    "twisted.mail.imap4.Command.finish": (
        "04209cf722fe91e755113d165741cc4abb7dff887568e2a18cd1ca058befd38d",
        "mailsocketd.mail.imap.parse.FastCommand.finish"),
}
