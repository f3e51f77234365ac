"""Resolve the ``device`` and ``precision`` arguments in one place."""

from __future__ import annotations

from typing import TYPE_CHECKING

from wildreid.errors import ConfigError

if TYPE_CHECKING:
    import torch

__all__ = ["autocast_dtype", "resolve_device"]


def resolve_device(device: str) -> torch.device:
    """Turn ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:1"`` (or ``"mps"``) into a torch device.

    ``"auto"`` picks CUDA when available, else CPU.

    Raises:
        ConfigError: the name is malformed or names a device this machine lacks.
    """
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError as exc:
        raise ConfigError(f"device {device!r} is not valid; use auto, cpu or cuda[:N]") from exc
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} asked for but no CUDA device is available")
    if resolved.type == "cuda" and (resolved.index or 0) >= torch.cuda.device_count():
        raise ConfigError(f"device {device!r}: only {torch.cuda.device_count()} CUDA device(s)")
    return resolved


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of a ``precision`` (``auto``, ``fp32``, ``bf16``, ``fp16``) on
    ``device``; ``None``: plain fp32. ``auto`` is fp32 on CPU and, on CUDA, bf16 where supported
    else fp16.

    Raises:
        ConfigError: fp16 on a device other than CUDA.
    """
    import torch

    if precision == "fp32" or (precision == "auto" and device.type != "cuda"):
        return None
    if precision == "bf16":
        return torch.bfloat16
    if device.type != "cuda":
        raise ConfigError(f"precision fp16 needs a CUDA device, not {device}; use bf16 or fp32")
    if precision == "fp16" or not torch.cuda.is_bf16_supported():
        return torch.float16
    return torch.bfloat16
