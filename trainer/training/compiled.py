"""``compile: true``: the module a training step's loss runs through, under torch.compile.

Only the training path is compiled (``adapter.train_module``, the model or DDP around it):
generation and scoring call ``adapter.model`` itself, whose every new length would be a
new graph. The model keeps its own parameters and state-dict names, so checkpoints are the
same files with or without it. Inductor draws the dropout masks its own way (other masks
than eager's), from seeds it takes from torch's CPU generator, whose state every checkpoint
keeps: so a compiled run resumes bit for bit like an eager one.

That last promise needs ``reproducible_kernels`` around every call of the compiled module
and its backward: inductor's CPU kernels otherwise add up an embedding's gradient with
atomic adds from several threads, in whatever order the threads reach them, so two runs of
the same steps end with weights a rounding apart. Under torch's deterministic mode inductor
leaves that one op to torch's own (serial, ordered) kernel.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator

import torch

from trainer.errors import ConfigError

# What torch's inductor looks for to build its CPU kernels ($CXX first).
_CPU_COMPILERS = ("g++", "clang++", "c++")


def compile_for_training(module: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """``module`` compiled lazily (the first step compiles); refused with one line where
    torch.compile could not build its kernels, instead of a traceback at the first step."""
    if device.type == "cpu" and not _cpu_compiler():
        raise ConfigError(
            "compile=true needs a C++ compiler to build torch.compile's CPU kernels, and none is on PATH",
            key="compile",
            hint="install g++ (or set $CXX), or set compile=false",
        )
    if device.type == "mps":
        raise ConfigError("compile=true is not supported on the mps device", key="compile", hint="set compile=false")
    return torch.compile(module)


def _cpu_compiler() -> str | None:
    candidates = [os.environ["CXX"]] if os.environ.get("CXX") else list(_CPU_COMPILERS)
    return next((found for name in candidates if (found := shutil.which(name))), None)


@contextlib.contextmanager
def reproducible_kernels(compiled: bool) -> Iterator[None]:
    """Deterministic algorithms (torch's switch) for what runs inside, where ``compiled``;
    the process's own setting again after. Uninitialised memory is not filled (the switch's
    side line, which costs time and changes no result)."""
    if not compiled:
        yield
        return
    enabled, warn_only = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
    )
    fill = torch.utils.deterministic.fill_uninitialized_memory
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.utils.deterministic.fill_uninitialized_memory = False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(enabled, warn_only=warn_only)
        torch.utils.deterministic.fill_uninitialized_memory = fill
