"""The long run's arithmetic and verdicts (benchmarks/long_run.py, report_long.py), on synthetic
samples: no server, no daemon, no matplotlib (the plot is replaced by a stub)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
if str(BENCH) not in sys.path:
    sys.path.append(str(BENCH))

import long_run  # noqa: E402
import plots  # noqa: E402
import report_long  # noqa: E402


def test_slope_of_a_line_and_of_a_flat_series():
    assert long_run.slope_mb_per_min([(t, 50 + t / 60) for t in range(0, 600, 10)]) == 1.0
    assert long_run.slope_mb_per_min([(t, 50.0) for t in range(0, 600, 10)]) == 0.0
    assert long_run.slope_mb_per_min([(0, 1.0)]) is None


def test_watching_share_counts_logged_in_states_in_the_window():
    samples = [(0.0, {"alice": "connecting", "bob": "idling"}),
               (1.0, {"alice": "idling", "bob": "checking"}),
               (2.0, {"alice": "backing-off", "bob": "connected"}),
               (3.0, {"alice": "idling", "bob": "idling"})]
    assert long_run.watching_share(samples, 0.0, 4.0) == {"alice": 0.5, "bob": 1.0}
    assert long_run.watching_share(samples, 1.0, 3.0) == {"alice": 0.5, "bob": 1.0}
    assert long_run.watching_share(samples, 0.0, 4.0, frozenset({"idling"})) == {
        "alice": 0.5, "bob": 0.5}


def test_recovery_is_measured_from_the_server_being_back():
    samples = [(10.0, {"alice": "idling", "bob": "idling"}),
               (12.0, {"alice": "backing-off", "bob": "backing-off"}),
               (14.5, {"alice": "idling", "bob": "connecting"}),
               (15.0, {"alice": "idling", "bob": "checking"})]
    rows = long_run.recovery(samples, [{"kind": "dovecot-crash", "began_s": 11.0,
                                        "back_s": 13.0}], [], [])
    assert rows[0]["accounts_watching_after_s"] == 2.0
    never = long_run.recovery(samples[:3], [{"kind": "dovecot-crash", "began_s": 11.0,
                                             "back_s": 13.0}], [], [])
    assert never[0]["accounts_watching_after_s"] is None


def result(rss: list[tuple[float, float]], watching: float = 0.99, worst: float = 1.5,
           duplicated: list[str] | None = None) -> dict[str, Any]:
    s = long_run.QUICK
    load_s = s.minutes * 60
    return {"results": {
        "settings": {**s.__dict__},
        "memory": long_run.memory_figures(rss, s, load_s),
        "faults": [{"kind": "dovecot-restart", "began_s": 25.0, "back_s": 27.0,
                    "accounts_watching_after_s": worst, "watchers_again_after_s": 1.0,
                    "mail_users_ok_after_s": 2.0}],
        "accounts_watching_share": {"alice": watching, "bob": 1.0},
        "accounts_idling_share": {"alice": watching, "bob": 1.0},
        "mail": {"sends_ok": 100, "sends_failed": 3, "deletes_ok": 90, "kept_once": 10,
                 "kept_missing": [], "duplicated": duplicated or [],
                 "deleted_still_there": [], "failed_but_delivered": [], "queue_empty": True,
                 "failed_errors": {}},
        "commands": {"time": 1000, "send": 100}, "time_latency": {"median_ms": 0.5,
                                                                  "p99_ms": 3.0},
        "time_latency_during_faults": {}, "time_errors": {}, "threads_max": 7,
        "watchers": {"new_mail": 5, "sessions_lost": 2}, "misbehaving": {},
        "daemon_log": {"tracebacks": 0}, "daemon_alive": True, "rss_mb": rss}}


def flat(level: float, after: float) -> list[tuple[float, float]]:
    s = long_run.QUICK
    load_s = s.minutes * 60
    return ([(float(t), level - 5 + 5 * min(1.0, t / s.warmup_s)) for t in range(0, int(load_s))]
            + [(float(t), after) for t in range(int(load_s), int(load_s + s.after_s))])


def verdicts(run: dict[str, Any]) -> list[str]:
    return [row[2] for row in report_long.targets(run)]


def test_every_target_met():
    assert verdicts(result(flat(60.0, 60.5))) == ["yes"] * 5


def test_growing_memory_and_memory_not_given_back_are_not_met():
    s = long_run.QUICK
    growing = [(float(t), 60 + t / 30) for t in range(0, int(s.minutes * 60 + s.after_s))]
    assert verdicts(result(growing))[:2] == ["**no**", "**no**"]


def test_accounts_not_watching_and_mail_twice_are_not_met():
    run = result(flat(60.0, 60.0), watching=0.6, worst=30.0, duplicated=["lr-a0-1-1"])
    assert verdicts(run)[2:] == ["**no**", "**no**", "**no**"]


def test_the_section_renders(monkeypatch, tmp_path):
    monkeypatch.setattr(plots, "time_series", lambda path, *a, **k: path)
    lines, rows, pngs = report_long.section(result(flat(60.0, 60.5)), tmp_path)
    text = "\n".join(lines)
    assert "## Long run" in text and "long_rss.png" in text and len(rows) == 5
    assert pngs == [tmp_path / "long_rss.png"]


@pytest.mark.parametrize("minutes", [long_run.FULL.minutes, long_run.QUICK.minutes])
def test_faults_fit_in_the_load_and_leave_time_to_recover(minutes):
    s = long_run.FULL if minutes == long_run.FULL.minutes else long_run.QUICK
    n = 0
    while s.fault_every_s * (n + 1) + s.dovecot_down_s + 25 <= minutes * 60:
        n += 1
    assert n >= 4  # every kind of fault at least once


def test_a_run_without_faults_has_only_the_memory_and_mail_targets(monkeypatch, tmp_path):
    run = result(flat(60.0, 60.5))
    run["results"]["settings"]["faults"] = False
    run["results"]["faults"] = []
    rows = report_long.targets(run)
    assert [r[0].split(":")[0] for r in rows] == ["long run without faults"] * 3
    assert [r[2] for r in rows] == ["yes"] * 3
    monkeypatch.setattr(plots, "time_series", lambda path, *a, **k: path)
    lines, _, pngs = report_long.section(run, tmp_path)
    text = "\n".join(lines)
    assert "without faults" in text and "Recovery after each fault" not in text
    assert pngs == [tmp_path / "calm_rss.png"]


def test_memory_by_kind_after_warm_up_over_the_load_and_at_the_end():
    s = long_run.QUICK
    load_s = s.minutes * 60
    kinds = [(float(t), {"malloc": 10.0 + (t >= 100), "anonymous": 20.0, "files": 5.0})
             for t in range(0, int(load_s + s.after_s), 10)]
    k = long_run.kinds_figures(kinds, s, load_s)
    assert k["warm"] == {"malloc": 10.0, "anonymous": 20.0, "files": 5.0}
    assert k["steady_range"]["malloc"] == [10.0, 11.0]
    assert k["end"]["malloc"] == 11.0
    assert long_run.kinds_figures([], s, load_s) == {}


def test_memory_by_kind_of_this_process_adds_up_to_about_its_rss():
    kinds = long_run.memory_by_kind(os.getpid())
    assert set(kinds) == {"malloc", "anonymous", "files"}
    rss_mb = int(Path(f"/proc/{os.getpid()}/status").read_text().split("VmRSS:")[1].split()[0])
    assert abs(sum(kinds.values()) - rss_mb / 1024) < 0.2 * rss_mb / 1024 + 1
