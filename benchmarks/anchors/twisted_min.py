# Benchmark anchor, copied unchanged from the anchor set of issue 5
# (../shared/anchors/ beside the repository); only this header comment was added.
"""Minimal idiomatic Twisted server for the time/quit line protocol.

    python3 twisted_min.py PORT              (listens on 127.0.0.1:PORT)

"time\\r\\n" or "time\\n" -> "YYYY/MM/DD HH:MM:SS\\r\\n"; "quit" -> "quit\\r\\n" and
close; other lines ignored.  Default reactor (epoll on Linux), default
listenTCP backlog (50), no logging.  This is the ceiling a Twisted
implementation of the protocol can hope for.
"""
import sys
import time

from twisted.internet import protocol, reactor
from twisted.protocols.basic import LineReceiver


class TimeProtocol(LineReceiver):
    delimiter = b"\n"  # accept both CRLF and bare LF; strip the CR below

    def lineReceived(self, line):
        cmd = line.rstrip(b"\r")
        if cmd == b"time":
            self.transport.write(time.strftime("%Y/%m/%d %H:%M:%S\r\n").encode())
        elif cmd == b"quit":
            self.transport.write(b"quit\r\n")
            self.transport.loseConnection()


def main():
    port = int(sys.argv[1])
    reactor.listenTCP(port, protocol.Factory.forProtocol(TimeProtocol), interface="127.0.0.1")
    reactor.run()


if __name__ == "__main__":
    main()
