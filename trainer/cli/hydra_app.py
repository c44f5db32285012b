"""The Hydra front door: conf/ groups composed onto the TrainingConfig schema.

``run_hydra(argv)`` checks the overrides first (so a typo is one line with a suggestion and
exit 2, not a Hydra stack trace), registers the schema, pins the run or sweep directory, then
hands the command line to Hydra, which owns ``-m`` sweeps and launchers. Each job calls
``trainer.run.start.start_run`` like the ``--config`` front door does.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from trainer.cli.arguments import usage_error
from trainer.cli.help import program_name
from trainer.cli.plain import PLAIN_FLAGS
from trainer.cli.shipped import GROUPS, conf_dir, group_options
from trainer.cli.signals import import_torch
from trainer.config.compose import ConfigLayer, merge_layers
from trainer.config.schema import FIELD_NAMES, MAPPING_FIELDS, TrainingConfig
from trainer.errors import ConfigError, TrainingInterrupted, UsageError, did_you_mean
from trainer.run.rundir import create_run_dir, refuse_used_run_dir
from trainer.training.distributed import current, init_from_env, on_main

log = logging.getLogger("lmrunner")

if TYPE_CHECKING:  # importing trainer.resume pulls in torch, which --help must not
    from trainer.cli.sweep import JobOutcome
    from trainer.run.resume_plan import ResumePlan


def check_overrides(overrides: list[str], multirun: bool = False) -> None:
    """Refuse unknown keys, unknown group options, wrong types, a sweep without -m and a
    deleted key before Hydra starts, each with one line that says what to write instead."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    parser = OverridesParser.create()
    for text in overrides:
        try:
            (override,) = parser.parse_overrides([text])
        except HydraException as err:
            raise UsageError(
                f"cannot read override {text!r}: {str(err).splitlines()[0]}",
                hint="write key=value (quote a value with spaces or symbols: key='a value'); see --help",
            ) from err
        key = override.key_or_group
        if key.startswith("hydra"):
            continue  # Hydra's own settings: Hydra checks them
        if override.is_delete():
            raise ConfigError(
                f"{text} would delete '{key}', but every key of the schema (and group) must have a value",
                key=key,
                source="command line",
                hint=f"set it instead, e.g. {key}=null where null is allowed (seed=null draws a seed)",
            )
        if override.is_sweep_override() and not multirun:
            raise ConfigError(
                f"{text} is a sweep (one job per value), which needs -m",
                key=key,
                source="command line",
                hint=f"add -m: {program_name()} -m {' '.join(overrides)}",
            )
        values = _values_to_check(override)
        if key in GROUPS:
            options = group_options(key)
            for value in values:
                if value not in options:
                    raise ConfigError(
                        f"no option '{value}' in group '{key}'{did_you_mean(str(value), options)}",
                        key=key,
                        source="command line",
                        hint=f"choose one of: {', '.join(options)}",
                    )
            continue
        field, _, entry = key.partition(".")  # data_columns.prompt=question sets one entry
        if key not in FIELD_NAMES and not (field in MAPPING_FIELDS and entry):
            raise ConfigError(
                f"unknown key '{key}'{did_you_mean(key, [*FIELD_NAMES, *GROUPS])}",
                key=key,
                source="command line",
                hint="see the hyperparameter reference in README.md for every valid key",
            )
        for value in values:
            merge_layers([ConfigLayer("command line", {field: {entry: value} if entry else value})])


def _values_to_check(override) -> list:
    """The value, each value of a sweep, or the two ends of a range an optimizing sweeper
    (Optuna) draws from: interval(1e-4, 1e-2) cannot be enumerated."""
    if override.is_interval_sweep():
        return [override.value().start, override.value().end]
    return list(override.sweep_iterator()) if override.is_sweep_override() else [override.value()]


def requested_layer(config: TrainingConfig, overrides: list[str]) -> ConfigLayer:
    """What this command asked for, as opposed to what it inherits from the defaults: the
    keys its groups and overrides set away from the schema's defaults, plus every key it
    names. A resume compares only these with the checkpoint."""
    defaults = TrainingConfig().to_dict()
    values = config.to_dict()
    named = {o.split("=", 1)[0].lstrip("+") for o in overrides if "=" in o}
    return ConfigLayer("command line", {k: v for k, v in values.items() if v != defaults[k] or k in named})


