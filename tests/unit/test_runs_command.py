"""``runs list|show|plot|compare`` over real run directories: completed, interrupted, failed,
killed and running, read from their events (torn last lines included)."""

import json
import os
import subprocess
import sys
import time

import pytest

from tests.conftest import MAIN
from tests.unit.outcomes import completed_run, failed_run, interrupted_run
from tests.unit.test_plots import png_size
from trainer.run.listing import STALE_AFTER_S, summarize_run

LIST_FIELDS = {
    "run_dir",
    "run_id",
    "started",
    "status",
    "model",
    "parameters",
    "steps",
    "max_steps",
    "loss",
    "val_loss",
    "wall_time_s",
    "tokens_per_s",
}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, corpus_text):
    """outputs/ with a completed, an interrupted and a failed run, and a sweep's job under multirun/."""
    root = tmp_path_factory.mktemp("runs")
    corpus = root / "corpus.txt"
    corpus.write_text(corpus_text, encoding="utf-8")
    with pytest.MonkeyPatch.context() as patch:
        completed_run(root / "outputs/2026-11-25/10-00-00", corpus)
        interrupted_run(root / "outputs/2026-11-25/10-01-00", corpus, patch, at_step=4)
        failed_run(root / "outputs/2026-11-25/10-02-00", corpus, patch, at_step=3)
    completed_run(root / "multirun/2026-11-25/11-00-00/0", corpus, learning_rate=1e-3, dropout=0.0)
    return root


def runs_json(cli, capsys, *args) -> dict[str, dict]:
    assert cli(["runs", "list", *args, "--json"]) == 0
    return {run["run_dir"]: run for run in json.loads(capsys.readouterr().out)}


def test_list_json_reads_each_status_and_the_figures_from_the_events(workdir, monkeypatch, capsys, cli):
    monkeypatch.chdir(workdir)
    runs = runs_json(cli, capsys)
    assert sorted(runs) == [
        "multirun/2026-11-25/11-00-00/0",
        "outputs/2026-11-25/10-00-00",
        "outputs/2026-11-25/10-01-00",
        "outputs/2026-11-25/10-02-00",
    ]
    assert all(set(run) == LIST_FIELDS for run in runs.values())
    done, stopped, failed = (runs[f"outputs/2026-11-25/10-0{n}-00"] for n in range(3))
    assert (done["status"], done["steps"], done["max_steps"]) == ("completed", 6, 6)
    assert (stopped["status"], stopped["steps"]) == ("interrupted", 4)
    assert (failed["status"], failed["steps"], failed["val_loss"]) == ("failed", 2, None)  # NaN at step 3
    for run in (done, stopped):
        assert run["loss"] > 0 and run["val_loss"] > 0 and run["tokens_per_s"] > 0 and run["wall_time_s"] > 0
        assert run["model"] == "custom-transformer" and run["parameters"] > 0 and run["started"].startswith("20")
    events = (workdir / "outputs/2026-11-25/10-00-00/events.jsonl").read_text().splitlines()
    last_step = [json.loads(line) for line in events if '"event": "step"' in line][-1]
    assert done["loss"] == last_step["loss"]
    assert list(runs_json(cli, capsys, "multirun")) == ["multirun/2026-11-25/11-00-00/0"]


def without_run_end(source, target, pid=None):
    """A copy of a run as if its process had stopped writing before run_end (its pid: ``pid``)."""
    target.mkdir(parents=True)
    lines = []
    for line in (source / "events.jsonl").read_text().splitlines():
        event = json.loads(line)
        if event["event"] == "run_end":
            continue
        if event["event"] == "run_start" and pid is not None:
            event["process"]["pid"] = pid
        lines.append(json.dumps(event))
    (target / "events.jsonl").write_text("\n".join(lines) + "\n")
    return target


def test_no_run_end_is_running_while_its_process_lives_and_killed_after(workdir, tmp_path):
    from tests.unit.test_checkpoint import dead_pid

    done = workdir / "outputs/2026-11-25/10-00-00"
    assert summarize_run(without_run_end(done, tmp_path / "live", pid=os.getpid())).status == "running"
    assert summarize_run(without_run_end(done, tmp_path / "gone", pid=dead_pid())).status == "killed"
    # Written on another host: running until events.jsonl has been still for STALE_AFTER_S.
    elsewhere = without_run_end(done, tmp_path / "elsewhere")
    text = (elsewhere / "events.jsonl").read_text().replace('"host": "', '"host": "another-')
    (elsewhere / "events.jsonl").write_text(text)
    assert summarize_run(elsewhere).status == "running"
    assert summarize_run(elsewhere, now=time.time() + STALE_AFTER_S + 1).status == "killed"


