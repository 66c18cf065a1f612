"""Where a task is trained: ``resolve_device`` turns a choice of ``config.DEVICES`` into a
torch device, the one place that decides it (the library, the server and the benchmarks).

Only training runs there (the train/prune/retrain phases, saliency, the analyses' dense
comparison); what a task commits comes back to the CPU, and the engine serves it there.
"""

from __future__ import annotations

import torch

from .config import DEVICES
from .errors import InvalidInputError, brief


class DeviceUnavailableError(InvalidInputError):
    """The device asked for does not exist on this machine (``cuda`` without a GPU)."""


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """``auto``: the CUDA GPU when torch sees one, else the CPU; ``cpu``; ``cuda`` (the
    current GPU), refused with ``DeviceUnavailableError`` where torch sees none. A
    ``torch.device`` of type cpu or cuda passes through (checked the same way)."""
    if isinstance(name, torch.device):
        if name.type not in DEVICES:
            raise InvalidInputError(f"device must be one of {DEVICES}, got {str(name)!r}")
        kind = name.type
    elif name in DEVICES:
        kind = name
    else:
        raise InvalidInputError(f"device must be one of {DEVICES}, got {brief(name)}")
    if kind == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if kind == "cuda" and not torch.cuda.is_available():
        raise DeviceUnavailableError(f"device 'cuda' asked for but {cuda_problem()}")
    if kind == "cuda" and isinstance(name, torch.device):
        return name
    return torch.device(kind)


def cuda_problem() -> str:
    """Why torch sees no CUDA GPU here, in words (for the error of asking for one)."""
    if torch.version.cuda is None:
        return (
            f"this torch ({torch.__version__}) is built without CUDA: "
            "use device 'auto' or 'cpu', or install a CUDA build of torch"
        )
    return (
        f"torch (CUDA {torch.version.cuda}) finds no usable GPU (no device, no driver, or "
        "CUDA_VISIBLE_DEVICES hides them): use device 'auto' or 'cpu'"
    )


def module_device(module: torch.nn.Module) -> torch.device:
    """The device a module's tensors live on (its first parameter or buffer; CPU if none)."""
    for parameter in module.parameters():
        return parameter.device
    for buffer in module.buffers():
        return buffer.device
    return torch.device("cpu")