class HydraJob:
    """The Hydra task of one ``run_hydra`` call. A single run happens in this process, so
    the error that ended it is kept here for the CLI to report with its exit code (Hydra
    would print its own traceback). A sweep's jobs may run in other processes (joblib,
    submitit): their outcomes travel through the sweep's summary.jsonl instead."""

    def __init__(self) -> None:
        self.error: BaseException | None = None

    def __call__(self, cfg) -> JobOutcome:
        """One run in Hydra's run directory (or the resumed run's own). The outcome is what
        the sweep's summary line records; as a float it is the run's sweep_metric, which an
        optimizing sweeper (hydra/sweeper=optuna) minimises."""
        from hydra.core.hydra_config import HydraConfig
        from omegaconf import OmegaConf

        from trainer.cli.sweep import append_summary_line, job_outcome
        from trainer.run.start import start_run

        hydra_cfg = HydraConfig.get()
        run_dir = _as_given(Path(hydra_cfg.runtime.output_dir))
        in_sweep = hydra_cfg.mode.name == "MULTIRUN"
        try:
            init_from_env()  # a submitit job with several tasks: its ranks join here
            if current().is_main:
                for line in group_precedence(dict(hydra_cfg.runtime.choices), list(hydra_cfg.overrides.task)):
                    log.info(line)
            config = OmegaConf.to_object(cfg)
            layer = requested_layer(config, list(hydra_cfg.overrides.task))
            result = start_run([layer], new_run_dir=lambda: run_dir, overrides=None)
            return job_outcome(result, sweep_metric=config.sweep_metric)
        except TrainingInterrupted as err:
            # Ctrl-C or SIGTERM stops the whole sweep, not just this job: record the job, then
            # leave Hydra (which would go on to the next job after an ordinary exception).
            self.error = err
            if in_sweep and current().is_main:
                append_summary_line(
                    run_dir.parent, hydra_cfg.job.num, list(hydra_cfg.overrides.task), job_outcome(error=err)
                )
            raise KeyboardInterrupt from err
        except Exception as err:
            if not in_sweep:
                self.error = err  # reported by the CLI: one line and its exit code
            return job_outcome(error=err)


def group_precedence(choices: dict[str, str | None], overrides: list[str]) -> list[str]:
    """One line for each key that both chosen groups set to different values, saying which
    wins (the model group: conf/config.yaml lists it last). Keys the command line sets itself
    win over both and need no line."""
    import yaml

    named = {o.split("=", 1)[0].lstrip("+") for o in overrides}
    settings = {}
    for group in ("training", "model"):  # the order of conf/config.yaml's defaults
        if choices.get(group):
            text = (conf_dir() / group / f"{choices[group]}.yaml").read_text(encoding="utf-8")
            settings[group] = yaml.safe_load(text) or {}
    if len(settings) < 2:
        return []
    model, training = settings["model"], settings["training"]
    return [
        f"model={choices['model']} sets {key}={model[key]}, over training={choices['training']}'s {training[key]}"
        for key in sorted(model.keys() & training.keys() - named)
        if model[key] != training[key]
    ]


def register() -> None:
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name="training_config", node=TrainingConfig)


def run_hydra(argv: list[str]) -> int:
    """Run the Hydra app on ``argv``; returns the exit code."""
    import hydra
    from hydra._internal.utils import get_args_parser  # Hydra's own command-line grammar

    from trainer.cli.sweep import failed_jobs

    argv = force_mapping_overrides(quote_non_ascii(argv))
    parser = get_args_parser()
    parser.prog = program_name()

    def one_line_error(message: str):  # argparse would print Hydra's usage block and exit 2
        raise usage_error(parser, message, also_known=PLAIN_FLAGS)

    parser.error = one_line_error
    args = parser.parse_args(argv)
    overrides = list(args.overrides)
    check_overrides(overrides, multirun=args.multirun)
    register()
    prints = [flag for flag, given in (("--cfg", args.cfg), ("--info", args.info)) if given]
    if args.multirun and prints:
        raise UsageError(
            f"-m runs a sweep and {prints[0]} prints a config without running anything: give one of them",
            hint=f"drop -m to print the config (with one value for each swept key), or drop {prints[0]} to run the sweep",
        )
    runs_jobs = not (args.cfg or args.info or args.help or args.hydra_help or args.shell_completion)
    if runs_jobs:
        import_torch()
    sweep_dir = None
    if runs_jobs and not args.multirun:
        plan = _check_single_run(overrides)  # before Hydra makes a run directory for it
        argv = _add_overrides(argv, overrides, _run_dir_overrides(overrides, plan))
    elif runs_jobs:
        sweep_dir = on_main(lambda: _sweep_dir(overrides))
        # The user's hydra.sweep.dir (if any) gives way to its resolved value.
        users = [o for o in overrides if _sets([o], "hydra.sweep.dir")]
        argv, overrides = [a for a in argv if a not in users], [o for o in overrides if o not in users]
        argv = _add_overrides(argv, overrides, [f"hydra.sweep.dir={sweep_dir}"])
    sys.argv = [sys.argv[0], *argv]
    job = HydraJob()
    app = hydra.main(version_base="1.3", config_path=str(conf_dir()), config_name="config")(job)
    try:
        app()
    except KeyboardInterrupt:
        if job.error is None:
            raise
    if job.error is not None:
        raise job.error
    if sweep_dir is None:
        return 0
    return 1 if on_main(lambda: failed_jobs(sweep_dir)) else 0


