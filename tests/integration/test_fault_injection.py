"""Fault injection: a training process SIGKILLed again and again while it writes checkpoints
(one every step), resumed after each kill, must end bit for bit where a run that was never
killed ends, and no resume may leave a killed writer's leftovers behind."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import pytest

from tests.conftest import MAIN, TINY_MODEL, read_events, run_dirs, run_main
from trainer.checkpoint.layout import LEFTOVER_PATTERN, STEP_DIR_PATTERN

KILLS = 24  # at least 20, with room for the odd life that finishes before its kill
MAX_STEPS = 200  # more than the kills can get through: the last resume finishes the run
KILL_WINDOW_STEPS = 3  # a kill lands up to this many step periods (a step and its write) after a life's first step
SEED = 20261124
ARGS = [*TINY_MODEL, "seed=5", f"max_steps={MAX_STEPS}", "checkpoint_cadence=1", "warmup_steps=10"]

pytestmark = pytest.mark.slow


@dataclass
class Figures:
    kills: int = 0
    inside_a_write: int = 0  # a killed write's leftover, or a checkpoint renamed in but not yet announced
    resumes: int = 0
    exact_resumes: int = 0
    torn_event_lines: int = 0  # a kill mid-line in events.jsonl, repaired by the next resume
    cleaned: list[int] = field(default_factory=list)  # leftovers each resume removed
    delays: list[float] = field(default_factory=list)


def test_sigkill_during_checkpoint_writes_never_breaks_exact_resume(tmp_path, corpus_file, capsys):
    baseline_cwd, chain_cwd = tmp_path / "baseline", tmp_path / "chain"
    baseline_cwd.mkdir()
    chain_cwd.mkdir()
    assert run_main("--data", str(corpus_file), *ARGS, cwd=baseline_cwd).returncode == 0
    (baseline,) = run_dirs(baseline_cwd)
    expected = {e["step"]: e["loss"] for e in read_events(baseline) if e["event"] == "step"}
    window = KILL_WINDOW_STEPS * step_period(read_events(baseline))  # this machine's pace, under its load

    run_dir, figures = kill_and_resume_until_done(chain_cwd, ["--data", str(corpus_file), *ARGS], window)

    figures.exact_resumes = check_every_life(run_dir, expected, figures)
    final = f"checkpoints/step-{MAX_STEPS:08d}"
    for name in ("model.safetensors", "optimizer.pt", "rng_state.pt"):
        assert (run_dir / final / name).read_bytes() == (baseline / final / name).read_bytes(), name
    checkpoints = [p.name for p in (run_dir / "checkpoints").iterdir()]
    assert all(STEP_DIR_PATTERN.match(name) for name in checkpoints), checkpoints  # no leftover, nothing set aside
    with capsys.disabled():
        print(
            f"\nfault injection: {figures.kills} SIGKILLs, {figures.inside_a_write} inside a checkpoint write, "
            f"{figures.exact_resumes}/{figures.resumes} resumes bit-identical, "
            f"{sum(figures.cleaned)} leftovers removed by {sum(map(bool, figures.cleaned))} of them, "
            f"{figures.torn_event_lines} torn events.jsonl lines repaired, "
            f"kills {min(figures.delays) * 1000:.0f}-{max(figures.delays) * 1000:.0f} ms after a life's first step "
            f"(step period {window / KILL_WINDOW_STEPS * 1000:.1f} ms)"
        )
    assert figures.kills >= 20 and figures.exact_resumes == figures.resumes
    assert figures.inside_a_write >= 5, figures  # the kills really do hit writes


def kill_and_resume_until_done(chain_cwd: Path, args: list[str], window: float) -> tuple[Path, Figures]:
    """Start the run; then, KILLS times, let a life take its first step, SIGKILL it at a random
    moment within ``window`` and resume it; the last resume runs to the end."""
    rng, figures = random.Random(SEED), Figures()
    process = start(chain_cwd, args, life=0)
    run_dir = wait_for_run_dir(chain_cwd, process)
    steps_before, killed_leftovers = 0, None
    while figures.kills < KILLS:
        if not wait_for_a_step(run_dir, steps_before, process):
            break  # the run finished before this life's kill
        if killed_leftovers is not None:  # a resumed life trains: it has dealt with the last life's
            check_resume_cleaned(run_dir, killed_leftovers, figures)
        delay = rng.uniform(0, window)
        time.sleep(delay)
        process.send_signal(signal.SIGKILL)
        process.wait()
        if completed(run_dir):
            break  # the kill came after the run's last step: nothing left to resume
        figures.kills += 1
        figures.delays.append(delay)
        killed_leftovers = leftovers(run_dir)
        figures.inside_a_write += bool(killed_leftovers) or unannounced_checkpoint(run_dir)
        steps_before = count_steps(run_dir)
        process = start(chain_cwd, ["--resume", str(run_dir)], life=figures.kills)
        figures.resumes += 1
    assert process.wait(timeout=300) in (0, -signal.SIGKILL), (chain_cwd / f"life-{figures.kills}.log").read_text()
    assert completed(run_dir)
    if figures.resumes > len(figures.cleaned):  # the last resume ran to the end: check it too
        check_resume_cleaned(run_dir, killed_leftovers, figures)
    return run_dir, figures


def step_period(events: list[dict]) -> float:
    """Seconds from one step to the next (its checkpoint written in between), past the warm-up."""
    times = [datetime.fromisoformat(e["ts"]).timestamp() for e in events if e["event"] == "step"][10:]
    return (times[-1] - times[0]) / (len(times) - 1)


def completed(run_dir: Path) -> bool:
    ends = [e for e in read_events(run_dir) if e["event"] == "run_end"]
    return bool(ends) and ends[-1]["status"] == "completed"


def start(cwd: Path, args: list[str], life: int) -> subprocess.Popen:
    log = (cwd / f"life-{life}.log").open("w")
    return subprocess.Popen([sys.executable, str(MAIN), *args], cwd=cwd, stdout=log, stderr=log)


def wait_for_run_dir(cwd: Path, process: subprocess.Popen) -> Path:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        found = run_dirs(cwd) if (cwd / "outputs").is_dir() else []
        if found and (found[0] / "events.jsonl").is_file():
            return found[0]
        time.sleep(0.05)
    raise AssertionError(f"no run directory appeared; exit {process.poll()}")


def count_steps(run_dir: Path) -> int:
    return (run_dir / "events.jsonl").read_bytes().count(b'"event": "step"')


def wait_for_a_step(run_dir: Path, steps_before: int, process: subprocess.Popen) -> bool:
    """Until this life has logged a step (its training loop is running); False if it ended."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if count_steps(run_dir) > steps_before:
            return True
        if process.poll() is not None:
            return False
        time.sleep(0.02)
    raise AssertionError("no step within 120 s")


