"""Small formatting helpers shared by the report's sections."""

from __future__ import annotations

from collections.abc import Sequence


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """A Markdown table (pipes inside cells are escaped)."""
    def cell(text: str) -> str:
        return text.replace("|", "\\|")

    lines = ["| " + " | ".join(cell(h) for h in header) + " |",
             "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return lines


def count(value: float | None) -> str:
    """1234.5 -> '1,235'."""
    return "-" if value is None else f"{value:,.0f}"


def micros(us: float | None) -> str:
    """Microseconds, shown as µs below 1 ms and ms above."""
    if us is None:
        return "-"
    if us < 1000:
        return f"{us:.0f} µs"
    return f"{us / 1000:.1f} ms" if us < 100_000 else f"{us / 1000:,.0f} ms"


def millis(ms: float | None) -> str:
    """Milliseconds with a sensible number of digits."""
    if ms is None:
        return "-"
    if ms < 1:
        return f"{ms:.3f} ms"
    if ms < 100:
        return f"{ms:.1f} ms"
    return f"{ms:,.0f} ms"


def times(value: float | None) -> str:
    """A ratio: 0.93 -> '0.93x', 120.4 -> '120x'."""
    if value is None:
        return "-"
    return f"{value:.2f}x" if value < 10 else f"{value:,.0f}x"

