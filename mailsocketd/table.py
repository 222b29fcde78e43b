"""Reading TOML tables with types: every error names the full dotted key.

Shared by the daemon's own settings (``mailsocketd.config``) and the mail side's
``[accounts.NAME]``, ``[imap]`` and ``[smtp]`` tables.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration value is missing, of the wrong type or out of range."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"{key}: {problem}" if key else problem)
        self.key = key
        self.problem = problem


class Table:
    """A TOML table being read: typed getters that name the full key in every error.

    Keys that are read are remembered, so that ``finish()`` can refuse the ones nobody read.
    With an ``errors`` list a bad value is recorded there (and its default returned) instead of
    raised, so that one reading reports every bad key; sub-tables share the list.
    """

    def __init__(self, raw: Mapping[str, Any], path: str,
                 errors: list[ConfigError] | None = None) -> None:
        self._raw = raw
        self._path = path
        self._seen: set[str] = set()
        self._errors = errors

    def _fail(self, error: ConfigError) -> None:
        if self._errors is None:
            raise error
        self._errors.append(error)

    def key(self, name: str) -> str:
        """The full dotted name of ``name`` inside this table."""
        return f"{self._path}.{name}" if self._path else name

    def has(self, name: str) -> bool:
        return name in self._raw

    def names(self) -> list[str]:
        """Every key of this table, in order (for a table whose keys are data, not settings)."""
        return list(self._raw)

    def _get(self, name: str, default: T, check: Callable[[Any], bool], want: str) -> Any:
        self._seen.add(name)
        if name not in self._raw:
            return default
        value = self._raw[name]
        if not check(value):
            self._fail(ConfigError(self.key(name), f"expected {want}, got {_describe(value)}"))
            return default
        return value

    def string(self, name: str, default: str) -> str:
        value: str = self._get(name, default, lambda v: isinstance(v, str) and v != "",
                               "a non-empty string")
        return value

    def optional_string(self, name: str) -> str | None:
        value: str | None = self._get(name, None, lambda v: isinstance(v, str) and v != "",
                                      "a non-empty string")
        return value

    def boolean(self, name: str, default: bool) -> bool:
        value: bool = self._get(name, default, lambda v: isinstance(v, bool), "true or false")
        return value

    def integer(self, name: str, default: int, minimum: int = 0,
                maximum: int | None = None) -> int:
        def ok(v: Any) -> bool:
            return (isinstance(v, int) and not isinstance(v, bool) and v >= minimum
                    and (maximum is None or v <= maximum))
        want = f"an integer >= {minimum}" + (f" and <= {maximum}" if maximum is not None else "")
        value: int = self._get(name, default, ok, want)
        return value

    def number(self, name: str, default: float, minimum: float = 0.0,
               maximum: float | None = None) -> float:
        """A finite number (an integer or a float; not inf, not nan) within the bounds."""
        def ok(v: Any) -> bool:  # inf and nan are no numbers of seconds or bytes
            return (isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
                    and v >= minimum and (maximum is None or v <= maximum))
        want = f"a number >= {minimum:g}" + (f" and <= {maximum:g}" if maximum is not None else "")
        return float(self._get(name, default, ok, want))

    def string_list(self, name: str, default: Iterable[str], allow_empty: bool = True
                    ) -> tuple[str, ...]:
        def ok(v: Any) -> bool:
            return (isinstance(v, list) and (allow_empty or len(v) > 0)
                    and all(isinstance(s, str) and s != "" for s in v))
        want = "a list of non-empty strings" + ("" if allow_empty else " (at least one)")
        return tuple(self._get(name, list(default), ok, want))

    def choice(self, name: str, default: str, choices: Iterable[str]) -> str:
        options = tuple(choices)
        value: str = self._get(name, default, lambda v: v in options,
                               "one of " + ", ".join(repr(c) for c in options))
        return value

    def table(self, name: str) -> Table:
        """A sub-table (an empty one when absent)."""
        raw: Mapping[str, Any] = self._get(name, {}, lambda v: isinstance(v, dict), "a table")
        return Table(raw, self.key(name), self._errors)

    def tables(self) -> dict[str, Table]:
        """Every key of this table as a sub-table (for ``[accounts.NAME]``)."""
        result = {}
        for name in self._raw:
            result[name] = self.table(name)
        return result

    def finish(self) -> None:
        """Refuse any key that no getter asked for."""
        for name in sorted(set(self._raw) - self._seen):
            self._fail(ConfigError(self.key(name), "unknown key (see docs/configuration.md)"))


def _describe(value: Any) -> str:
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{type(value).__name__} {text}"
