"""Where timm finds weight files: the Hugging Face cache, the torch hub cache, a local-dir folder.

Mirrors timm's own choices (timm/models/_hub.py) so a file can be named, and its digest taken, before
(or without) building the network.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlparse

from huggingface_hub import constants, try_to_load_from_cache
from timm.models._hub import get_cache_dir

# timm's file preference inside a local-dir folder (timm/models/_hub.py, load_state_dict_from_path).
_LOCAL_DIR_FILES = (
    "model.safetensors",
    "pytorch_model.bin",
    "pytorch_model.pth",
    "model.pth",
    "open_clip_model.safetensors",
    "open_clip_pytorch_model.safetensors",
    "open_clip_pytorch_model.bin",
    "open_clip_pytorch_model.pth",
)
_LOCAL_DIR_EXTS = (".safetensors", ".pth", ".pth.tar", ".bin")
# Hub weight files timm loads instead of a .bin when present (timm/models/_hub.py, _get_safe_alternatives).
_SAFE_ALTERNATIVE = {
    "pytorch_model.bin": "model.safetensors",
    "open_clip_pytorch_model.bin": "open_clip_model.safetensors",
}


def hub_offline() -> bool:
    """Whether the Hugging Face Hub must not be reached (HF_HUB_OFFLINE, read now: tests set it late)."""
    env = os.environ.get("HF_HUB_OFFLINE", "").strip().upper()
    return bool(constants.HF_HUB_OFFLINE) or env in {"1", "ON", "YES", "TRUE"}


def hub_cached(repo: str, filename: str, revision: str | None = None) -> Path | None:
    """The Hugging Face cache's copy of `filename` in `repo`, or None when it is not cached."""
    found = try_to_load_from_cache(repo, filename, revision=revision or None)
    return Path(found) if isinstance(found, str) else None


def hub_description(cfg: dict) -> str:
    """Where timm looks for a pretrained cfg's weights, for error messages."""
    if cfg.get("hf_hub_id"):
        return f"the Hugging Face cache for {cfg['hf_hub_id']}"
    if cfg.get("url"):
        return f"the torch hub cache for {cfg['url']}"
    return "timm's pretrained config (it names no weight file)"


def cached_hub_file(cfg: dict) -> Path | None:
    """The local file timm loads (or loaded) for a registry/hf-hub pretrained cfg; None if not cached."""
    hub_id = cfg.get("hf_hub_id")
    if hub_id:
        repo, _, revision = hub_id.partition("@")
        filename = cfg.get("hf_hub_filename") or "pytorch_model.bin"
        for candidate in (_SAFE_ALTERNATIVE.get(filename), filename):
            found = hub_cached(repo, candidate, revision) if candidate else None
            if found is not None:
                return found
    url = cfg.get("url")
    if url:
        path = Path(get_cache_dir()) / os.path.basename(urlparse(url).path)
        if path.is_file():
            return path
    return None


def local_dir_weights(folder: Path) -> Path | None:
    """The weight file timm picks in a local-dir folder (same preference order as timm)."""
    for name in _LOCAL_DIR_FILES:
        if (folder / name).is_file():
            return folder / name
    for ext in _LOCAL_DIR_EXTS:
        files = sorted(folder.glob(f"*{ext}"))
        if files:
            return files[0]
    return None
