"""The report's PNG plots (matplotlib, Agg backend): one picture per question a reader asks."""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

COLORS = {
    "mailsocketd": "#1f5fa8",
    "mailsocketd_log": "#6fa8dc",
    "mailsocketd_metrics": "#0b3d6e",
    "twisted_min": "#3a9a4a",
    "seed_select": "#e69138",
    "seed_fork": "#cc3333",
    "php": "#cc3333",
    "imaplib_fresh": "#e69138",
    "imaplib_open": "#3a9a4a",
    "mailsocketd_mail": "#1f5fa8",
}
DPI = 110


def _pyplot() -> Any:
    """matplotlib.pyplot with the Agg backend, imported only when a plot is drawn: the report's
    modules import without matplotlib (the test suite checks their verdicts without it)."""
    importlib.import_module("matplotlib").use("Agg")
    return importlib.import_module("matplotlib.pyplot")


def _finish(fig: Figure, path: Path) -> Path:
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, metadata={"Software": None})
    _pyplot().close(fig)
    return path


def _number_format(log: bool) -> Any:
    """Tick labels as plain numbers (1,000 and 0.1, not 10^3 and 10^-1)."""
    formatter = importlib.import_module("matplotlib.ticker").FuncFormatter
    if log:
        return formatter(lambda v, _: f"{v:,.0f}" if v >= 1 else f"{v:g}")
    return formatter(lambda v, _: f"{v:,.0f}")


def _style(ax: Axes, title: str, ylabel: str) -> None:
    ax.set_title(title, fontsize=12, loc="left")
    ax.set_ylabel(ylabel)
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)


def grouped_bars(path: Path, title: str, ylabel: str, groups: Sequence[str],
                 series: Sequence[tuple[str, str, Sequence[float | None]]],
                 log: bool = False, target: tuple[float, str] | None = None,
                 value_format: str = "{:,.0f}", missing: str = "n/a") -> Path:
    """Bars per group (x) and series (colour); None values are marked ``missing``.

    ``series`` holds (colour key, legend label, one value per group)."""
    fig, ax = _pyplot().subplots(figsize=(9, 5.0))
    width = 0.8 / max(1, len(series))
    top = max((v for _, _, vals in series for v in vals if v), default=1.0)
    bottom = min((v for _, _, vals in series for v in vals if v), default=1.0)
    for i, (color, label, values) in enumerate(series):
        xs = [g + (i - (len(series) - 1) / 2) * width for g in range(len(groups))]
        heights = [v if v else 0 for v in values]
        bars = ax.bar(xs, heights, width * 0.92, label=label, color=COLORS.get(color, color))
        for bar, value in zip(bars, values, strict=True):
            text = value_format.format(value) if value else missing
            y = bar.get_height() if value else (bottom / 2 if log else top * 0.01)
            ax.annotate(text, (bar.get_x() + bar.get_width() / 2, y), ha="center",
                        va="bottom", fontsize=7, rotation=90, xytext=(0, 2),
                        textcoords="offset points")
    if target is not None:
        ax.axhline(target[0], color="#555555", linestyle="--", linewidth=1, label=target[1])
    ax.set_xticks(range(len(groups)), groups)
    if log:
        ax.set_yscale("log")
    ax.yaxis.set_major_formatter(_number_format(log))
    ax.set_ylim(bottom=bottom / 3 if log else 0, top=top * (8 if log else 1.25))
    _style(ax, title, ylabel)
    ax.legend(fontsize=8, frameon=False, ncols=min(3, len(series)), loc="upper center",
              bbox_to_anchor=(0.5, -0.16))
    return _finish(fig, path)


def horizontal_bars(path: Path, title: str, xlabel: str,
                    rows: Sequence[tuple[str, str, float | None, str]],
                    log: bool = True, target: tuple[float, str] | None = None) -> Path:
    """One bar per row: (colour key, label, value or None, text shown at the bar's end)."""
    fig, ax = _pyplot().subplots(figsize=(9, 0.55 * len(rows) + 1.4))
    labels = [label for _, label, _, _ in rows]
    values = [v if v else 0 for _, _, v, _ in rows]
    ys = list(range(len(rows)))[::-1]
    ax.barh(ys, values, 0.6, color=[COLORS.get(c, c) for c, _, _, _ in rows])
    smallest = min((v for v in values if v), default=1.0)
    for y, value, (_, _, _, text) in zip(ys, values, rows, strict=True):
        ax.annotate(text, (value if value else smallest, y), va="center", fontsize=8,
                    xytext=(4, 0), textcoords="offset points")
    if target is not None:
        ax.axvline(target[0], color="#555555", linestyle="--", linewidth=1)
        ax.text(target[0], 1.0, f" {target[1]}", ha="left", va="top", fontsize=8,
                color="#555555", transform=ax.get_xaxis_transform())
    ax.set_yticks(ys, labels)
    if log:
        ax.set_xscale("log")
        low = min(smallest, target[0] if target else smallest)
        ax.set_xlim(low / 3, max([*values, smallest]) * 40)
    else:
        ax.set_xlim(0, max([*values, 1.0]) * 1.35)
    ax.xaxis.set_major_formatter(_number_format(log))
    ax.set_title(title, fontsize=12, loc="left")
    ax.set_xlabel(xlabel)
    ax.grid(axis="x", alpha=0.3)
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    return _finish(fig, path)


def time_series(path: Path, title: str, ylabel: str,
                series: Sequence[tuple[str, str, Sequence[tuple[float, float]]]],
                spans: Sequence[tuple[float, float, str]] = (),
                bands: Sequence[tuple[float, float, str]] = ()) -> Path:
    """Lines over time (x in minutes): ``series`` holds (colour key, legend label, points of
    (seconds, value)); ``spans`` shade intervals (seconds) with a label (the faults), ``bands``
    shade value ranges with a label (a target)."""
    fig, ax = _pyplot().subplots(figsize=(9, 4.6))
    for start, end, label in spans:
        ax.axvspan(start / 60, max(end, start + 1) / 60, color="#cc3333", alpha=0.12, lw=0)
        ax.text(start / 60, 1.0, label, rotation=90, fontsize=6, va="top", ha="right",
                color="#993333", transform=ax.get_xaxis_transform())
    for low, high, label in bands:
        ax.axhspan(low, high, color="#3a9a4a", alpha=0.10, lw=0, label=label)
    for color, label, points in series:
        ax.plot([t / 60 for t, _ in points], [v for _, v in points], linewidth=1.2,
                color=COLORS.get(color, color), label=label)
    ax.set_xlabel("minutes since the load started")
    _style(ax, title, ylabel)
    ax.legend(fontsize=8, frameon=False, loc="lower right")
    return _finish(fig, path)
