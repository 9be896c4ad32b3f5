"""The compute device, chosen once: ``cuda`` when available, else ``cpu``."""

from __future__ import annotations

import functools

import torch


@functools.lru_cache(maxsize=None)
def default_device() -> torch.device:
    """``cuda`` if a CUDA device is visible, else ``cpu``; decided once per process."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def resolve_device(device=None) -> torch.device:
    """Turn ``None`` (the default device), a string or a ``torch.device`` into a device."""
    if device is None:
        return default_device()
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"device={device!r} is not a torch device ({err}); use 'cpu' or 'cuda'.") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device} was requested but CUDA is not available; use device='cpu'.")
    return device


def resolve_dtype(dtype) -> torch.dtype:
    """Accept ``torch.float32/float64`` or their names."""
    table = {"float32": torch.float32, "float64": torch.float64, torch.float32: torch.float32,
             torch.float64: torch.float64}
    if dtype not in table:
        raise ValueError(f"dtype={dtype!r} is not supported; use 'float32' or 'float64'.")
    return table[dtype]
