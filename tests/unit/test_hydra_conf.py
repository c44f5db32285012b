"""conf/: every file loads, every group combination composes onto TrainingConfig and
validates, and each configs/ mirror equals the combination it names."""

import itertools

import pytest
import yaml
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from tests.conftest import REPO
from trainer.cli.hydra_app import check_overrides, group_precedence, register, requested_layer
from trainer.cli.shipped import conf_dir, group_of_config, group_options
from trainer.config.compose import compose_config
from trainer.config.parse import yaml_layer
from trainer.config.schema import TrainingConfig
from trainer.errors import ConfigError, UsageError

register()
CONF_DIR = conf_dir()


def composed(overrides: list[str]) -> TrainingConfig:
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return OmegaConf.to_object(compose("config", overrides=overrides))


@pytest.mark.parametrize("path", sorted(CONF_DIR.rglob("*.yaml")), ids=lambda p: str(p.relative_to(REPO)))
def test_every_conf_file_loads_and_names_its_command(path):
    text = path.read_text()
    assert isinstance(yaml.safe_load(text) or {}, dict)
    header = list(itertools.takewhile(lambda line: line.startswith("#"), text.splitlines()))
    assert any("python main.py" in line for line in header), f"{path} must open with the command that uses it"
    if path.parent.parent.name == "hydra":  # a launcher or sweeper preset: Hydra's own settings
        assert header[0] == f"# @package hydra.{path.parent.name}"
    elif path.parent != CONF_DIR:
        assert header[0] == "# @package _global_"  # overrides stay top-level: max_steps=500


def test_slurm_launcher_preset_composes_on_submitit():
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=["hydra/launcher=slurm"], return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert (launcher.tasks_per_node, launcher.gpus_per_node, launcher.signal_delay_s) == (1, 1, 120)


def test_the_optuna_preset_composes_on_the_optuna_sweeper():
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=["hydra/sweeper=lr-dropout"], return_hydra_config=True)
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_.endswith("OptunaSweeper") and sweeper.direction == "minimize"
    assert dict(sweeper.params) == {"learning_rate": "tag(log, interval(1e-4, 1e-2))", "dropout": "interval(0.0, 0.3)"}
    assert sweeper.sampler._target_.endswith("TPESampler") and sweeper.sampler.seed == 1234


def test_groups_are_the_designed_ones():
    assert group_options("model") == ["custom", "qwen-base", "qwen-finetuned"]
    assert group_options("training") == ["default", "detailed", "fast"]
    assert group_options("finetune") == ["full", "lora"]


def test_finetune_lora_sets_lora_and_its_learning_rate_over_the_model_group():
    config = composed(["model=qwen-base", "finetune=lora"])
    assert (config.lora_r, config.learning_rate) == (16, 2.0e-4)
    assert composed(["model=qwen-base", "finetune=full"]) == composed(["model=qwen-base"])
    with pytest.raises(ConfigError, match="needs a model to adapt"):
        composed(["finetune=lora"]).validate()  # model=custom: a new model trains in full


@pytest.mark.parametrize("model, training", list(itertools.product(group_options("model"), group_options("training"))))
def test_every_group_combination_composes_and_validates(model, training):
    config = composed([f"model={model}", f"training={training}"])
    assert isinstance(config, TrainingConfig)
    config.validate()
    assert (config.model_name is None) == (model == "custom")


def test_defaults_compose_to_the_schema_defaults():
    assert composed([]) == TrainingConfig()


@pytest.mark.parametrize(
    "mirror, overrides",
    [
        ("default.yaml", []),
        ("custom-transformer.yaml", ["model=custom"]),
        ("fast-training.yaml", ["training=fast"]),
        ("detailed-eval.yaml", ["training=detailed"]),
        ("qwen-base.yaml", ["model=qwen-base"]),
        ("qwen-finetuned.yaml", ["model=qwen-finetuned"]),
        ("qwen-chat.yaml", ["model=qwen-base", "data=chat"]),
        ("qwen-lora.yaml", ["model=qwen-base", "finetune=lora"]),
        (
            "small-model.yaml",
            [
                "n_layers=2",
                "d_model=128",
                "d_ff=512",
                "max_seq_len=128",
                "dropout=0.0",
                "batch_size=32",
                "learning_rate=1e-3",
                "warmup_steps=50",
                "max_steps=3000",
                "eval_cadence=250",
                "sampling_cadence=1000",
                "checkpoint_cadence=500",
                "seed=1337",
            ],
        ),
    ],
)
def test_configs_mirror_their_group_combination(mirror, overrides):
    assert compose_config([yaml_layer(str(REPO / "configs" / mirror))]) == composed(overrides)
    if overrides and "=" in overrides[0] and overrides[0].split("=")[0] in ("model", "training", "finetune", "data"):
        assert group_of_config(mirror) == " ".join(overrides)  # what the first line declares


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["max_stepz=3"], "did you mean 'max_steps'"),
        (["trainin=fast"], "did you mean 'training'"),
        (["training=fastt"], "no option 'fastt' in group 'training' (did you mean 'fast'?)"),
        (["model=qwen"], "no option 'qwen' in group 'model'"),
        (["n_layers=abc"], "n_layers='abc' has the wrong type"),
        (["n_layers=2,x"], "n_layers='x' has the wrong type"),  # each sweep value is checked
        (["n_layers=interval(1.5, 4)"], "n_layers=1.5 has the wrong type"),  # an Optuna range: its ends
    ],
)
def test_check_overrides_refuses_with_a_suggestion(overrides, message):
    with pytest.raises(ConfigError) as info:
        check_overrides(overrides, multirun=True)
    assert message in str(info.value) and info.value.exit_code == 2


def test_check_overrides_accepts_sweeps_groups_and_hydra_settings():
    check_overrides(
        [
            "training=fast,detailed",
            "n_layers=2,4",
            "hydra/launcher=joblib",
            "hydra.run.dir=x",
            "learning_rate=3e-4",
            "eval_cadence=null",
            "dropout=interval(0.0, 0.3)",  # ranges an optimizing sweeper (Optuna) draws from
            "learning_rate=tag(log, interval(1e-4, 1e-2))",
        ],
        multirun=True,
    )
    with pytest.raises(UsageError):
        check_overrides(["n_layers=[1,"])


def test_requested_layer_keeps_only_what_was_asked():
    config = TrainingConfig(n_layers=2, max_steps=50)
    layer = requested_layer(config, ["max_steps=50", "learning_rate=3e-4"])
    assert layer.values == {"n_layers": 2, "max_steps": 50, "learning_rate": 3e-4}


def test_the_model_groups_fine_tuning_settings_win_over_a_training_group():
    config = composed(["model=qwen-base", "training=fast"])
    assert (config.learning_rate, config.batch_size, config.warmup_steps) == (2e-5, 8, 20)
    assert config.max_seq_len == 128  # set by training=fast alone
    lines = group_precedence({"model": "qwen-base", "training": "fast"}, ["model=qwen-base", "training=fast"])
    assert "model=qwen-base sets learning_rate=2e-05, over training=fast's 0.002" in lines
    # A key the command line sets wins over both groups: no line for it.
    assert not any(
        "learning_rate" in line
        for line in group_precedence({"model": "qwen-base", "training": "fast"}, ["learning_rate=1e-4"])
    )
    assert group_precedence({"model": "custom", "training": "fast"}, []) == []
