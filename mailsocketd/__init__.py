"""mailsocketd: a line service for telnet/netcat users and an IMAP4 mail checker, one reactor."""

__version__ = "0.1.0"
