"""Request -> features: resolve a (model, data, subset) to a cache key, read the entry or extract it.

request.py (Request, resolve_request: no backbone built when a skeleton names the weights; load_features),
run.py (extract_features: one request in blocks, resumed from shards, committed once), commit.py (the
ranks' blocks -> one entry, checked once for NaN/Inf; what the entry records), loader.py (DataLoader of
image rows, bad images), forward.py (device, precision, OOM halving), distributed.py (torchrun process
group, rank blocks, gather/broadcast, class_stats across ranks), zoo.py (extract_zoo: decode the images
once for every model of a run), decode.py (CPU / nvJPEG), transforms.py (eval transforms as tensor ops).
"""

from zoo_rank._device import pick_device, resolve_precision
from zoo_rank.cache import FeatureSet
from zoo_rank.extract.distributed import class_stats, process_group, rank_block
from zoo_rank.extract.forward import DEFAULT_BATCH_SIZE
from zoo_rank.extract.loader import bad_image_error, default_num_workers, skipped_note
from zoo_rank.extract.request import Request, load_features, resolve_request
from zoo_rank.extract.run import extract_features, extract_request
from zoo_rank.extract.zoo import ZooModel, ZooRun, extract_zoo

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "FeatureSet",
    "Request",
    "ZooModel",
    "ZooRun",
    "bad_image_error",
    "class_stats",
    "default_num_workers",
    "extract_features",
    "extract_request",
    "extract_zoo",
    "load_features",
    "pick_device",
    "process_group",
    "rank_block",
    "resolve_precision",
    "resolve_request",
    "skipped_note",
]
