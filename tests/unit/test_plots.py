"""loss.png at the end of every run, the curves it is drawn from, and the overlay of several runs."""

import logging
import struct
import sys

import pytest

from tests.unit.outcomes import completed_run, failed_run, interrupted_run
from trainer.run.history import history_of, load_history
from trainer.run.plots import draw_overlay, smoothed


def png_size(path) -> tuple[int, int]:
    """Width and height from a PNG's header; fails on anything that is not a PNG."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR", f"{path} is not a PNG"
    return struct.unpack(">II", data[16:24])


def test_a_completed_run_draws_loss_png(tmp_path, corpus_file):
    run_dir = completed_run(tmp_path / "run", corpus_file)
    assert png_size(run_dir / "loss.png") == (1000, 600)
    assert not list(run_dir.glob(".loss.png.partial*"))


def test_an_interrupted_run_and_a_run_that_failed_after_a_step_draw_it_too(tmp_path, corpus_file, monkeypatch):
    assert png_size(interrupted_run(tmp_path / "stopped", corpus_file, monkeypatch) / "loss.png") == (1000, 600)
    assert png_size(failed_run(tmp_path / "nan", corpus_file, monkeypatch) / "loss.png") == (1000, 600)


def test_a_run_that_failed_before_its_first_step_draws_nothing(tmp_path, corpus_file, monkeypatch):
    run_dir = failed_run(tmp_path / "nan", corpus_file, monkeypatch, at_step=1)
    assert not (run_dir / "loss.png").exists()


def test_without_matplotlib_the_run_completes_and_one_line_names_the_extra(tmp_path, corpus_file, monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)  # import matplotlib.figure now fails
    with caplog.at_level(logging.WARNING, logger="lmrunner"):
        run_dir = completed_run(tmp_path / "run", corpus_file)
    assert not (run_dir / "loss.png").exists()
    (line,) = [r.getMessage() for r in caplog.records if "loss.png" in r.getMessage()]
    assert "matplotlib is not installed" in line and 'pip install -e ".[plots]"' in line


def test_a_failed_run_keeps_its_error_the_one_line(tmp_path, corpus_file, monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with caplog.at_level(logging.INFO, logger="lmrunner"):
        run_dir = failed_run(tmp_path / "nan", corpus_file, monkeypatch)
    assert not (run_dir / "loss.png").exists()
    assert not [r for r in caplog.records if "loss.png" in r.getMessage()]


def test_a_resume_supersedes_what_a_killed_process_logged_after_the_checkpoint(tmp_path):
    events = [
        {"event": "run_start", "step": 0, "config": {"max_steps": 9}},
        *({"event": "step", "step": s, "loss": 5.0 - s, "lr": 0.1} for s in range(1, 6)),
        {"event": "eval", "step": 4, "val_loss": 3.5},
        {"event": "resume", "step": 3, "from_step": 3, "config": {"max_steps": 9}},  # steps 4-5 were killed
        *({"event": "step", "step": s, "loss": 10.0 + s, "lr": 0.1} for s in range(4, 6)),
    ]
    history = history_of(tmp_path, events)
    assert history.train("loss") == ([1, 2, 3, 4, 5], [4.0, 3.0, 2.0, 14.0, 15.0])
    assert history.val() == ([], [])  # the eval at step 4 belonged to the killed process


def test_smoothing_starts_at_the_first_value_and_follows_a_step():
    values = [4.0] * 100 + [2.0] * 100
    out = smoothed(values)
    assert out[0] == pytest.approx(4.0) and out[99] == pytest.approx(4.0)
    assert 2.0 < out[110] < 4.0 and out[-1] == pytest.approx(2.0, abs=0.01)


def test_an_overlay_of_runs_by_step_tokens_and_time(tmp_path, corpus_file):
    runs = [completed_run(tmp_path / name, corpus_file, seed=seed) for name, seed in (("a", 1), ("b", 2))]
    labelled = [(run.name, load_history(run)) for run in runs]
    for x in ("step", "tokens", "time"):
        assert png_size(draw_overlay(labelled, tmp_path / f"{x}.png", x=x)) == (1200, 600)
    (history,) = labelled[:1]
    assert history[1].x_values([2], "tokens") == [2 * 8 * 32]
