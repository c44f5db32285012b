"""A reader that leaves early (``lmrunner list-models --json | head -1``) ends any command
quietly: no traceback, no error line, exit 141 (128 + SIGPIPE) as Unix tools do."""

import os
import subprocess
import sys

import pytest

from tests.conftest import MAIN

COMMANDS = {
    "list-models": ["list-models", "--json"],
    "validate-registry": ["validate-registry"],
    "overview": ["--help"],
    "plain door": ["--print-config"],
    "hydra door": ["--cfg", "job"],  # printed by Hydra itself, which reports its own errors
}


def run_with_stdout_closed(args: list[str], cwd, unbuffered: bool) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("LMRUNNER_DEBUG", "PYTHONUNBUFFERED")}
    if unbuffered:  # every print reaches the pipe at once; buffered, the last flush does
        env["PYTHONUNBUFFERED"] = "1"
    read_end, write_end = os.pipe()
    os.close(read_end)  # gone before the first line is written, as head -1 is soon after
    try:
        return subprocess.run(
            [sys.executable, str(MAIN), *args],
            cwd=cwd,
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
            env=env,
        )
    finally:
        os.close(write_end)


@pytest.mark.parametrize("unbuffered", [True, False], ids=["unbuffered", "buffered"])
@pytest.mark.parametrize("command", list(COMMANDS))
def test_a_closed_stdout_ends_the_command_quietly(tmp_path, command, unbuffered):
    result = run_with_stdout_closed(COMMANDS[command], tmp_path, unbuffered)
    assert (result.returncode, result.stderr) == (141, "")
