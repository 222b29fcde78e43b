"""Whether a figure meets its target: met, on the line, not met, or not measured.

A figure is judged together with the values it was reduced from (the ratio in each
repetition, each push latency): when the figure and those values are not all on the same side
of the target's line, the run cannot tell whether the target is met, and says so ("on the
line") instead of letting the median decide.  Standard library only, so that the test suite
can check it without matplotlib.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Literal

Comparison = Literal[">=", ">", "<=", "<"]
_COMPARE: dict[Comparison, Callable[[float, float], bool]] = {
    ">=": operator.ge, ">": operator.gt, "<=": operator.le, "<": operator.lt}


class Verdict(Enum):
    """How a figure stands against its target."""

    MET = "met"
    ON_THE_LINE = "on the line"
    NOT_MET = "not met"
    NOT_MEASURED = "not measured"

    @property
    def text(self) -> str:
        """As the report's targets table shows it."""
        return self.value if self is Verdict.NOT_MEASURED else f"**{self.value}**"


@dataclass(frozen=True)
class Target:
    """A target's line: ``value OP threshold`` passes (``Target(">=", 0.9)``: 0.9x or more)."""

    comparison: Comparison
    threshold: float

    def passes(self, value: float) -> bool:
        return _COMPARE[self.comparison](value, self.threshold)


def judge(value: float | None, target: Target, spread: Sequence[float] = ()) -> Verdict:
    """The verdict on ``value`` (the reported figure, typically a median or a ratio of
    medians), given the values behind it (``spread``: one per repetition or sample).

    Met when the figure and every value behind it pass; not met when none of them do; on the
    line when they disagree (some repetitions on each side of the line, or a figure on the
    other side of them all).  None means not measured."""
    if value is None:
        return Verdict.NOT_MEASURED
    sides = {target.passes(value), *(target.passes(v) for v in spread)}
    if len(sides) == 2:
        return Verdict.ON_THE_LINE
    return Verdict.MET if sides == {True} else Verdict.NOT_MET


ON_THE_LINE_NOTE = (
    "**on the line**: the figure's repetitions (or samples) fall on both sides of the "
    "target's line, so this run cannot tell whether the target is met, whichever side the "
    "median lands on. **met** and **not met** mean that the figure and every repetition "
    "behind it agree.")
