"""evaluate --lm-eval: which tasks a list of names and task files means (no model, no network)."""

import pytest

from trainer.errors import UsageError

pytest.importorskip("lm_eval")
from trainer.models.harness import selected_tasks  # noqa: E402


def test_a_task_file_means_the_tasks_it_defines_and_only_those_are_indexed(tmp_path):
    (tmp_path / "mine.yaml").write_text("task: my_task\ndataset_path: json\noutput_type: loglikelihood\n")
    (tmp_path / "other.yaml").write_text("task: other_task\ndataset_path: json\noutput_type: loglikelihood\n")
    names, manager = selected_tasks([str(tmp_path / "mine.yaml")])
    assert names == ["my_task"] and sorted(manager.all_tasks) == ["my_task", "other_task"]  # lm-eval's own not indexed


def test_a_missing_or_empty_task_file_is_one_line(tmp_path):
    with pytest.raises(UsageError, match="no such task file"):
        selected_tasks([str(tmp_path / "missing.yaml")])
    (tmp_path / "nothing.yaml").write_text("dataset_path: json\n")
    with pytest.raises(UsageError, match="defines no lm-eval task"):
        selected_tasks([str(tmp_path / "nothing.yaml")])
