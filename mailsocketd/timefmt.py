"""The protocol's one time format, shared by the line service and the mail side."""

from __future__ import annotations

import time


def format_time(seconds: float) -> str:
    """Local time as ``YYYY/MM/DD HH:MM:SS`` (zero-padded, 24-hour), as ``time`` answers."""
    return time.strftime("%Y/%m/%d %H:%M:%S", time.localtime(seconds))
