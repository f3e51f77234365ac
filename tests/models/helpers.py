"""Random weights files for offline tests of the hub loading paths (nothing is downloaded)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import timm
import torch
from safetensors.torch import save_file

from wildreid.models.cards import ModelCard

CHELSEA_CAT_CLASSES = {281, 282, 285}  # ImageNet tabby, tiger cat, Egyptian cat


def random_state_dict(timm_name: str, *, seed: int = 0, **kwargs: Any) -> dict[str, torch.Tensor]:
    """A state dict with the keys and shapes of ``timm.create_model(timm_name, **kwargs)``.

    Built on the meta device and filled with small random values (BatchNorm variances 1), so
    it costs no real initialisation.
    """
    with torch.device("meta"):
        template = timm.create_model(timm_name, **kwargs).state_dict()
    generator = torch.Generator().manual_seed(seed)
    state: dict[str, torch.Tensor] = {}
    for key, value in template.items():
        if not value.is_floating_point():
            state[key] = torch.zeros(value.shape, dtype=value.dtype)
        elif key.endswith("running_var"):
            state[key] = torch.ones(value.shape)
        else:
            state[key] = torch.randn(value.shape, generator=generator) * 0.02
    return state


def save_state_dict(state: dict[str, torch.Tensor], path: Path) -> Path:
    """Save as safetensors or ``torch.save`` depending on the suffix."""
    if path.suffix == ".safetensors":
        save_file(state, str(path))
    else:
        torch.save(state, path)
    return path


def batch_for(card: ModelCard, n: int = 1, *, seed: int = 0) -> torch.Tensor:
    """A normalised-looking random batch of the card's input size, (n, 3, H, W)."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn((n, 3, *card.input_size), generator=generator)


@contextmanager
def one_torch_thread() -> Iterator[None]:
    """Run torch on one thread, then restore the setting.

    The test batches are tiny; on a busy 2-core machine two OpenMP threads spin against other
    processes and a 50 ms forward pass can take seconds.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
