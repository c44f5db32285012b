"""Device choice and numeric precision.

``fast_matmul`` lets fp32 matrix products take a faster kernel (oneDNN on CPUs, via
``torch.set_float32_matmul_precision("medium")``) only after a probe in this process shows
the results stay fp32-accurate on this hardware. On CPUs with AMX or AVX512-BF16, and on
GPUs (TF32), that setting silently computes in reduced precision, so there it stays off and
the run says why.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from trainer.errors import ConfigError

# fp32 products of 256-wide random matrices land within ~1e-6 of a float64 reference;
# bf16 or TF32 inner products are ~1e-3 off. The threshold sits well between the two.
_FP32_ACCURATE_REL_ERROR = 1e-4


@dataclass(frozen=True)
class Precision:
    autocast_dtype: torch.dtype | None  # None: plain fp32
    matmul: str  # what fp32 matmuls use, for the run metadata
    note: str


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(
            f"device={name!r} but CUDA is not available here", key="device", hint="use device=auto or device=cpu"
        )
    if name == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(
            "device='mps' but MPS is not available here", key="device", hint="use device=auto or device=cpu"
        )
    return torch.device(name)


def configure_precision(precision: str, fast_matmul: bool, device: torch.device) -> Precision:
    """Set process-wide matmul precision for this run and say what was chosen."""
    torch.set_float32_matmul_precision("highest")
    if precision == "bf16":
        return Precision(torch.bfloat16, "bf16 autocast", "bf16 autocast: faster, not bit-comparable with fp32 runs")
    if not fast_matmul:
        return Precision(None, "fp32 (default kernels)", "fast_matmul off")
    error = _fast_matmul_error(device)
    if error <= _FP32_ACCURATE_REL_ERROR:
        torch.set_float32_matmul_precision("medium")
        return Precision(
            None, "fp32 (fast kernels, probe-verified)", f"fast kernels stay fp32-accurate (rel. error {error:.1e})"
        )
    return Precision(
        None,
        "fp32 (default kernels)",
        f"fast kernels would reduce precision on this hardware (rel. error {error:.1e}); kept exact fp32",
    )


def _fast_matmul_error(device: torch.device) -> float:
    """Relative error of a 'medium'-precision fp32 matmul against float64, on ``device``."""
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(256, 256, generator=generator)
    b = torch.randn(256, 256, generator=generator)
    reference = a.double() @ b.double()
    previous = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("medium")
    try:
        result = (a.to(device) @ b.to(device)).cpu().double()
    finally:
        torch.set_float32_matmul_precision(previous)
    return ((result - reference).abs().max() / reference.abs().max()).item()
