"""Labelled image sets through the ``datasets`` library; class-balanced subsets written down as manifests.

Spec syntax of ``load_images(spec, split=None)``; a ``:SPLIT`` suffix picks the split (``split=`` wins):

- ``fashion-mnist[:train|test]``: built-in, offline, Debian's ``dataset-fashion-mnist`` idx files.
- ``digits[:train|test]``: built-in, offline, scikit-learn's 8x8 digits with a fixed stratified split.
- ``imagenet-sample``, ``cifar10-local[:train|test]``: ../shared/data beside the repository (or
  ``$ZOO_RANK_SHARED_DATA``): one ImageNet image per class; CIFAR-10 as JPEG.
- ``imagenet-1k[:train|val]``: ImageNet-1k on the Hub (gated: accept its terms, log in), ``PRETRAINING``.
- ``pets``, ``flowers102``, ``aircraft``, ... ``[:train|val|test]``: the paper's ten downstream sets
  (``DOWNSTREAM``) on the Hugging Face Hub; they need network or a copy in the datasets cache.
- ``path/to/file.parquet``: a parquet file in the datasets image layout (image struct + int label).
- ``path/to/folder[:SPLIT]``: a folder of parquet files (splits from file names as datasets infers them:
  train*, test*, validation*) or an image folder (one sub-folder per class, optionally under train/, test/).
- ``hf:org/name[:SPLIT]`` or ``org/name[:SPLIT]``: any Hub image dataset with image and label columns.

Every set comes back as an ``ImageSet`` whose ``dataset`` has exactly two columns: ``image`` (datasets
``Image(mode="RGB")``: grayscale, palette and RGBA images decode to RGB PIL images) and ``label`` (int64, an
index into ``classes``). Its ``fingerprint`` names the source and the split's content without the file
modification times, so a changed file changes it and a copied one does not. A (spec, split) is opened once
per process; later calls get the same ImageSet.

Subsets: ``balanced_subset(images, Subset(n_per_class, seed))`` draws n images per class (all of a class
that has fewer, recorded in the manifest) reproducibly on any machine, once per (data, split, subset);
``Manifest.save``/``Manifest.load`` write it down as JSON, and its ``digest()`` goes into cache keys. Add
your own offline set to ``BUILTIN`` or ``DOWNSTREAM`` as a ``DatasetSpec`` (data, not code), e.g. with
``kind="local"`` and a parquet path.

The rooms: registry.py (specs, datasets.json, resolution), load.py (``load_images``), local.py, hub.py,
builtin.py (one loader per kind), images.py (``ImageSet``, ``ImageRows``), manifest.py (subsets).
"""

from zoo_rank.data.builtin import FASHION_MNIST_CLASSES, _arrow_dataset, _read_idx
from zoo_rank.data.images import DATA_FORMAT, ImageRows, ImageSet
from zoo_rank.data.load import _LOADERS, load_images
from zoo_rank.data.manifest import (
    MANIFEST_FORMAT,
    Manifest,
    balanced_indices,
    balanced_subset,
    check_subset_args,
    short_classes_message,
)
from zoo_rank.data.registry import (
    BUILTIN,
    DOWNSTREAM,
    PRETRAINING,
    DatasetSpec,
    known_datasets,
    shared_data_dir,
)
from zoo_rank.options import Subset

__all__ = [
    "BUILTIN",
    "DATA_FORMAT",
    "DOWNSTREAM",
    "FASHION_MNIST_CLASSES",
    "MANIFEST_FORMAT",
    "PRETRAINING",
    "_LOADERS",
    "DatasetSpec",
    "ImageRows",
    "ImageSet",
    "Manifest",
    "Subset",
    "_arrow_dataset",
    "_read_idx",
    "balanced_indices",
    "balanced_subset",
    "check_subset_args",
    "known_datasets",
    "load_images",
    "shared_data_dir",
    "short_classes_message",
]
