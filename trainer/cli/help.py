"""The help texts: the overview of both front doors and the subcommands, and the exit codes.

The exit codes are rendered from ``trainer.errors.ExitCode``, the one table of them.
"""

from __future__ import annotations

import sys
from pathlib import Path

from trainer.errors import ExitCode

OVERVIEW = """\
usage: {prog} [model=GROUP] [training=GROUP] [finetune=full|lora] [key=value ...] [-m] [--cfg job] [--info]
       {prog} --config FILE [--max-steps N] [--data FILE] [--resume PATH [--branch NAME]] [key=value ...]
       {prog} generate|chat|evaluate SOURCE ...
       {prog} SUBCOMMAND ...

Train a language model from scratch or fine-tune one from the registry; every run gets its own directory.

Hydra front door (the default): config groups and key=value overrides composed onto one schema.
  groups:   model={models}   training={trainings}   finetune=full|lora
  {prog}                                      the defaults (model=custom training=default)
  {prog} training=fast n_layers=2             a group and an override
  {prog} -m training=fast,detailed n_layers=2,4    a sweep: 4 jobs, summary in multirun/
  {prog} training=fast --cfg job              print the composed config, run nothing
  {prog} resume=outputs/DATE/TIME             continue a run in its own directory
  Runs go to ./outputs/<date>/<time>/, sweeps to ./multirun/<date>/<time>/<job>/ (under the
  current directory). Hydra's own options: {prog} --hydra-help

Model registry (./models, or $LMRUNNER_HOME):
  {prog} import-model Qwen/Qwen2.5-0.5B --name qwen-0.5b-base   from the Hub, or a local directory
  {prog} list-models | model-info NAME | delete-model NAME | validate-registry
  {prog} register-model outputs/DATE/TIME/checkpoints/step-N --name NAME
  {prog} model_name=NAME data_path=my.txt     fine-tune a registry model (see README "Fine-tuning")
  {prog} model=qwen-base finetune=lora        LoRA: adapters train, the model's weights stay frozen
  {prog} export-model NAME OUT_DIR --merge    a Hugging Face folder, LoRA folded in (--dtype bf16)
  {prog} --resume CHECKPOINT --branch NAME    a new fine-tune branch from a checkpoint
  {prog} SUBCOMMAND --help                    the options of each

Use a trained model (SOURCE: a checkpoint, a run directory or a registry model name):
  {prog} generate outputs/DATE/TIME --prompt "The " --seed 1     text, streamed (--json, --top-k, --top-p, ...)
  {prog} chat qwen-0.5b-instruct                                 a conversation through its chat template
  {prog} evaluate outputs/DATE/TIME --data held-out.txt          loss, perplexity, bits per character
  {prog} evaluate qwen-0.5b-base --lm-eval hellaswag --limit 100  lm-eval tasks (pip install -e ".[eval]")

Watching runs (README "Watching runs"):
  {prog} training=fast 'loggers=[tensorboard,csv]'   also report to TensorBoard and metrics.csv
  {prog} runs list [DIR] [--json]             the runs under outputs/ and multirun/, with status and losses
  {prog} runs show RUN | runs compare RUN RUN | runs plot RUN [RUN ...] --out FILE.png
  {prog} -m hydra/sweeper=lr-dropout training=fast    an Optuna search over learning_rate and dropout

Plain front door: a YAML file (the examples: {examples}) with the same keys.
  {prog} --config small-model --max-steps 50    a shipped example, by name
  {prog} --config my-run.yaml                   your own file
  {prog} --help-config                          all flags of the plain front door

{exit_codes}
LMRUNNER_DEBUG=1 shows tracebacks.
"""


def program_name() -> str:
    """How the user started lmrunner: ``python main.py`` from a checkout, else ``lmrunner``."""
    return "python main.py" if Path(sys.argv[0]).name == "main.py" else "lmrunner"


def exit_code_text() -> str:
    width = max(len(str(int(code))) for code in ExitCode)
    rows = [f"  {int(code):<{width}}  {code.meaning}" for code in ExitCode]
    return "Exit codes:\n" + "\n".join(rows)


def overview(models: list[str], trainings: list[str], examples: list[str]) -> str:
    return OVERVIEW.format(
        prog=program_name(),
        models="|".join(models),
        trainings="|".join(trainings),
        examples=", ".join(examples),
        exit_codes=exit_code_text(),
    )


def plain_door_epilog() -> str:
    prog = program_name()
    return f"""\
examples:
  {prog} --data my.txt                            the defaults, on your own text
  {prog} --config small-model --max-steps 50      a shipped example (configs/small-model.yaml)
  {prog} --config my-run.yaml --data my.txt learning_rate=1e-3
  {prog} --resume outputs/2026-11-23/10-41-05     continue a run from its latest checkpoint
  {prog} --config large-model --print-config

Every field of the config can be overridden as key=value after the flags (later wins:
defaults < --config file < key=value < --max-steps/--data/--resume). --config takes a path,
or the name of a shipped example when no such file exists. Runs are written to
./outputs/<date>/<time>/ under the current directory.

{exit_code_text()}
Set LMRUNNER_DEBUG=1 to see tracebacks.
"""
