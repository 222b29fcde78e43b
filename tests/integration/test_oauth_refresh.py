"""The refresh grant against a REAL HTTPS token endpoint on loopback (tests/tokenendpoint.py),
in this reactor: verified TLS, caching, rotation written back, and every failure as one line."""

from __future__ import annotations

import os
import stat
import time

import pytest
import pytest_twisted
from mailrig import global_reactor
from tokenendpoint import TokenEndpoint
from twisted.internet import reactor
from twisted.internet.defer import gatherResults
from twisted.internet.task import deferLater

from mailsocketd.mail.errors import SecretError, TokenError, TokenRefused
from mailsocketd.mail.oauth.config import OAuth2Config
from mailsocketd.mail.oauth.refresh import RefreshTokens

pytestmark = pytest.mark.timeout(60)

CLIENT_SECRET = "cs-Very-Secret-Client-Value"  # noqa: S105 (a test value)


def counting_minter():
    count = iter(range(1, 1000))
    return lambda user, ttl: f"at-{user}-{next(count)}"


@pytest_twisted.async_yield_fixture
async def endpoint(tmp_path):
    ep = await TokenEndpoint.start(tmp_path, counting_minter(), client_secret=CLIENT_SECRET)
    yield ep
    await ep.stop()


@pytest.fixture
def files(tmp_path, endpoint):
    """The refresh token file (0600, holding a current token) and the client secret file."""
    return endpoint.write_client_files(tmp_path)


def provider(endpoint, files, *, timeout=5.0, ca_file="default", jitter=0.5):
    refresh, secret = files
    config = OAuth2Config(token_url=endpoint.token_url, client_id=endpoint.client_id,
                          refresh_token_file=str(refresh), client_secret_file=str(secret),
                          scope="mail", timeout=timeout,
                          ca_file=str(endpoint.ca_file) if ca_file == "default" else ca_file)
    return RefreshTokens(config, global_reactor(), label="work", environ={},
                         jitter=lambda: jitter)


async def failure_of(d):
    try:
        await d
    except Exception as e:
        return e
    raise AssertionError("expected a failure")


def assert_no_secret(text, endpoint, files):
    refresh, _ = files
    for secret in [CLIENT_SECRET, refresh.read_text().strip(), *endpoint.refresh_tokens,
                   *endpoint.issued]:
        assert secret not in text
    assert "\n" not in text


@pytest_twisted.ensureDeferred
async def test_a_token_is_fetched_cached_and_refreshed_before_it_expires(endpoint, files):
    endpoint.ttl = 2  # the margin is a quarter of it: refreshed after 1.5 s
    tokens = provider(endpoint, files)
    first = await tokens.token()
    assert first.reveal() == b"at-alice-1"
    form = endpoint.received("token")[0].form
    assert form["grant_type"] == "refresh_token"
    assert form["refresh_token"] == files[0].read_text().strip()
    assert form["client_id"] == endpoint.client_id and form["client_secret"] == CLIENT_SECRET
    assert form["scope"] == "mail"
    assert (await tokens.token()).reveal() == b"at-alice-1"  # cached
    assert len(endpoint.requests) == 1
    await deferLater(reactor, 1.6)
    assert (await tokens.token()).reveal() == b"at-alice-2"  # refreshed before it expires
    assert len(endpoint.requests) == 2


@pytest_twisted.ensureDeferred
async def test_callers_at_once_share_one_request_and_refused_forgets_the_token(endpoint, files):
    tokens = provider(endpoint, files)
    results = await gatherResults([tokens.token() for _ in range(5)])
    assert {r.reveal() for r in results} == {b"at-alice-1"}
    assert len(endpoint.requests) == 1
    tokens.refused()
    assert (await tokens.token()).reveal() == b"at-alice-2"
    assert len(endpoint.requests) == 2


@pytest_twisted.ensureDeferred
async def test_a_rotated_refresh_token_is_written_back_atomically_0600(endpoint, files):
    refresh, _ = files
    endpoint.rotate = True
    old = refresh.read_text().strip()
    inode = refresh.stat().st_ino
    tokens = provider(endpoint, files)
    await tokens.token()
    new = refresh.read_text().strip()
    assert new != old and new in endpoint.refresh_tokens and old not in endpoint.refresh_tokens
    info = refresh.stat()
    assert stat.S_IMODE(info.st_mode) == 0o600
    assert info.st_ino != inode  # a new file renamed over the old one, not rewritten in place
    assert sorted(p.name for p in refresh.parent.iterdir() if "refresh" in p.name) \
        == [refresh.name]  # no temporary file left
    tokens.refused()
    await tokens.token()  # the next refresh sends the new token, which the endpoint accepts
    assert endpoint.received("token")[1].form["refresh_token"] == new