def _sweep_dir(overrides: list[str]) -> Path:
    """The sweep's directory, decided once, so the sweep's summary can be found afterwards: a
    new ``multirun/<date>/<time>[-n]`` (reserved, like a run directory), or the user's
    ``hydra.sweep.dir`` with its ``${now:...}`` patterns resolved."""
    from trainer.cli.sweep import SUMMARY_FILE

    if not _sets(overrides, "hydra.sweep.dir"):
        return create_run_dir(Path("multirun"))
    sweep_dir = _users_hydra_dir(overrides, "sweep")
    if (sweep_dir / SUMMARY_FILE).exists():
        raise ConfigError(
            f"hydra.sweep.dir={sweep_dir} already holds a sweep (its {SUMMARY_FILE})",
            key="hydra.sweep.dir",
            hint="choose a new directory (or leave hydra.sweep.dir out for a new multirun/<date>/<time>/)",
        )
    return sweep_dir


def _users_hydra_dir(overrides: list[str], kind: str) -> Path:
    """The user's hydra.run.dir or hydra.sweep.dir, its ``${now:...}`` patterns resolved."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        cfg = compose("config", overrides=[o for o in overrides if _is_hydra_override(o)], return_hydra_config=True)
    return Path(str(cfg.hydra[kind].dir))


def _check_single_run(overrides: list[str]) -> ResumePlan | None:
    """Compose and plan the run as the job will, so that an invalid config, an unknown
    model or an unusable resume is refused before anything is written. (Each job of a
    sweep checks itself; a failure there is a line in the sweep's summary.)"""
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    from trainer.run.plan import plan_run

    try:
        with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
            cfg = compose("config", overrides=[o for o in overrides if not _is_hydra_override(o)])
        config = OmegaConf.to_object(cfg)
    except (HydraException, OmegaConfBaseException) as err:
        # e.g. a sweep (n_layers=2,4) without -m, or deleting a key the schema needs
        raise ConfigError(
            f"cannot compose the config: {str(err).strip().splitlines()[0]}",
            source="command line",
            hint="see python main.py --help",
        ) from err
    _, plan = plan_run([requested_layer(config, overrides)])
    return plan


def _run_dir_overrides(overrides: list[str], plan: ResumePlan | None) -> list[str]:
    """Pin hydra.run.dir to one directory, decided here, once.

    Hydra's own ``outputs/${now:...}`` pattern gives two runs started in the same second the
    same directory; a reserved one cannot. ``resume=<run dir>`` continues in that run's
    directory instead, and leaves its .hydra/ as the original run wrote it (the resume
    event records this command).
    """
    if plan is not None and plan.continue_in is not None:
        return [f"hydra.run.dir={plan.continue_in}", "hydra.output_subdir=null"]
    # Under DDP every rank runs this app: one directory, chosen by rank 0, and only rank 0
    # writes .hydra/ in it.
    extra = [] if current().is_main else ["hydra.output_subdir=null"]
    if _sets(overrides, "hydra.run.dir"):
        refuse_used_run_dir(_users_hydra_dir(overrides, "run"))  # before Hydra writes .hydra/ into it
        return extra
    return [f"hydra.run.dir={on_main(lambda: create_run_dir(Path('outputs')))}", *extra]


def _add_overrides(argv: list[str], overrides: list[str], extra: list[str]) -> list[str]:
    """``extra`` placed right after the command line's overrides: Hydra's parser takes its
    positional overrides as one run, so after an option such as --cfg they would be refused."""
    if not overrides:
        return [*argv, *extra]
    end = len(argv) - argv[::-1].index(overrides[-1])
    return [*argv[:end], *extra, *argv[end:]]


def _sets(overrides: list[str], key: str) -> bool:
    return any(o.lstrip("+").split("=", 1)[0] == key for o in overrides)


def _is_hydra_override(override: str) -> bool:
    """Hydra's own settings (hydra.run.dir=..., hydra/launcher=...), as opposed to the run's."""
    return override.lstrip("+~").startswith("hydra")


def force_mapping_overrides(argv: list[str]) -> list[str]:
    """``data_columns={prompt: question}`` and ``data_columns.prompt=question`` as Hydra takes
    them: its struct mode refuses to replace a mapping field (or add an entry to one) without
    the ``++`` prefix, which means "set, whether or not it exists"."""
    forced = []
    for arg in argv:
        key = arg.split("=", 1)[0]
        if "=" in arg and not arg.startswith(("-", "+", "~")) and key.split(".", 1)[0] in MAPPING_FIELDS:
            arg = f"++{arg}"
        forced.append(arg)
    return forced


def quote_non_ascii(argv: list[str]) -> list[str]:
    """Hydra's override grammar takes non-ASCII text only in quotes: ``sampling_prompt=Ж``
    becomes ``sampling_prompt='Ж'`` (each value of a sweep quoted on its own)."""
    quoted = []
    for arg in argv:
        key, sep, value = arg.partition("=")
        if sep and not arg.startswith("-") and not value.isascii() and not any(c in value for c in "'\"[]{}()"):
            arg = f"{key}=" + ",".join(f"'{part}'" for part in value.split(","))
        quoted.append(arg)
    return quoted


def _as_given(path: Path) -> Path:
    """Hydra's absolute output directory as the plain door names its own: relative to the
    current directory when it lies below it (outputs/DATE/TIME in every line and event)."""
    try:
        return path.relative_to(Path.cwd())
    except ValueError:
        return path
