"""``twistd mailsocketd`` options and wiring, with a memory reactor (no sockets)."""

from __future__ import annotations

import pytest
from twisted.internet.testing import MemoryReactorClock

from mailsocketd.tap import Options, makeService


def parse(*args: str) -> Options:
    options = Options()
    options.parseOptions(list(args))
    return options


def test_defaults():
    options = parse()
    assert options.config.line.listen == ("tcp:65000:interface=127.0.0.1",)
    assert options.config.line.daytime == ()


def test_listen_repeats_and_overrides_the_file(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('[line]\nlisten = ["tcp:7000"]\nidle_timeout = 9\n')
    options = parse("--config", str(path), "--listen", "tcp:7001:interface=127.0.0.1",
                    "--listen", "tcp6:7002:interface=\\:\\:1", "--idle-timeout", "3",
                    "--daytime", "tcp:7013:interface=127.0.0.1", "--banner",
                    "--no-log-commands")
    line = options.config.line
    assert line.listen == ("tcp:7001:interface=127.0.0.1", "tcp6:7002:interface=\\:\\:1")
    assert line.idle_timeout == 3.0
    assert line.daytime == ("tcp:7013:interface=127.0.0.1",)
    assert line.banner is True
    assert options.config.log.commands is False


@pytest.mark.parametrize(("args", "message"), [
    (["--listen", "bogus:1"], "line.listen: bad endpoint 'bogus:1'"),
    (["--listen", "systemd:domain=INET:index=0"], "no socket was passed by systemd"),
    (["--max-line-length", "ten"], "--max-line-length: not a number: 'ten'"),
    (["--max-per-peer", "0"], "line.max_connections_per_peer: expected an integer >= 1"),
    (["--log-format", "xml"], "log.format: expected one of 'text', 'json'"),
])
def test_bad_options_stop_with_one_line(args, message):
    with pytest.raises(SystemExit) as info:
        parse(*args)
    assert isinstance(info.value.code, str)
    assert info.value.code.startswith("twistd mailsocketd: ") and "\n" not in info.value.code
    assert message in info.value.code


def test_make_service_listens_on_every_endpoint():
    reactor = MemoryReactorClock()
    options = parse("--listen", "tcp:7001:interface=127.0.0.1",
                    "--listen", "tcp:7002:interface=127.0.0.2",
                    "--daytime", "tcp:7013:interface=127.0.0.1")
    service = makeService(options, reactor)
    service.privilegedStartService()
    service.startService()
    ports = sorted((port, interface) for port, _, _, interface in reactor.tcpServers)
    assert ports == [(7001, "127.0.0.1"), (7002, "127.0.0.2"), (7013, "127.0.0.1")]
    stopped = service.stopService()
    assert stopped.called


def test_flags_can_undo_the_file(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("[line]\nbanner = true\n[log]\ncommands = false\n")
    options = parse("--config", str(path), "--no-banner", "--log-commands")
    assert options.config.line.banner is False
    assert options.config.log.commands is True
    with pytest.raises(SystemExit, match="--no-banner contradicts another option"):
        parse("--banner", "--no-banner")


def test_make_service_listens_before_twistd_daemonizes():
    """Issue 12 item 2: twistd calls makeService in the foreground but starts services only
    after it has daemonized; listening happens here, so a busy port stops it in the
    foreground.  twistd's own start later listens no second time."""
    reactor = MemoryReactorClock()
    service = makeService(parse("--listen", "tcp:7001:interface=127.0.0.1"), reactor)
    assert [port for port, *_ in reactor.tcpServers] == [7001]  # before any start
    service.privilegedStartService()
    service.startService()
    assert [port for port, *_ in reactor.tcpServers] == [7001]
    service.stopService()


def test_sighup_is_a_reload_from_when_the_listeners_are_bound():
    """A SIGHUP sent as soon as the port accepts (before twistd starts the services and runs
    the reactor) ended the daemon: the handler came only once the reactor ran."""
    import signal

    previous = signal.signal(signal.SIGHUP, signal.SIG_DFL)
    try:
        makeService(parse("--listen", "tcp:7002:interface=127.0.0.1"), MemoryReactorClock())
        assert callable(signal.getsignal(signal.SIGHUP))
    finally:
        signal.signal(signal.SIGHUP, previous)