@pytest_twisted.ensureDeferred
async def test_invalid_grant_is_refused_for_good_in_one_line_without_secrets(endpoint, files):
    endpoint.refresh_tokens.clear()  # revoked
    tokens = provider(endpoint, files)
    error = await failure_of(tokens.token())
    assert isinstance(error, TokenRefused)
    assert str(error) == ("token endpoint 127.0.0.1: invalid_grant (Token has been expired or "
                          "revoked.); get a new refresh token with mailsocketd-oauth2")
    assert_no_secret(str(error), endpoint, files)
    # backs off: asking again at once makes no request and says when the next try is
    again = await failure_of(tokens.token())
    assert isinstance(again, TokenRefused) and "next try in" in str(again)
    assert len(endpoint.requests) == 1
    # re-enrolled: a new refresh token in the file is tried at once
    files[0].write_text(endpoint.new_refresh_token() + "\n")
    assert (await tokens.token()).reveal() == b"at-alice-1"


@pytest_twisted.ensureDeferred
async def test_server_errors_back_off_with_jitter_and_recover(endpoint, files):
    endpoint.script_token[:] = [(500, b"oops"), (503, {"error": "temporarily_unavailable"})]
    tokens = provider(endpoint, files)
    error = await failure_of(tokens.token())
    assert type(error) is TokenError
    assert str(error) == "token endpoint 127.0.0.1: HTTP 500 (the server failed; retried later)"
    again = await failure_of(tokens.token())
    # 5 s, jittered by (0.75 + 0.5 * 0.5): no second request until then
    assert str(again).endswith("; next try in 5 s")
    assert len(endpoint.requests) == 1
    tokens._retry_at = 0.0  # time passes
    error = await failure_of(tokens.token())
    assert str(error).endswith("HTTP 503 (the server failed; retried later)")
    assert tokens._retry_at - reactor.seconds() > 9  # the second delay is longer (10 s)
    tokens._retry_at = 0.0
    assert (await tokens.token()).reveal() == b"at-alice-1"
    assert tokens._failures == 0


@pytest_twisted.ensureDeferred
async def test_a_hanging_endpoint_times_out(endpoint, files):
    endpoint.script_token.append("hang")
    tokens = provider(endpoint, files, timeout=1.0)
    started = time.monotonic()
    error = await failure_of(tokens.token())
    assert isinstance(error, TokenError)
    assert str(error) == "token endpoint 127.0.0.1: no complete reply within 1 s"
    assert time.monotonic() - started < 3.0


@pytest.mark.parametrize(("step", "text"), [
    ("oversize", "the reply is larger than 65536 bytes"),
    ("malformed", "the reply is not JSON"),
    ((200, {"token_type": "Bearer"}), "no access_token in the reply"),
    ((200, {"access_token": "a b", "token_type": "Bearer"}), "not an access token"),
    ((200, {"access_token": "abc", "token_type": "mac"}), "is not a bearer token"),
    ((404, b"<html>no</html>"), "HTTP 404, not an OAuth2 reply"),
    ((200, [1, 2]), "the reply is not a JSON object"),
    ((200, {"access_token": "abc", "token_type": "Bearer", "expires_in": -5}),
     "expires_in is not a number of seconds"),
])
@pytest_twisted.ensureDeferred
async def test_bad_replies_are_one_clear_line(endpoint, files, step, text):
    endpoint.script_token.append(step)
    tokens = provider(endpoint, files)
    error = await failure_of(tokens.token())
    assert type(error) is TokenError  # the endpoint's fault: the ordinary backoff
    assert text in str(error)
    assert tokens._failures == 1
    assert_no_secret(str(error), endpoint, files)


@pytest_twisted.ensureDeferred
async def test_tls_is_verified(endpoint, files, tmp_path):
    # the system CAs do not know the test CA
    error = await failure_of(provider(endpoint, files, ca_file=None).token())
    assert isinstance(error, TokenError)
    assert str(error).startswith("token endpoint 127.0.0.1: TLS failure: ")
    assert "certificate verify failed" in str(error)
    assert endpoint.requests == []  # nothing was sent
    missing = str(tmp_path / "nope.pem")
    error = await failure_of(provider(endpoint, files, ca_file=missing).token())
    assert str(error) == (f"token endpoint 127.0.0.1: ca_file {missing}: cannot read: "
                          "No such file or directory")


@pytest_twisted.ensureDeferred
async def test_a_refresh_token_file_others_may_read_is_refused(endpoint, files):
    files[0].chmod(0o644)
    error = await failure_of(provider(endpoint, files).token())
    assert isinstance(error, SecretError)
    assert str(error) == (f"refresh_token_file {files[0]}: readable by group or others "
                          "(mode 0644); refusing it: chmod 600 it (or 400)")
    assert endpoint.requests == []
    os.chmod(files[0], 0o600)  # a file problem is not the endpoint's: no backoff
    assert (await provider(endpoint, files).token()).reveal() == b"at-alice-1"


@pytest_twisted.ensureDeferred
async def test_a_wrong_client_secret_is_refused_for_good(endpoint, files):
    files[1].write_text("not-the-secret\n")
    error = await failure_of(provider(endpoint, files).token())
    assert isinstance(error, TokenRefused)
    assert str(error) == "token endpoint 127.0.0.1: invalid_client (unknown client)"
    assert "not-the-secret" not in str(error)

