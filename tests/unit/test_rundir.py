from datetime import datetime

from trainer.run.rundir import create_run_dir, run_dir_of


def test_same_second_gets_distinct_directories(tmp_path):
    now = datetime(2026, 11, 23, 10, 41, 5)
    made = [create_run_dir(tmp_path, now) for _ in range(3)]
    assert [p.name for p in made] == ["10-41-05", "10-41-05-1", "10-41-05-2"]
    assert all(p.parent.name == "2026-11-23" for p in made)


def test_run_dir_of_checkpoint(tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints" / "step-00000001").mkdir(parents=True)
    assert run_dir_of(run / "checkpoints" / "step-00000001") is None  # no events.jsonl: not a run
    (run / "events.jsonl").write_text("")
    assert run_dir_of(run / "checkpoints" / "step-00000001") == run
