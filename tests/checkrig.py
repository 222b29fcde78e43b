"""Helpers for the tests of the mail checks: leak canaries, a foreign CA, wire and log evidence.

* ``DISTINCTIVE``: a long password no server, log format or test fixture could produce by
  chance, for leak checks (the test users' ``pw`` would be found in any word that contains it).
* ``make_unrelated_ca``: a CA certificate that signed nothing the test server has.
* ``cleartext_lines``, ``command_names``: what a client sent before its TLS handshake began.
* ``DovecotLog``: the lines the test Dovecot logged since a point in time, to prove that no
  login was even attempted.
"""

from __future__ import annotations

import datetime
import time
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

DISTINCTIVE = "Zq7~leak-canary_3f9c1e0b/Hunter2-never-log-me"
TLS_HANDSHAKE = 0x16  # the first byte of a TLS handshake record (a ClientHello)


def make_unrelated_ca(path: Path) -> str:
    """Write a self-signed CA certificate (PEM) that has nothing to do with the test CA."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "someone else's CA")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return str(path)


def cleartext_lines(data: bytes) -> tuple[list[bytes], bytes]:
    """Split what a client sent into its IMAP lines before TLS began and the rest (which, when
    not empty, starts with a TLS handshake record)."""
    lines: list[bytes] = []
    rest = data
    while rest and rest[0] != TLS_HANDSHAKE:
        line, sep, rest = rest.partition(b"\r\n")
        lines.append(line)
        if not sep:
            break
    return lines, rest


def command_names(lines: list[bytes]) -> list[bytes]:
    """The command of each ``TAG COMMAND ...`` line, upper case (a line that is not one is
    kept whole, so that an assertion on the names shows it)."""
    return [parts[1].upper() if len(parts) > 1 else line
            for line in lines for parts in [line.split(b" ")]]


class DovecotLog:
    """The part of a test Dovecot's log written after this object was made."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.start = path.stat().st_size

    def new_text(self) -> str:
        with open(self.path, "rb") as f:
            f.seek(self.start)
            return f.read().decode("utf-8", "replace")

    def wait_for(self, text: str, timeout: float = 10.0) -> str:
        """The new lines once one of them contains ``text`` (Dovecot logs a disconnect a
        moment after the client is gone); AssertionError with the lines if it never comes."""
        deadline = time.monotonic() + timeout
        while text not in (found := self.new_text()):
            if time.monotonic() > deadline:
                raise AssertionError(f"{text!r} not logged by Dovecot within {timeout} s:\n"
                                     f"{found}")
            time.sleep(0.05)
        return found
