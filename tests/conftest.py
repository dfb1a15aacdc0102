import os
from pathlib import Path

import pytest

# Tests never reach a hub: any hub access must fail fast and clearly.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data (real CIFAR-10 and ImageNet-sample images); the test skips when absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"{SHARED_DATA} is absent (real-image data shipped beside the repo)")
    return SHARED_DATA


@pytest.fixture
def cache_dir(tmp_path, monkeypatch) -> Path:
    """An isolated zoo_rank cache for one test."""
    d = tmp_path / "zoo-cache"
    monkeypatch.setenv("ZOO_RANK_CACHE", str(d))
    return d
