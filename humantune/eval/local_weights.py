"""Network weights from local files only: where torch keeps them, and a strict load that names what does not fit
(one-line :class:`~humantune.errors.HumantuneError`s instead of torch's multi-line ones)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from humantune.errors import HumantuneError


def hub_checkpoint_dir() -> Path:
    """Where torch keeps downloaded weights: ``$TORCH_HOME/hub/checkpoints``, by default
    ``~/.cache/torch/hub/checkpoints``."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def load_state_dict_file(path: Path, what: str) -> dict[str, torch.Tensor]:
    """The state dict in ``path`` (tensors only, ``weights_only``); HumantuneError naming ``what`` and the file when
    it cannot be read as one."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a truncated download, an HTML page saved as .pth, a pickle with code
        raise HumantuneError(f"{what} weights {path} could not be read as a torch state dict: {exc}") from None
    if not isinstance(state, dict):
        raise HumantuneError(f"{what} weights {path} hold a {type(state).__name__}, not a state dict") from None
    return state


def load_strict(module: nn.Module, state: dict[str, torch.Tensor], path: Path, what: str) -> None:
    """Load every parameter of ``module`` from ``state``; a missing, extra or mis-shaped tensor is a HumantuneError.
    BatchNorm's ``num_batches_tracked`` counters may be absent (older files do not store them)."""
    own = module.state_dict()
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in own]
    wrong = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
        if wrong:
            k = wrong[0]
            parts.append(
                f"{len(wrong)} of the wrong shape (e.g. {k}: {tuple(state[k].shape)} vs {tuple(own[k].shape)})"
            )
        raise HumantuneError(f"{what} weights {path} do not fit the network: keys " + ", ".join(parts))
    module.load_state_dict(state, strict=False)