def test_a_torn_last_line_and_a_damaged_line_are_passed_over(workdir, tmp_path):
    run_dir = without_run_end(workdir / "outputs/2026-11-25/10-00-00", tmp_path / "torn", pid=os.getpid())
    lines = (run_dir / "events.jsonl").read_text().splitlines()
    lines.insert(3, '{"ts": "2026-11-25T10:00:01", "event": "st')  # damaged mid-file
    (run_dir / "events.jsonl").write_text("\n".join(lines) + '\n{"ts": "2026-11-25T10:00:09", "event": "step", "lo')
    summary = summarize_run(run_dir)
    assert (summary.status, summary.steps, summary.max_steps) == ("running", 6, 6)


def test_show_prints_config_lineage_and_checkpoints(workdir, monkeypatch, capsys, cli):
    monkeypatch.chdir(workdir)
    assert cli(["runs", "show", "outputs/2026-11-25/10-01-00"]) == 0
    out = capsys.readouterr().out
    for text in (
        "status: interrupted",
        "steps: 4 of 6",
        "lineage: trained from scratch",
        "checkpoints: outputs/2026-11-25/10-01-00/checkpoints/step-00000004",
        "watched by: loss.png",
        "learning_rate: 0.0003",
        "loggers: []",
    ):
        assert text in out, text


def test_compare_lists_the_keys_that_differ_and_the_losses(workdir, monkeypatch, capsys, cli):
    monkeypatch.chdir(workdir)
    assert cli(["runs", "compare", "outputs/2026-11-25/10-00-00", "multirun/2026-11-25/11-00-00/0"]) == 0
    out = capsys.readouterr().out
    differ = out.split("\n\n")[0].splitlines()
    assert differ[0] == "config keys that differ:"
    assert [line.split()[0] for line in differ[2:]] == ["dropout", "learning_rate"]
    assert differ[2].split() == ["dropout", "0.1", "0.0"]
    results = {line.split("  ")[0]: line.split()[-2:] for line in out.split("\n\n")[1].splitlines()[1:]}
    assert results["status"] == ["completed", "completed"] and results["steps"] == ["6", "6"]
    assert all(float(value) > 0 for value in results["final val_loss"])


def test_plot_overlays_runs_by_step_tokens_or_time(workdir, monkeypatch, tmp_path, capsys, cli):
    monkeypatch.chdir(workdir)
    out = tmp_path / "two.png"
    assert cli(["runs", "plot", "outputs/2026-11-25/10-00-00", "outputs/2026-11-25/10-01-00", "--out", str(out)]) == 0
    assert png_size(out) == (1200, 600) and capsys.readouterr().out == f"wrote {out}\n"
    assert cli(["runs", "plot", "outputs/2026-11-25/10-00-00", "--x", "tokens", "--out", str(out)]) == 0


def test_a_path_that_is_no_run_is_one_line_and_exit_2(workdir, monkeypatch, capsys, cli):
    monkeypatch.chdir(workdir)
    assert cli(["runs", "show", "outputs"]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("error: outputs is not a run directory (it has no events.jsonl)")
    assert cli(["runz", "list"]) == 2 and "did you mean 'runs'" in capsys.readouterr().err


def test_runs_list_imports_no_torch(workdir):
    result = subprocess.run(
        [sys.executable, "-X", "importtime", str(MAIN), "runs", "list"],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    imported = {line.split("|")[-1].strip().split(".")[0] for line in result.stderr.splitlines() if "|" in line}
    assert "torch" not in imported and "matplotlib" not in imported
    assert "completed" in result.stdout and "interrupted" in result.stdout and "failed" in result.stdout


def test_plot_without_matplotlib_is_exit_2_naming_the_extra(workdir, monkeypatch, tmp_path, capsys, cli):
    monkeypatch.chdir(workdir)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    assert cli(["runs", "plot", "outputs/2026-11-25/10-00-00", "--out", str(tmp_path / "x.png")]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "needs the optional package 'matplotlib'" in line and 'pip install -e ".[plots]"' in line
