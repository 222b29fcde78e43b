"""Issue 16: client TLS options (each holding an OpenSSL context) are made once per host and CA
file and shared by every connection, instead of one context per connection; a changed or
removed CA file is still noticed at the next connection."""

from __future__ import annotations

import gc
import os
import subprocess
import weakref
from pathlib import Path

import pytest
from OpenSSL import SSL
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import StringTransport
from twisted.protocols.tls import TLSMemoryBIOFactory, TLSMemoryBIOProtocol
from twisted.python.failure import Failure

from mailsocketd.mail import tls
from mailsocketd.mail.tls import CaFileError, TlsOptionsCache, TlsPolicy


def make_ca(directory: Path, name: str = "ca") -> Path:
    key, cert = directory / f"{name}.key", directory / f"{name}.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "2", "-subj", f"/CN={name}"],
                   check=True, capture_output=True)
    return cert


class Counting:
    """A ``make`` that counts what it made."""

    def __init__(self) -> None:
        self.made: list[tuple[str, str | None]] = []

    def __call__(self, host: str, ca_file: str | None) -> object:
        self.made.append((host, ca_file))
        return tls.make_tls_options(host, ca_file)


def tls_connection(options: IOpenSSLClientConnectionCreator) -> TLSMemoryBIOProtocol:
    """A client TLS connection made with ``options``, as the endpoints make them (its
    ClientHello written into a StringTransport)."""
    factory = TLSMemoryBIOFactory(options, True, Factory.forProtocol(Protocol))
    proto = factory.buildProtocol(None)
    assert isinstance(proto, TLSMemoryBIOProtocol)
    proto.makeConnection(StringTransport())
    return proto


def context_of(proto: TLSMemoryBIOProtocol) -> SSL.Context:
    connection = proto.getHandle()
    assert isinstance(connection, SSL.Connection)
    return connection.get_context()


def test_connections_to_one_host_share_one_openssl_context(tmp_path):
    """Before, every connection made its own context (and its CA store)."""
    ca = str(make_ca(tmp_path))
    protos = [tls_connection(TlsPolicy(ca_file=ca).options("mail.example.test"))
              for _ in range(20)]
    assert len({id(context_of(p)) for p in protos}) == 1
    for proto in protos:
        proto.connectionLost(Failure(ConnectionDone()))


def test_one_set_per_host_and_ca_file(tmp_path):
    ca = str(make_ca(tmp_path))
    make = Counting()
    cache = TlsOptionsCache(make=make)  # type: ignore[arg-type]
    a = cache.get("a.example", ca)
    assert cache.get("a.example", ca) is a
    assert cache.get("b.example", ca) is not a  # the name is checked against the certificate
    assert cache.get("a.example", None) is not a  # the system store
    assert make.made == [("a.example", ca), ("b.example", ca), ("a.example", None)]


def test_a_renewed_ca_file_is_read_again_at_the_next_connection(tmp_path):
    ca = make_ca(tmp_path)
    make = Counting()
    cache = TlsOptionsCache(make=make)  # type: ignore[arg-type]
    first = cache.get("a.example", str(ca))
    renewed = make_ca(tmp_path, "renewed")
    os.replace(renewed, ca)  # the way a renewal is installed: a new file under the old name
    assert cache.get("a.example", str(ca)) is not first
    assert len(make.made) == 2 and len(cache) == 1


def test_a_ca_file_removed_or_emptied_since_fails_the_connection(tmp_path):
    ca = make_ca(tmp_path)
    cache = TlsOptionsCache()
    cache.get("a.example", str(ca))
    ca.write_bytes(b"")
    with pytest.raises(CaFileError, match="no certificate in it"):
        cache.get("a.example", str(ca))
    ca.unlink()
    with pytest.raises(CaFileError, match=r"cannot read: No such file"):
        cache.get("a.example", str(ca))
    assert len(cache) == 0


def test_the_cache_is_bounded_least_recently_used_first(tmp_path):
    ca = str(make_ca(tmp_path))
    make = Counting()
    cache = TlsOptionsCache(size=2, make=make)  # type: ignore[arg-type]
    cache.get("a", ca)
    cache.get("b", ca)
    cache.get("a", ca)  # a is now the most recently used
    cache.get("c", ca)  # b goes
    assert len(cache) == 2
    cache.get("a", ca)
    cache.get("b", ca)
    assert make.made == [("a", ca), ("b", ca), ("c", ca), ("b", ca)]


def test_a_context_of_its_own_outlives_its_connection_until_the_cycle_collector_runs(tmp_path):
    """Why one context per connection churned native memory: a connection's context is freed
    only when the cycle collector comes round, in batches, long after the connection."""
    ca = str(make_ca(tmp_path))
    gc.collect()
    gc.disable()
    try:
        proto = tls_connection(tls.make_tls_options("a.example", ca))
        context = weakref.ref(context_of(proto))
        proto.connectionLost(Failure(ConnectionDone()))
        del proto
        assert context() is not None  # not freed by reference counting
        gc.collect()
        assert context() is None
    finally:
        gc.enable()
