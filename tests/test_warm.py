"""Warm reruns: with every feature and probe cached, `rank` builds no backbone, decodes no image, fits no probe."""

from __future__ import annotations

import pytest
import torch

from zoo_rank import metrics as metrics_mod
from zoo_rank import probe as probe_mod
from zoo_rank.extract import decode as decode_mod
from zoo_rank.extract import zoo as zoo_mod
from zoo_rank.jobs import memo
from zoo_rank.jobs import rank as rank_mod
from zoo_rank.jobs.rank import RankOptions
from zoo_rank.models import factory as models_mod
from zoo_rank.options import BoardOptions, ExtractOptions, ProbeOptions, Subset


def test_remembered_computes_once_per_record(tmp_path):
    calls = []

    def compute():
        calls.append(1)
        return {"top1": 0.5 + len(calls)}

    a = memo.remembered("t", {"x": 1}, compute, tmp_path)
    assert memo.remembered("t", {"x": 1}, compute, tmp_path) == a == {"top1": 1.5} and len(calls) == 1
    assert memo.remembered("t", {"x": 2}, compute, tmp_path) == {"top1": 2.5}  # another record
    (stored,) = [p for p in (tmp_path / "memo" / "t").iterdir() if "2.5" not in p.read_text()]
    stored.write_text("{not json")  # damaged: recomputed, not read
    assert memo.remembered("t", {"x": 1}, compute, tmp_path) == {"top1": 3.5}


def test_source_digest_follows_the_code(tmp_path, monkeypatch):
    import types

    f = tmp_path / "solver.py"
    f.write_text("A = 1\n")
    module = types.ModuleType("solver")
    module.__file__ = str(f)
    first = memo.source_digest.__wrapped__(module)
    f.write_text("A = 2\n")
    assert memo.source_digest.__wrapped__(module) != first


def test_warm_rank_builds_decodes_and_fits_nothing(cache_dir, tmp_path, monkeypatch):
    kw = dict(
        subset=Subset(5), probe_subset=Subset(3), probe=ProbeOptions(method="ridge"), extract=ExtractOptions(quiet=True),
        board=BoardOptions(metrics=("vci", "logme"), command="test", n_boot=0),
    )  # fmt: skip
    models = ["random-init:test_efficientnet", "random-init:test_convnext"]
    cold, _ = rank_mod.rank(models, data="digits", options=RankOptions(out=tmp_path / "cold", **kw))
    assert all(r.error is None for r in cold.results)

    def refuse(what):
        return lambda *a, **k: pytest.fail(f"a warm rerun {what}")

    real_create = models_mod.timm.create_model

    def skeleton_only(*a, **k):
        # describe_backbone's weightless skeleton (meta device) is allowed; a real network is not.
        assert torch.empty(0).device.type == "meta", "a warm rerun built a real network"
        return real_create(*a, **k)

    monkeypatch.setattr(models_mod.timm, "create_model", skeleton_only)
    monkeypatch.setattr(zoo_mod, "_build", refuse("built a backbone"))
    monkeypatch.setattr(decode_mod, "decode_images", refuse("decoded images"))
    monkeypatch.setattr(probe_mod, "ridge_probe", refuse("fitted a probe"))
    monkeypatch.setattr(probe_mod, "linear_probe", refuse("fitted a probe"))
    monkeypatch.setattr(metrics_mod, "compute_metrics", refuse("computed the scores"))
    warm, _ = rank_mod.rank(models, data="digits", options=RankOptions(out=tmp_path / "warm", **kw))
    for a, b in zip(cold.results, warm.results, strict=True):
        # NaN (an undefined metric, N <= p + 1 here) equals NaN for this comparison: same keys, same values.
        assert a.metrics.keys() == b.metrics.keys()
        assert list(b.metrics.values()) == pytest.approx(list(a.metrics.values()), rel=0, abs=0, nan_ok=True)
        assert a.undefined == b.undefined
        assert a.probes == b.probes and a.n_params == b.n_params > 0
