"""Weights files: hashing, reading state dicts, telling what a file is, hub downloads.

Every foreign exception raised while reading or fetching weights is mapped to
:class:`~wildreid.errors.WeightsError` here, with the file or repository named.
"""

from __future__ import annotations

import functools
import logging
import pickle
import struct
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from torch import nn

from wildreid.errors import WeightsError
from wildreid.files import sha256_file

__all__ = [
    "HUB_WEIGHTS_FILES",
    "check_state_dict_fits",
    "describe_file",
    "describe_object",
    "download_hub_file",
    "file_sha256",
    "preview",
    "read_state_dict",
    "require_file",
]

logger = logging.getLogger(__name__)

HUB_WEIGHTS_FILES = ("model.safetensors", "pytorch_model.bin")
"""Weights files looked for in a hub repository, in timm's order of preference."""
_TORCH_READ_ERRORS = (
    OSError,
    RuntimeError,
    ValueError,
    EOFError,
    KeyError,  # torch's weights-only unpickler on some non-pickle bytes
    IndexError,
    pickle.UnpicklingError,
)
_SAFETENSORS_READ_ERRORS = (OSError, RuntimeError, ValueError, SafetensorError)


def load_torch_file(path: Path, *, not_readable: str) -> Any:
    """``torch.load`` on the CPU with ``weights_only`` (plain types and tensors only).

    Args:
        not_readable: the message's start when the file cannot be read, e.g.
            ``"x.pt is not a wildreid checkpoint"``; what the file seems to be is appended.

    Raises:
        WeightsError: the file cannot be unpickled as weights.
    """
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except _TORCH_READ_ERRORS as exc:
        raise WeightsError(
            f"{not_readable}: it seems to be {describe_file(path)} "
            f"({' '.join(str(exc).split())[:200]})"
        ) from exc


def require_file(path: Path, *, what: str) -> Path:
    """Return ``path`` if it is an existing file.

    Raises:
        WeightsError: naming the path, when it is missing or a directory.
    """
    if not path.exists():
        raise WeightsError(f"{what}: weights file {path} does not exist")
    if not path.is_file():
        raise WeightsError(f"{what}: weights path {path} is {describe_file(path)}, not a file")
    return path


def file_sha256(path: Path) -> str:
    """SHA-256 hex digest of a file, streamed in chunks.

    Results are cached for the process per (resolved path, size, modification time), so
    loading the same model twice hashes it once.

    Raises:
        WeightsError: the file cannot be read.
    """
    try:
        resolved = path.resolve()
        stat = resolved.stat()
        return _sha256_cached(str(resolved), stat.st_size, stat.st_mtime_ns)
    except OSError as exc:
        raise WeightsError(f"cannot read weights file {path}: {exc}") from exc


@functools.lru_cache(maxsize=64)
def _sha256_cached(path: str, size: int, mtime_ns: int) -> str:
    digest = sha256_file(path)
    logger.debug("sha256 of %s (%d bytes, mtime %d) computed", path, size, mtime_ns)
    return digest


def describe_file(path: Path) -> str:
    """A short guess of what a file is, from its first bytes (for error messages)."""
    if not path.exists():
        return "missing"
    if path.is_dir():
        return "a directory"
    try:
        with path.open("rb") as stream:
            head = stream.read(16)
        size = path.stat().st_size
    except OSError as exc:
        return f"unreadable ({exc})"
    if not head:
        return "an empty file"
    if head.startswith(b"PK\x03\x04"):
        return "a zip archive (a PyTorch torch.save file or a NumPy .npz)"
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return "a pickle (a legacy PyTorch file)"
    if head.startswith(b"\x89PNG") or head.startswith(b"\xff\xd8\xff"):
        return "an image"
    if len(head) >= 9 and head[8:9] == b"{":
        (header_bytes,) = struct.unpack("<Q", head[:8])
        if 0 < header_bytes < size:
            return "a safetensors file"
    if head.startswith(b"\x93NUMPY"):
        return "a NumPy .npy array"
    try:
        head.decode("utf-8")
    except UnicodeDecodeError:
        return f"an unrecognised binary file ({size} bytes)"
    return f"a text file ({size} bytes)"


def _is_tensor_dict(obj: object) -> bool:
    return (
        isinstance(obj, Mapping)
        and len(obj) > 0
        and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())
    )


def describe_object(obj: object) -> str:
    """A short description of what ``torch.load`` returned (for error messages)."""
    if _is_tensor_dict(obj):
        assert isinstance(obj, Mapping)
        return f"a plain state dict of {len(obj)} tensors (keys {preview(list(obj))})"
    if isinstance(obj, Mapping):
        return f"a dict with keys {preview([str(k) for k in obj])}"
    return f"a {type(obj).__name__}"


