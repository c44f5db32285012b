"""A command line that goes wrong gets one line that says what to write instead (exit 2), for
mistakes a new user makes: mixing the two doors, a misspelt command or option, Hydra syntax."""

import pytest

from tests.conftest import run_main


def one_error_line(result) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "usage:" not in result.stderr and "Traceback" not in result.stderr
    return lines[0]


@pytest.mark.parametrize(
    "args, fragments",
    [
        # A group beside the plain door's flags: spelled for the Hydra door, and the mirror config named.
        (
            ["training=fast", "--data", "f.txt", "--max-steps", "5"],
            [
                "training=fast is a Hydra config group",
                "python main.py training=fast data_path=f.txt max_steps=5",
                "--config fast-training",
            ],
        ),
        (["model=qwen-base", "--max-steps", "5"], ["python main.py model=qwen-base max_steps=5", "--config qwen-base"]),
        # A sweep is the Hydra door's; a config file that mirrors a group becomes that group.
        (["-m", "--config", "fast-training", "seed=1,2"], ["sweeps (-m)", "python main.py -m training=fast seed=1,2"]),
        (["list-model"], ["unknown command 'list-model' (did you mean 'list-models'?)", "import-model"]),
        (["train"], ["unknown command 'train'", "to train, give no command"]),
        (["n_layers=1,2"], ["n_layers=1,2 is a sweep", "add -m: python main.py -m n_layers=1,2"]),
        (["~seed"], ["~seed would delete 'seed'", "seed=null"]),
        (["--confg", "x.yaml"], ["unrecognized arguments: --confg (did you mean '--config'?)"]),
        (["--max-steps", "abc"], ["--max-steps: invalid int value: 'abc'", "--help-config"]),
        (["--cfg", "jobs"], ["invalid choice: 'jobs'"]),
        (["-m", "n_layers=1,2", "--cfg", "hydra"], ["-m runs a sweep and --cfg prints a config"]),
        (["list-models", "--jsn"], ["unrecognized arguments: --jsn (did you mean '--json'?)"]),
    ],
)
def test_mistakes_get_one_line_saying_what_to_write(tmp_path, args, fragments):
    line = one_error_line(run_main(*args, cwd=tmp_path))
    for fragment in fragments:
        assert fragment in line, line
    assert not (tmp_path / "outputs").exists() and not (tmp_path / "multirun").exists()


@pytest.mark.parametrize("door", [["--print-config"], ["--cfg", "job"]])
def test_non_ascii_values_are_taken_as_written(tmp_path, door):
    result = run_main("sampling_prompt=Жили-были", "n_layers=2", *door, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "sampling_prompt: Жили-были" in result.stdout
