"""reuse_cpu_memory: freed memory kept for the next step, and given back at the end of a run."""

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


# Minor page faults while a 128 MB buffer is allocated, written and freed, after the same was
# allocated and freed once before: as glibc leaves it, with memory reuse on, and after the
# run gives it back. In a fresh process, since a heap that many tests have used may hold the
# freed buffer where an aligned request of its size no longer fits (glibc's memalign asks for
# the size plus the alignment), and then grows instead.
FAULTS_IN_A_FRESH_PROCESS = """
import resource, torch
from trainer.training import host_memory

def faults():
    torch.ones(128 * 2**20, dtype=torch.uint8)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    torch.ones(128 * 2**20, dtype=torch.uint8)
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

default = faults()
described, give_back = host_memory.reuse_freed_memory(True)
kept = faults()
give_back()
print(described, default, kept, faults(), sep="|")
"""


@on_glibc
def test_a_large_buffer_freed_and_asked_for_again_is_not_faulted_in_again():
    done = subprocess.run(
        [sys.executable, "-c", FAULTS_IN_A_FRESH_PROCESS],
        cwd=Path(__file__).resolve().parents[2],
        capture_output=True,
        text=True,
        check=True,
    )
    described, default, kept, given_back = done.stdout.strip().split("|")
    pages = 128 * 2**20 // 4096
    assert described == "glibc heap, freed memory kept for reuse"
    assert int(default) > pages // 2  # glibc's default: a fresh mmap each time
    assert int(kept) < pages // 10
    assert int(given_back) > pages // 2  # the defaults are back


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
