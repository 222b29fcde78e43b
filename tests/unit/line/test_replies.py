from mailsocketd.line.replies import Reply, error, multiline, printable


def test_single_line_reply():
    assert Reply("quit").encode() == b"quit\r\n"
    assert error("bad").encode() == b"error: bad\r\n"


def test_multiline_is_dot_stuffed_and_terminated():
    reply = multiline("2 lines", [".hidden", "plain", "..two"])
    assert reply.encode() == b"ok 2 lines\r\n..hidden\r\nplain\r\n...two\r\n.\r\n"


def test_multiline_body_cannot_smuggle_line_breaks():
    reply = multiline("x", ["a\r\n.\r\nb", "c\rd"])
    assert reply.body == ("a", ".", "b", "c", "d")
    assert reply.encode() == b"ok x\r\na\r\n..\r\nb\r\nc\r\nd\r\n.\r\n"


def test_printable_replaces_controls_and_caps_length():
    assert printable("a\x00b\x7fc\x9bd") == "a?b?c?d"
    long = printable("x" * 100)
    assert len(long) == 40 and long.endswith("...")


def test_printable_replaces_unicode_format_characters():
    assert printable("foo\u202ebar\u200b") == "foo?bar?"
    assert printable("caf\u00e9") == "caf\u00e9"


def test_failed_is_settled_from_the_head_as_an_int():
    """What counting by outcome indexes with: 1 for an ``error:`` line, else 0 (an int, so
    that a list indexed with it takes CPython's fast path)."""
    assert error("no such message").failed == 1
    assert type(error("x").failed) is int
    assert Reply("2026/12/07 10:00:00").failed == 0
    assert Reply("ok watching INBOX").failed == 0
    assert multiline("ok 2 messages", ["a", "b"]).failed == 0
    assert Reply("errors: none").failed == 0  # the prefix is "error:", not "error"
