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


class ShippedNetwork:
    """Saving and loading of a small network humantune trains and ships (``humantune/assets/<name>/``): a
    ``config.json`` (a dataclass with ``from_dict(dict, source)``) and a safetensors weights file, loaded with
    one-line errors naming the file. A subclass sets ``NAME`` (what it is, in messages), ``WHAT`` (the prefix of
    its config and weights in messages), ``WEIGHTS_NAME``, ``DEFAULT_DIR`` and ``CONFIG_CLASS``, and is built as
    ``cls(config)``."""

    NAME: str
    WHAT: str
    WEIGHTS_NAME: str
    CONFIG_NAME = "config.json"
    DEFAULT_DIR: Path
    CONFIG_CLASS: type

    def save(self, folder: str | Path) -> Path:
        """Write the weights (float32, without batch-norm step counters) and ``config.json`` into ``folder``."""
        from dataclasses import asdict

        from safetensors.torch import save_file

        from humantune.io import atomic_path, write_json_atomic

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().contiguous().float() for k, v in self.state_dict().items()
                 if not k.endswith("num_batches_tracked")}
        with atomic_path(folder / self.WEIGHTS_NAME) as tmp:
            save_file(state, str(tmp), metadata={"format": "pt"})
            tmp.chmod(0o644)  # the temporary file is private; the shipped weights are for everyone to read
        write_json_atomic(folder / self.CONFIG_NAME, asdict(self.config))
        return folder

    @classmethod
    def load_folder(cls, folder: Path):
        """The network saved in ``folder`` (or beside the file ``folder`` names), in eval mode."""
        import json

        from safetensors import SafetensorError
        from safetensors.torch import load_file

        if folder.is_file():
            folder = folder.parent
        config_path, weights_path = folder / cls.CONFIG_NAME, folder / cls.WEIGHTS_NAME
        for p in (config_path, weights_path):
            if not p.is_file():
                raise HumantuneError(f"{cls.NAME}: {p} does not exist (expected a folder with {cls.CONFIG_NAME} and "
                                     f"{cls.WEIGHTS_NAME}; see humantune/assets/{cls.DEFAULT_DIR.name}/README.md)")
        try:
            raw = json.loads(config_path.read_text(encoding="utf-8"))
            if not isinstance(raw, dict):
                raise TypeError(f"expected a JSON object, got {type(raw).__name__}")
            net = cls(cls.CONFIG_CLASS.from_dict(raw, config_path))
        except (json.JSONDecodeError, UnicodeDecodeError, OSError, TypeError, ValueError, AttributeError) as exc:
            raise HumantuneError(f"{cls.WHAT} config {config_path} is not valid: {' '.join(str(exc).split())}") \
                from None
        try:
            state = load_file(str(weights_path))
        except (SafetensorError, OSError) as exc:
            raise HumantuneError(f"{cls.WHAT} weights {weights_path} could not be read (truncated, empty or not a "
                                 f"safetensors file?): {' '.join(str(exc).split())}") from None
        try:
            missing, unexpected = net.load_state_dict(state, strict=False)
        except RuntimeError as exc:  # a tensor of the wrong shape: weights of another configuration
            first = str(exc).strip().splitlines()[-1].strip()
            raise HumantuneError(f"{cls.WHAT} weights {weights_path} do not match {config_path}: {first}") from None
        missing = [k for k in missing if not k.endswith("num_batches_tracked")]
        if missing or unexpected:
            raise HumantuneError(f"{cls.WHAT} weights {weights_path} do not match {config_path}: "
                                 f"missing {missing[:3]}, unexpected {unexpected[:3]}")
        return net.eval()