def preview(items: Sequence[str], n: int = 5) -> str:
    """``a, b, c (+12 more)``, or ``none``."""
    if not items:
        return "none"
    shown = ", ".join(items[:n])
    return f"{shown} (+{len(items) - n} more)" if len(items) > n else shown


def read_state_dict(path: Path, *, what: str) -> dict[str, torch.Tensor]:
    """Read a state dict from ``.safetensors`` or a ``torch.save`` file (``weights_only``).

    A dict wrapping the state dict under ``state_dict`` or ``model`` is unwrapped and a
    ``module.`` prefix (DistributedDataParallel) is removed.

    Raises:
        WeightsError: missing, unreadable, or not a state dict (the message says what the file
            seems to be).
    """
    require_file(path, what=what)
    kind = describe_file(path)
    obj: Any
    if kind == "a safetensors file" or path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            obj = load_file(str(path), device="cpu")
        except _SAFETENSORS_READ_ERRORS as exc:
            raise WeightsError(
                f"{what}: cannot read weights file {path}; it seems to be {kind} ({exc})"
            ) from exc
    else:
        obj = load_torch_file(path, not_readable=f"{what}: cannot read weights file {path}")
    for key in ("state_dict", "model"):
        if isinstance(obj, Mapping) and not _is_tensor_dict(obj) and key in obj:
            obj = obj[key]
    if not _is_tensor_dict(obj):
        raise WeightsError(
            f"{what}: weights file {path} holds {describe_object(obj)}, not a state dict of tensors"
        )
    prefix = "module."
    if all(k.startswith(prefix) for k in obj):
        obj = {k[len(prefix) :]: v for k, v in obj.items()}
    return dict(obj)


def check_state_dict_fits(
    module: nn.Module,
    state_dict: Mapping[str, torch.Tensor],
    *,
    what: str,
    ignore: Iterable[str] = (),
) -> None:
    """Raise unless ``state_dict`` has exactly the keys and shapes of ``module``'s state dict.

    Args:
        what: names the weights in the message (file path, model name).
        ignore: keys of ``module`` that may be missing (e.g. non-persistent buffers).

    Raises:
        WeightsError: "checkpoint from another architecture: missing keys ..., unexpected
            keys ..., shape mismatch ...".
    """
    expected = module.state_dict()
    ignored = set(ignore)
    missing = [k for k in expected if k not in state_dict and k not in ignored]
    unexpected = [k for k in state_dict if k not in expected]
    mismatched = [
        f"{k} {tuple(state_dict[k].shape)} vs {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state_dict and state_dict[k].shape != v.shape
    ]
    if missing or unexpected or mismatched:
        raise WeightsError(
            f"{what}: checkpoint from another architecture: missing keys {preview(missing)}, "
            f"unexpected keys {preview(unexpected)}, shape mismatch {preview(mismatched)} "
            f"(file vs model)"
        )


def download_hub_file(repo_id: str, *, filenames: Sequence[str], model: str) -> Path:
    """Fetch the first of ``filenames`` that a Hugging Face hub repository has (cached).

    ``repo_id`` may carry a revision as ``owner/name@revision``. Files come from the
    Hugging Face cache when present, so a model downloads once.

    Raises:
        WeightsError: none of the files can be had (offline, gated, missing); the message says
            where to download the file by hand and how to pass it as ``weights=``.
    """
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RemoteEntryNotFoundError,
    )

    repo, _, revision = repo_id.partition("@")
    problems: list[str] = []
    unreachable = False
    for filename in filenames:
        try:
            path = hf_hub_download(
                repo,
                filename,
                revision=revision or None,
                library_name="wildreid",
                # Once the hub proved unreachable, look only in the cache (no more retries).
                local_files_only=unreachable,
            )
        except RemoteEntryNotFoundError:
            problems.append(f"no {filename} in the repository")
        except LocalEntryNotFoundError:
            unreachable = True
            problems.append(f"{filename} is not cached and the hub cannot be reached")
        except (HfHubHTTPError, OSError, ValueError) as exc:
            problems.append(f"{filename}: {str(exc).splitlines()[0]}")
            break
        else:
            logger.info("%s: weights file %s from hf-hub:%s", model, path, repo_id)
            return Path(path)
    raise WeightsError(
        f"{model}: cannot get weights from the Hugging Face hub repository {repo_id} "
        f"({'; '.join(problems)}). Allow network access once (the file is then cached), or "
        f"download {' or '.join(filenames)} from https://huggingface.co/{repo} and pass it: "
        f"load_model({model!r}, weights='path/to/{filenames[0]}') "
        f"(CLI: --weights path/to/{filenames[0]})"
    )
