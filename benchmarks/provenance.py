"""What source the figures were measured on: the commit, and the files that differ from it.

A run from a tree with uncommitted changes to what is measured (the daemon, its Twisted
plugin, the benchmarks, the project file, the test helpers the benchmarks run) is not the run
of any commit.  Such a run is not refused: ``run.sh`` installs the working tree as it is, so
the figures are those of that tree.  The results record the modified files and a digest of
their changes, and the report says so at its top (``dirty_banner``).  Standard library only.
"""

from __future__ import annotations

import hashlib
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

# Paths whose uncommitted changes change what a run measures (the shared test helpers
# included: the mail section drives the daemon with tests/lineclient.py and runs its Dovecot
# and Postfix through tests/integration/mailserver.py).
MEASURED_PATHS = ("mailsocketd", "twisted", "benchmarks", "pyproject.toml",
                  "tests/lineclient.py", "tests/integration/mailserver.py",
                  "tests/integration/mailserver.sh")


def _git(repo: Path, *args: str) -> bytes:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, check=True,
                          timeout=60).stdout


def parse_status(porcelain: bytes) -> list[str]:
    """The paths in ``git status --porcelain=v1 -z`` output, sorted: modified, added,
    deleted, renamed (the new name) and untracked files alike."""
    entries = porcelain.decode("utf-8", errors="surrogateescape").split("\0")
    paths: list[str] = []
    i = 0
    while i < len(entries):
        entry = entries[i]
        i += 1
        if len(entry) < 4:
            continue
        code, path = entry[:2], entry[3:]
        if "R" in code or "C" in code:
            i += 1  # the original name follows a rename or copy
        paths.append(path)
    return sorted(paths)


def tree_state(repo: Path, paths: Sequence[str] = MEASURED_PATHS) -> dict[str, Any]:
    """The commit checked out and the measured files that differ from it.

    ``{"commit": sha, "short": abbreviated sha, "dirty": [paths], "diff_sha256": digest of
    the changes (None when clean), "paths": the paths watched}``; outside a git checkout (or
    without git), commit and dirty are None and ``error`` says why."""
    watched = list(paths)
    try:
        commit = _git(repo, "rev-parse", "HEAD").decode().strip()
        short = _git(repo, "rev-parse", "--short", "HEAD").decode().strip()
        status = _git(repo, "status", "--porcelain=v1", "-z", "--untracked-files=all", "--",
                      *watched)
        dirty = parse_status(status)
        digest = None
        if dirty:
            h = hashlib.sha256(_git(repo, "diff", "HEAD", "--binary", "--", *watched))
            untracked = _git(repo, "ls-files", "-z", "--others", "--exclude-standard", "--",
                             *watched).split(b"\0")
            for name in sorted(n for n in untracked if n):
                h.update(b"\0untracked\0" + name + b"\0")
                file = repo / name.decode("utf-8", errors="surrogateescape")
                if file.is_file():
                    h.update(file.read_bytes())
            digest = h.hexdigest()
    except (OSError, subprocess.SubprocessError) as e:
        return {"commit": None, "short": None, "dirty": None, "diff_sha256": None,
                "paths": watched, "error": f"not a git checkout, or git failed: {e}"}
    return {"commit": commit, "short": short, "dirty": dirty, "diff_sha256": digest,
            "paths": watched}


def section_tree(run: dict[str, Any]) -> dict[str, Any]:
    """A section's tree state; results saved before it was recorded only had a commit
    string such as ``15705ca (with uncommitted changes)``: dirty, files unknown."""
    if "tree" in run:
        tree: dict[str, Any] = run["tree"]
        return tree
    commit = str(run.get("machine", {}).get("commit", ""))
    short = commit.split(" ", 1)[0] or None
    dirty: list[str] | None = [] if commit and "uncommitted" not in commit else None
    return {"commit": short, "short": short, "dirty": dirty, "diff_sha256": None,
            "paths": [], **({"error": "modified files not recorded"} if dirty is None
                            and short else {})}


def commit_text(tree: dict[str, Any]) -> str:
    """The machine table's commit cell: ``15705ca``, or what differed from it."""
    short = tree.get("short")
    dirty = tree.get("dirty")
    if short is None:
        return "unknown (" + str(tree.get("error", "no commit recorded")) + ")"
    if dirty is None:
        return f"{short} + uncommitted changes (files not recorded)"
    if dirty:
        return f"{short} + {_files(len(dirty))} modified (dirty tree)"
    return str(short)


def _files(n: int) -> str:
    return f"{n} file" if n == 1 else f"{n} files"


def dirty_banner(runs: dict[str, dict[str, Any]]) -> list[str]:
    """Lines for the top of the report when any section was measured on a dirty tree (or on
    an unknown one); none for clean runs.  ``runs``: section name -> saved run."""
    notes: list[str] = []
    for section, run in runs.items():
        tree = section_tree(run)
        dirty = tree.get("dirty")
        if tree.get("short") is None:
            notes.append(f"**Source unknown ({section} section)**: "
                         f"{tree.get('error', 'no commit recorded')}. These figures cannot be "
                         "traced to a commit.")
        elif dirty is None:
            notes.append(f"**Measured on a dirty tree ({section} section)**: uncommitted "
                         f"changes on top of {tree['short']}; which files was not recorded. "
                         "These figures are not those of any commit.")
        elif dirty:
            shown = ", ".join(f"`{p}`" for p in dirty[:10])
            more = f" and {len(dirty) - 10} more" if len(dirty) > 10 else ""
            digest = tree.get("diff_sha256")
            notes.append(f"**Measured on a dirty tree: {_files(len(dirty))} modified** "
                         f"({section} section, on top of {tree['short']}): {shown}{more}. "
                         "These figures are not those of any commit"
                         + (f" (sha256 of the changes: {digest[:12]})" if digest else "")
                         + ".")
    lines: list[str] = []
    for note in notes:
        lines += [*([">"] if lines else []), f"> {note}"]
    return [*lines, ""] if lines else []
