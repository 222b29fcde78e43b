"""The benchmark report's judgement (benchmarks/verdict.py, the targets of report_line.py and
report_mail.py), its record of the source measured (benchmarks/provenance.py), and rebuilding
docs/benchmarks.md from a results file alone (benchmarks/report.py).

No benchmark runs here: the results are synthetic, and the plots are replaced by stubs, so
matplotlib (the ``bench`` extra) is not needed.  benchmarks/ is not a package: its directory is
appended to sys.path, as running ``python benchmarks/report.py`` puts it first.
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
if str(BENCH) not in sys.path:
    sys.path.append(str(BENCH))

import plots  # noqa: E402
import provenance  # noqa: E402
import report  # noqa: E402
import report_line  # noqa: E402
import report_mail  # noqa: E402
from stats import line_figures  # noqa: E402
from verdict import Target, Verdict, judge  # noqa: E402

AT_LEAST_09 = Target(">=", 0.9)
UNDER_1 = Target("<", 1.0)


# -- the verdict


def test_met_when_the_figure_and_every_repetition_pass():
    assert judge(0.95, AT_LEAST_09, [0.91, 0.97, 1.02]) is Verdict.MET


def test_on_the_line_when_the_median_passes_but_a_repetition_does_not():
    # the published run of 15705ca: 0.90x at 100 connections, 0.73x to 1.07x by repetition,
    # reported then as "met"
    assert judge(0.90, AT_LEAST_09, [0.73, 0.85, 0.90, 1.01, 1.07]) is Verdict.ON_THE_LINE


def test_on_the_line_when_the_median_misses_but_a_repetition_passes():
    assert judge(0.85, AT_LEAST_09, [0.80, 0.84, 0.93]) is Verdict.ON_THE_LINE


def test_on_the_line_when_the_figure_is_on_the_other_side_of_every_repetition():
    # a ratio of medians need not lie within the repetitions' ratios
    assert judge(0.92, AT_LEAST_09, [0.85, 0.88]) is Verdict.ON_THE_LINE


def test_not_met_when_nothing_passes():
    assert judge(0.80, AT_LEAST_09, [0.70, 0.85, 0.89]) is Verdict.NOT_MET


def test_without_a_spread_the_figure_alone_decides():
    assert judge(0.9, AT_LEAST_09) is Verdict.MET  # >= includes the line
    assert judge(0.89, AT_LEAST_09) is Verdict.NOT_MET
    assert judge(1.0, UNDER_1) is Verdict.NOT_MET  # < does not
    assert judge(0.999, UNDER_1) is Verdict.MET


def test_not_measured():
    assert judge(None, AT_LEAST_09, [0.95]) is Verdict.NOT_MEASURED


def test_verdict_texts():
    assert [v.text for v in Verdict] == ["**met**", "**on the line**", "**not met**",
                                         "not measured"]


# -- synthetic results, shaped as bench.py saves them

KINDS = [("mailsocketd", "mailsocketd", False), ("mailsocketd_log", "mailsocketd --log-commands",
                                                  False),
         ("twisted_min", "twisted_min.py", False), ("seed_select", "seed_select.php", True),
         ("seed_fork", "seed_fork.php", True)]
WORKLOADS = [("rr1", "1 connection", 1, 1, False), ("rr100", "100 connections", 100, 1, False),
             ("rr1000", "1,000 connections", 1000, 1, False),
             ("pipe16", "100 connections, pipelining 16", 100, 16, False),
             ("connrate", "new connections (8 workers)", 8, 1, True)]


def workload_result(rps: float, conns: int) -> dict[str, object]:
    return {"rps": rps, "p50_us": 1000.0, "p99_us": 2500.0, "errors": 0, "ok": conns,
            "setup_ms": 3.0, "cpu0": 90.0, "cpu1": 40.0, "steal": 0.5,
            "loadgen_cpu_pct": 40.0, "server_cpu_pct": 99.0, "cpu0_others_pct": 0.0,
            "cpu0_interrupts_pct": 10.0, "alive": True, "line": "rps=..."}


def line_results(rps: dict[tuple[str, str], list[float]]) -> dict[str, object]:
    """A line section; ``rps[kind, workload]`` overrides the default 10,000 req/s per
    repetition (3 repetitions)."""
    reps: list[dict[str, dict[str, object]]] = []
    for i in range(3):
        rep: dict[str, dict[str, object]] = {}
        for kind, _, seed in KINDS:
            figures: dict[str, object] = {"startup_s": 0.3}
            for key, _, conns, pipeline, _ in WORKLOADS:
                if seed and pipeline > 1:
                    continue
                figures[key] = workload_result(rps.get((kind, key), [10_000.0] * 3)[i], conns)
            rep[kind] = figures
        reps.append(rep)
    idle = {kind: {"conns": 10_000, "ok": 10_000, "errors": 0, "setup_ms": 900.0,
                   "answers_new_client": True, "base_rss_kb": 40_000, "base_pss_kb": 40_000,
                   "held_rss_kb": 57_000, "held_pss_kb": 57_000, "processes": 1,
                   "loadgen_cpu_s": 1.0, "rss_per_conn_b": 1740.8, "pss_per_conn_b": 1740.8}
            for kind, _, _ in KINDS if kind != "mailsocketd_log"}
    return {"settings": {"runs": 3, "seconds": 3.0, "warmup": 1.0, "idle_conns": 10_000,
                         "setup_timeout": 90.0},
            "config": "[line]\nmax_connections = 12000\n",
            "kinds": [{"key": k, "label": label, "seed": seed} for k, label, seed in KINDS],
            "workloads": [{"key": k, "label": label, "conns": c, "pipeline": p,
                           "connect_rate": cr} for k, label, c, p, cr in WORKLOADS],
            "not_applicable": {f"{k}/pipe16": "n/a (cannot pipeline)"
                               for k, _, seed in KINDS if seed},
            "repetitions": reps, "idle": idle}


def mail_results(push_ms: list[float]) -> dict[str, object]:
    def row(median: float) -> dict[str, object]:
        return {"median_ms": median, "p99_ms": median * 1.3, "rounds": 200}

    php = {"check_ms": 6.2, "list20_ms": 7.8}
    imaplib = {"fresh_status_ms": 6.0, "open_status_ms": 0.1, "fetch20_ms": 0.2}
    return {
        "settings": {"big_mailbox": 100_000, "anchor_rounds": 11, "check_rounds": 200,
                     "list_rounds": 200, "read_rounds": 5, "push_rounds": len(push_ms),
                     "users": 100, "users_seconds": 5.0},
        "mailboxes": {"populate_big_s": 5.0, "big_uid": 10, "big_bytes": 2_100_000,
                      "small_uid": {"alice": 1, "bob": 1}},
        "anchors": {"alice": {"php": php, "imaplib": imaplib},
                    "bob": {"php": php, "imaplib": imaplib}},
        "poll_intervals_s": [60, 300],
        "daemon_startup_s": 0.4,
        "mailsocketd": {
            "rows": {"check/alice": row(0.8) | {"reply": "ok INBOX messages=10"},
                     "check/bob": row(0.87) | {"reply": "ok INBOX messages=100000"},
                     "list20/alice": row(2.0) | {"reply_lines": 21},
                     "list20/bob": row(2.7) | {"reply_lines": 21},
                     "read_big": row(36.0) | {"rounds": 5, "reply_lines": 29,
                                              "reply_chars": 646, "hwm_before_kb": 52_000,
                                              "hwm_after_kb": 75_000}},
            "push": {"median_ms": sorted(push_ms)[len(push_ms) // 2], "max_ms": max(push_ms),
                     "samples_ms": push_ms, "last_line": "* new mail: INBOX messages=15"},
            "many_users": {"clients": 100, "seconds": 5.0, "commands": 1745,
                           "commands_per_s": 349.0, "loops_per_s": 116.0,
                           "median_ms": {"check": 29.4, "list 20": 28.6, "read": 31.3},
                           "errors": [], "failed_clients": 0, "rss_idle_kb": 73_000,
                           "rss_logged_in_kb": 73_100, "rss_end_kb": 73_700,
                           "hwm_kb": 75_000, "client_cpu_pct": 3.0, "daemon_cpu_pct": 22.0,
                           "cpu1_busy_pct": 100.0}}}


def saved_run(section: str, results: dict[str, object], dirty: list[str] | None = None
              ) -> dict[str, object]:
    return {"section": section, "mode": "full", "started": "2026-12-01 00:42:05 UTC",
            "elapsed_s": 584.0, "command": "bash benchmarks/run.sh",
            "machine": {"cpu": "AMD EPYC, 2 CPUs", "python": "3.11.7",
                        "mailsocketd": "0.1.0 /venv/lib/python3.11/site-packages/x.py"},
            "tree": {"commit": "15705ca" + "0" * 33, "short": "15705ca", "dirty": dirty or [],
                     "diff_sha256": "ab" * 32 if dirty else None,
                     "paths": list(provenance.MEASURED_PATHS)},
            "results": results}


# the repetitions' req/s: rr100 straddles 0.9x (0.80, 0.95, 1.00), rr1000 is over it in each
# (0.95, 0.96, 1.10), the connection rate is under 50x the fork server's in each
STRADDLING = {("mailsocketd", "rr100"): [8_000.0, 9_500.0, 10_000.0],
              ("mailsocketd", "rr1000"): [9_500.0, 9_600.0, 11_000.0],
              ("mailsocketd", "connrate"): [4_000.0, 4_500.0, 4_900.0],
              ("seed_fork", "connrate"): [100.0] * 3}


def line_target_verdicts(rps: dict[tuple[str, str], list[float]]) -> dict[str, str]:
    line = line_results(rps)
    rows = report_line.targets(line, line_figures(line))
    return {target: verdict for target, _, verdict in rows}


def test_line_targets_straddling_met_and_missed():
    verdicts = line_target_verdicts(STRADDLING)
    assert verdicts[">= 0.9x twisted_min throughput at 100 connections (mailsocketd)"] == \
        "**on the line**"
    assert verdicts[">= 0.9x twisted_min throughput at 1,000 connections (mailsocketd)"] == \
        "**met**"
    assert verdicts[">= 50x the fork server's connection rate"] == "**not met**"
    assert verdicts["10,000 connections held with <= 4 KB each"] == "**met**"
    assert verdicts[">= 0.9x twisted_min throughput at 100 connections "
                    "(mailsocketd --log-commands)"].startswith("for information")


def test_line_target_with_a_median_over_the_line_and_a_repetition_under_it():
    # median ratio 0.95 (9,500 vs 10,000), but one repetition at 0.85: not "met"
    verdicts = line_target_verdicts({("mailsocketd", "rr100"): [9_500.0, 8_500.0, 9_800.0]})
    assert verdicts[">= 0.9x twisted_min throughput at 100 connections (mailsocketd)"] == \
        "**on the line**"


def test_idle_target_not_met_when_not_all_connections_were_held():
    line = line_results({})
    line["idle"]["mailsocketd"] |= {"ok": 9_000}  # type: ignore[index]
    rows = report_line.targets(line, line_figures(line))
    assert [v for t, _, v in rows if t.startswith("10,000 connections")] == ["**not met**"]


def test_push_target_on_the_line_when_one_message_took_over_a_second():
    rows = {t: v for t, _, v in report_mail.targets(mail_results([500.0, 520.0, 1200.0]))}
    assert rows["push under 1 s"] == "**on the line**"
    rows = {t: v for t, _, v in report_mail.targets(mail_results([500.0, 520.0, 540.0]))}
    assert rows["push under 1 s"] == "**met**"
    assert rows["`check` through the line service under 1 ms on 100,000 messages"] == "**met**"
    assert rows["`list 20` on 100,000 messages within 1.5x of `list 20` on 10"] == "**met**"


# -- the source measured: dirty-tree detection


def test_parse_status_names_every_kind_of_change():
    porcelain = (b" M mailsocketd/line/protocol.py\0"
                 b"D  benchmarks/old.py\0"
                 b"R  benchmarks/new.py\0benchmarks/was.py\0"
                 b"?? mailsocketd/new_module.py\0"
                 b"A  pyproject.toml\0")
    assert provenance.parse_status(porcelain) == [
        "benchmarks/new.py", "benchmarks/old.py", "mailsocketd/line/protocol.py",
        "mailsocketd/new_module.py", "pyproject.toml"]
    assert provenance.parse_status(b"") == []


def git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.test",
                    "-c", "commit.gpgsign=false", *args], check=True, capture_output=True)


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    for name in ("mailsocketd/server.py", "benchmarks/bench.py", "docs/benchmarks.md",
                 "pyproject.toml", "tests/lineclient.py", "tests/unit/test_x.py"):
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_text(f"# {name}\n")
    (repo / ".gitignore").write_text("benchmarks/results/\n")
    git(repo, "init", "-q")
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", "initial")
    return repo


def test_a_clean_tree(checkout: Path):
    tree = provenance.tree_state(checkout)
    assert tree["dirty"] == [] and tree["diff_sha256"] is None
    assert len(tree["commit"]) == 40 and tree["commit"].startswith(tree["short"])
    assert provenance.commit_text(tree) == tree["short"]


def test_changes_outside_the_measured_paths_leave_the_tree_clean(checkout: Path):
    (checkout / "docs/benchmarks.md").write_text("regenerated\n")
    (checkout / "tests/unit/test_x.py").write_text("changed\n")
    (checkout / "benchmarks/results").mkdir()
    (checkout / "benchmarks/results/line-1.json").write_text("{}\n")  # ignored by git
    assert provenance.tree_state(checkout)["dirty"] == []


def test_a_dirty_tree_names_its_files_and_digests_the_changes(checkout: Path):
    (checkout / "mailsocketd/server.py").write_text("changed\n")
    (checkout / "benchmarks/new_bench.py").write_text("new\n")  # untracked: installed too
    (checkout / "tests/lineclient.py").unlink()
    tree = provenance.tree_state(checkout)
    assert tree["dirty"] == ["benchmarks/new_bench.py", "mailsocketd/server.py",
                             "tests/lineclient.py"]
    assert provenance.commit_text(tree) == f"{tree['short']} + 3 files modified (dirty tree)"
    (checkout / "mailsocketd/server.py").write_text("changed again\n")
    again = provenance.tree_state(checkout)
    assert again["dirty"] == tree["dirty"] and again["diff_sha256"] != tree["diff_sha256"]


def test_not_a_git_checkout(tmp_path: Path):
    tree = provenance.tree_state(tmp_path)
    assert tree["commit"] is None and tree["dirty"] is None and "git" in tree["error"]
    assert provenance.commit_text(tree).startswith("unknown (")


def test_the_banner_for_clean_dirty_and_old_results():
    clean = saved_run("line", {})
    dirty = saved_run("mail", {}, dirty=["mailsocketd/a.py", "pyproject.toml"])
    assert provenance.dirty_banner({"line": clean}) == []
    banner = "\n".join(provenance.dirty_banner({"line": clean, "mail": dirty}))
    assert banner.startswith("> **Measured on a dirty tree: 2 files modified** (mail section, "
                             "on top of 15705ca): `mailsocketd/a.py`, `pyproject.toml`.")
    old = {k: v for k, v in clean.items() if k != "tree"}
    old["machine"] = {"commit": "15705ca (with uncommitted changes)"}
    assert "**Measured on a dirty tree (line section)**" in \
        provenance.dirty_banner({"line": old})[0]
    old["machine"] = {"commit": "15705ca"}
    assert provenance.dirty_banner({"line": old}) == []


# -- the report, rebuilt from the results file alone


@pytest.fixture
def no_plots(monkeypatch: pytest.MonkeyPatch) -> None:
    """The plot functions replaced by stubs that write a placeholder (no matplotlib)."""
    def stub(path: Path, *args: object, **kwargs: object) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"png")
        return path

    monkeypatch.setattr(plots, "grouped_bars", stub)
    monkeypatch.setattr(plots, "horizontal_bars", stub)


def results_file(tmp_path: Path, dirty: list[str] | None = None) -> Path:
    runs = {"line": saved_run("line", line_results(STRADDLING), dirty),
            "mail": saved_run("mail", mail_results([500.0, 520.0, 540.0]))}
    return report.save_runs(runs, tmp_path / "in" / "results.json")


@pytest.mark.usefixtures("no_plots")
def test_report_from_the_results_file_alone(tmp_path: Path):
    source = results_file(tmp_path)
    docs = tmp_path / "docs"
    assert report.main(["--from", str(source), "--docs", str(docs)]) == 0
    text = (docs / "benchmarks.md").read_text()
    assert "dirty tree" not in text
    # a median over the line (0.95x), a repetition under it (0.80x)
    assert ("| >= 0.9x twisted_min throughput at 100 connections (mailsocketd) | 0.95x (9,500 "
            "vs 10,000 req/s; 0.80x to 1.00x by repetition) | **on the line** |") in text
    assert "**on the line**: the figure's repetitions" in text
    assert "| commit | 15705ca | 15705ca |" in text
    # the raw results are written beside the report, and rebuild it unchanged
    published = docs / "benchmarks" / "results.json"
    assert report.load_runs(published) == report.load_runs(source)
    assert json.loads(published.read_text())["format"] == report.FORMAT
    assert report.main(["--from", str(published), "--docs", str(docs)]) == 0
    assert (docs / "benchmarks.md").read_text() == text


@pytest.mark.usefixtures("no_plots")
def test_report_of_a_dirty_run_says_so_before_the_targets(tmp_path: Path):
    source = results_file(tmp_path, dirty=["mailsocketd/line/protocol.py"])
    docs = tmp_path / "docs"
    report.main(["--from", str(source), "--docs", str(docs)])
    text = (docs / "benchmarks.md").read_text()
    banner = text.index("> **Measured on a dirty tree: 1 file modified** (line section")
    assert banner < text.index("## Targets")
    assert "| commit | 15705ca + 1 file modified (dirty tree) | 15705ca |" in text


def test_load_runs_from_section_files_and_a_directory(tmp_path: Path):
    line = saved_run("line", {"x": 1})
    older = copy.deepcopy(line) | {"started": "older"}
    (tmp_path / "line-20261130T000000.json").write_text(json.dumps(older))
    (tmp_path / "line-20261201T000000.json").write_text(json.dumps(line))
    assert report.load_runs(tmp_path) == {"line": line}
    assert report.load_runs(tmp_path / "line-20261130T000000.json") == {"line": older}
    (tmp_path / "other.json").write_text("{}")
    with pytest.raises(ValueError, match="neither"):
        report.load_runs(tmp_path / "other.json")


@pytest.mark.usefixtures("no_plots")
def test_one_section_replaces_its_published_results_and_keeps_the_other(tmp_path: Path):
    docs = tmp_path / "docs"
    report.main(["--from", str(results_file(tmp_path)), "--docs", str(docs)])
    newer = saved_run("line", line_results({}), dirty=["benchmarks/line_bench.py"])
    section_file = tmp_path / "line-20261207T000000.json"
    section_file.write_text(json.dumps(newer))
    report.main(["--from", str(section_file), "--docs", str(docs)])
    published = report.load_runs(docs / "benchmarks" / "results.json")
    assert published["line"] == newer
    assert published["mail"]["results"] == mail_results([500.0, 520.0, 540.0])
    text = (docs / "benchmarks.md").read_text()
    assert "## Mail" in text and "1 file modified** (line section" in text


def test_metrics_overhead_is_judged_against_the_same_daemon_without_metrics():
    """[metrics] on against off in the same repetitions: 0.97x meets ">= 0.95x", 0.9x does
    not; a run from before the kind existed shows neither the rows nor the table."""
    line = line_results({})
    assert report_line.metrics_targets(line, line_figures(line)) == []
    for rep in line["repetitions"]:  # type: ignore[attr-defined]
        rep["mailsocketd_metrics"] = copy.deepcopy(rep["mailsocketd"])
        for work, factor in (("rr100", 0.97), ("rr1000", 0.9), ("pipe16", 0.96)):
            figure = rep["mailsocketd_metrics"][work]
            figure["rps"] = figure["rps"] * factor
    line["kinds"].append({"key": "mailsocketd_metrics",  # type: ignore[attr-defined]
                          "label": "mailsocketd [metrics]", "seed": False})
    figures = line_figures(line)
    rows = report_line.metrics_targets(line, figures)
    assert [row[2] for row in rows] == ["**met**", "**not met**", "**met**"]
    assert rows[0][1].startswith("0.97x")
    text = report_line.metrics_overhead(line, figures)
    assert text[0] == "### Metrics overhead"
    assert any(row.startswith("| 100 connections | 10,000 | 9,700 | 0.97x") for row in text)


def metrics_cost(pipelined_ns: list[float], single_ns: list[float]) -> dict[str, object]:
    """metrics_cost.py's results: count_cost.py's block medians (their median is the figure)
    and two pairs of end-to-end runs per workload."""
    def shape(blocks: list[float], lines: int) -> dict[str, object]:
        return {"lines_per_read": lines, "pairs": 40, "requests_per_timing": 16_000,
                "off_ns_median": 1000.0, "on_ns_median": 1000.0 + sorted(blocks)[2],
                "delta_ns": sorted(blocks)[2], "block_delta_ns": blocks}

    pairs = [{"mailsocketd": 10_000.0, "mailsocketd_metrics": 9_800.0},
             {"mailsocketd": 10_000.0, "mailsocketd_metrics": 10_300.0}]
    return {"in_process": {"pipelined": shape(pipelined_ns, 16), "single": shape(single_ns, 1)},
            "paired": {"rounds": 2, "pairs": {"rr100": pairs, "pipe16": pairs},
                       "median_ratio": {"rr100": 1.005, "pipe16": 1.005}}}


def test_metrics_cost_is_the_counting_code_over_a_request_of_the_running_daemon():
    """At 10,000 req/s a request costs the daemon 100,000 ns: counting that adds 4,000 ns
    (4%) meets "at most 5%", 6,000 ns (6%) does not, and blocks on both sides of the line
    make it "on the line"."""
    line = line_results({("mailsocketd", "pipe16"): [10_000.0] * 3})
    line["metrics_cost"] = metrics_cost([3_000.0, 3_500.0, 4_000.0, 4_500.0, 4_800.0],
                                        [5_500.0, 6_000.0, 6_000.0, 6_200.0, 7_000.0])
    figures = line_figures(line)
    rows = report_line.metrics_targets(line, figures)
    assert [row[2] for row in rows] == ["**met**", "**not met**"]
    assert rows[0][1].startswith("4.0% (+4000 ns of 100,000 ns per request; 3.0% to 4.8%")
    line["metrics_cost"] = metrics_cost([3_000.0, 3_500.0, 4_000.0, 4_500.0, 5_200.0],
                                        [5_500.0, 6_000.0, 6_000.0, 6_200.0, 7_000.0])
    assert report_line.metrics_targets(line, figures)[0][2] == "**on the line**"
    text = report_line.metrics_overhead(line, figures)
    assert text[0] == "### Metrics overhead"
    assert any(row.startswith("| 100 connections, pipelining 16 | 2 | 1.00x | 0.98x to 1.03x")
               for row in text), text
