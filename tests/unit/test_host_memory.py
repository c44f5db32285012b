"""reuse_cpu_memory: freed memory kept for the next step, and given back at the end of a run."""

import json
import platform
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import read_events, tiny_config
from tests.unit.test_run import run
from trainer.config.schema import RESUMABLE_KEYS, TrainingConfig
from trainer.training import host_memory

on_glibc = pytest.mark.skipif(sys.platform != "linux" or platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")


# Minor page faults of "steps" that each allocate, write and free four 48 MB buffers: as
# glibc leaves it, with memory reuse on, and the first after the run gives the memory back.
# The heap needs a few steps to reach its size: glibc's memalign asks for a freed buffer's
# size plus the alignment, so a hole that one buffer left fits the next only once freed
# neighbours have merged with it. In a fresh process, so that the heap is this test's alone.
FAULTS_IN_A_FRESH_PROCESS = """
import resource, torch
from trainer.training import host_memory

def step_faults():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    buffers = [torch.ones(48 * 2**20, dtype=torch.uint8) for _ in range(4)]
    del buffers
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

default = [step_faults() for _ in range(3)]
described, give_back = host_memory.reuse_freed_memory(True)
kept = [step_faults() for _ in range(8)]
give_back()
print(described, default, kept, step_faults(), sep="|")
"""


@on_glibc
def test_large_buffers_freed_and_asked_for_again_are_not_faulted_in_again():
    done = subprocess.run(
        [sys.executable, "-c", FAULTS_IN_A_FRESH_PROCESS],
        cwd=Path(__file__).resolve().parents[2],
        capture_output=True,
        text=True,
        check=True,
    )
    described, default, kept, given_back = done.stdout.strip().split("|")
    pages = 4 * 48 * 2**20 // 4096
    assert described == "glibc heap, freed memory kept for reuse"
    assert all(faults > pages // 2 for faults in json.loads(default))  # a fresh mmap each time
    assert all(faults < pages // 10 for faults in json.loads(kept)[-3:])  # once the heap has grown
    assert int(given_back) > pages // 2  # the kept pages went back to the system


def test_off_or_elsewhere_nothing_changes(monkeypatch):
    assert host_memory.reuse_freed_memory(False)[0] == "system default (reuse_cpu_memory off)"
    monkeypatch.setattr(platform, "libc_ver", lambda: ("musl", "1.2"))
    assert host_memory.reuse_freed_memory(True)[0] == "system default (not glibc)"


def test_the_setting_changes_no_number_so_it_may_change_on_resume():
    assert "reuse_cpu_memory" in RESUMABLE_KEYS
    assert TrainingConfig(reuse_cpu_memory=False).config_hash() == TrainingConfig().config_hash()


@on_glibc
def test_a_run_says_what_served_its_memory_and_gives_it_back(tmp_path, corpus_file, monkeypatch):
    calls = []
    real = host_memory._glibc

    class Recording:
        def __init__(self, libc):
            self.libc = libc

        def mallopt(self, param, value):
            calls.append(("mallopt", param, value))
            return self.libc.mallopt(param, value)

        def malloc_trim(self, pad):
            calls.append(("malloc_trim", pad))
            return self.libc.malloc_trim(pad)

    monkeypatch.setattr(host_memory, "_glibc", lambda: Recording(real()))
    result = run(tiny_config(corpus_file, max_steps=2), tmp_path / "r")
    start = next(e for e in read_events(result.run_dir) if e["event"] == "run_start")
    assert start["host_memory"] == "glibc heap, freed memory kept for reuse"
    assert calls == [
        ("mallopt", -4, 0),
        ("mallopt", -1, -1),
        ("mallopt", -4, 65536),
        ("mallopt", -1, 131072),
        ("malloc_trim", 0),
    ]
