"""Process-wide set-up that a long-running server needs."""

from __future__ import annotations

import resource

from twisted.logger import Logger

log = Logger(namespace="mailsocketd")


def raise_open_file_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit, so 10,000+ clients fit; return it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft >= hard:
        return soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError) as e:
        log.warn("cannot raise the open-file limit from {soft} to {hard}: {error}",
                 soft=soft, hard=hard, error=e)
        return soft
    log.info("open-file limit raised from {soft} to {hard}", soft=soft, hard=hard)
    return hard
