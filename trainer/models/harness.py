"""evaluate --lm-eval: a Hugging Face model on lm-evaluation-harness tasks (the ``eval`` extra).

Tasks are lm-eval's own by name (hellaswag, arc_easy, ...; their datasets come from the Hub
unless cached) or task YAML files of your own, which may read local data
(``dataset_path: json`` with ``dataset_kwargs: {data_files: ...}``) and so run offline.
The model is handed to lm-eval already loaded, on the device and in the precision asked for.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from trainer.errors import UsageError, did_you_mean
from trainer.models.adapter import CUSTOM_ARCHITECTURE, ModelAdapter

TASK_FILE_SUFFIXES = (".yaml", ".yml")


def run_lm_eval(adapter: ModelAdapter, model: str, tasks: list[str], limit: int | None, batch_size: int) -> dict:
    """lm-eval's results per task ({task: {metric: value}}), with the task names run."""
    if adapter.architecture_type == CUSTOM_ARCHITECTURE:
        raise UsageError(
            f"--lm-eval runs Hugging Face models; {model} is lmrunner's custom Transformer",
            hint="measure its perplexity with --data FILE instead",
        )
    try:
        import lm_eval
        from lm_eval.models.huggingface import HFLM
    except ImportError as err:
        raise UsageError("--lm-eval needs the lm-eval package", hint='install it: pip install -e ".[eval]"') from err
    names, manager = selected_tasks(tasks)
    device = next(adapter.model.parameters()).device
    lm = HFLM(
        pretrained=adapter.model, tokenizer=adapter.tokenizer.tokenizer, batch_size=batch_size, device=str(device)
    )
    evaluated = lm_eval.simple_evaluate(model=lm, tasks=names, task_manager=manager, limit=limit, log_samples=False)
    return {"tasks": names, "limit": limit, "results": evaluated["results"]}


def selected_tasks(tasks: list[str]) -> tuple[list[str], Any]:
    """Task names, from names and from YAML files (whose folders lm-eval then indexes too).
    lm-eval's own ~15,000 tasks are indexed (seconds) only when a task is given by name."""
    from lm_eval.tasks import TaskManager

    files = [Path(task) for task in tasks if task.endswith(TASK_FILE_SUFFIXES)]
    by_name = [task for task in tasks if not task.endswith(TASK_FILE_SUFFIXES)]
    for file in files:
        if not file.is_file():
            raise UsageError(f"--lm-eval {file}: no such task file", hint="give a task YAML file, or a task name")
    folders = sorted({str(file.resolve().parent) for file in files})
    manager = TaskManager(include_path=folders or None, include_defaults=bool(by_name))
    names = []
    for file in files:
        defined = [name for name, entry in manager.task_index.items() if entry.yaml_path == file.resolve()]
        if not defined:
            raise UsageError(f"--lm-eval {file} defines no lm-eval task", hint="a task file names its task: task: NAME")
        names += defined
    for name in by_name:
        matched = manager.match_tasks([name])
        if not matched:
            raise UsageError(
                f"lm-eval has no task '{name}'{did_you_mean(name, manager.all_tasks)}",
                hint="list them with: lm-eval list tasks",
            )
        names += matched
    return names, manager