def leftovers(run_dir: Path) -> set[Path]:
    return {p for p in (run_dir / "checkpoints").iterdir() if LEFTOVER_PATTERN.match(p.name)}


def unannounced_checkpoint(run_dir: Path) -> bool:
    """The newest checkpoint was renamed into place, but its event was not written yet."""
    steps = [int(m.group(1)) for p in (run_dir / "checkpoints").iterdir() if (m := STEP_DIR_PATTERN.match(p.name))]
    announced = {e["step"] for e in read_events(run_dir) if e["event"] == "checkpoint"}
    return bool(steps) and max(steps) not in announced


def check_resume_cleaned(run_dir: Path, killed_leftovers: set[Path], figures: Figures) -> None:
    """The killed life's leftovers are gone, and the resume event lists exactly them."""
    assert not leftovers(run_dir) & killed_leftovers
    resumed = [e for e in read_events(run_dir) if e["event"] == "resume"][-1]
    assert set(resumed["cleaned"]) == {str(p) for p in killed_leftovers}
    figures.cleaned.append(len(killed_leftovers))
    figures.torn_event_lines += resumed["event_log_repaired"] is not None


def check_every_life(run_dir: Path, expected: dict[int, float], figures: Figures) -> int:
    """Every step loss logged by every life, killed or not, equals the uninterrupted run's."""
    lives: list[list[tuple[int, float]]] = []
    for event in read_events(run_dir):  # strict: a damaged line in the middle raises
        if event["event"] in ("run_start", "resume"):
            lives.append([])
        elif event["event"] == "step":
            lives[-1].append((event["step"], event["loss"]))
    assert len(lives) == figures.resumes + 1
    exact = [all(expected[step] == loss for step, loss in life) for life in lives[1:]]
    assert all(exact), [life for life, ok in zip(lives[1:], exact, strict=True) if not ok][:1]
    assert lives[-1][-1][0] == MAX_STEPS
    return sum(exact)
