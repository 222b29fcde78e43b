"""twistd plugin: ``twistd mailsocketd``."""

from twisted.application.service import ServiceMaker

mailsocketd = ServiceMaker(
    "mailsocketd",
    "mailsocketd.tap",
    "A line service for telnet/netcat users and an IMAP4 mail checker, under one reactor",
    "mailsocketd",
)
