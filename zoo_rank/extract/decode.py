"""Decode a (data, split, subset) once for every model of a run: uint8 squares, on the CPU or on the GPU.

Each image becomes its central ``short x short`` square (all that a centre-crop eval transform ever
sees, zoo_rank.transforms), downscaled with antialiased bicubic to ``side`` when larger (never upscaled),
as a (3, s, s) uint8 tensor, s <= side. JPEGs are decoded by torchvision.io.decode_jpeg (libjpeg-turbo on
the CPU; on CUDA a whole chunk in one batched nvJPEG call); other formats (PNG, PGM, PPM, ...) by PIL on
the CPU. A background thread decodes chunk after chunk, so the first model starts on the first chunk
while the rest is still decoding; the others find every image ready.

Where the images live: on the GPU when decoded there and they take under a third of its free memory; else
in host memory when under `HOST_BUDGET_FRACTION` of the available RAM; else in a memory-mapped file
``<cache root>/decoded/<key>.u8`` (slots of 3 x side x side bytes), kept when a run fails so the rerun
reuses it, removed by `remove_file()` when the run is done.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import torch
import torch.nn.functional as F

from zoo_rank._paths import cache_root, write_text_atomic
from zoo_rank._validation import ZooRankError

DECODE_VERSION = 1
CHUNK = 256  # images per decode call: one batched nvJPEG call on CUDA
HOST_BUDGET_FRACTION = 0.25
GPU_BUDGET_FRACTION = 0.33
_JPEG_MAGIC = b"\xff\xd8"


class DecodeError(ZooRankError):
    """The images could not be decoded: a failure of the data, shared by every model of the run."""


def decode_spec(decoder: str, side: int) -> str:
    """What produced the pixels, for cache keys: decoder ("cpu" | "cuda"), square side, resampling."""
    return f"tensor-v{DECODE_VERSION}:{decoder}:square{side}:bicubic-aa"


def image_bytes(dataset: Any, rows: np.ndarray) -> list[bytes]:
    """The encoded files of `rows` of a datasets image table (no decoding); files named by path are read.

    `dataset`: a datasets.Dataset or a pyarrow.Table with the same ``image`` struct column (bytes, path).
    """
    indices = np.asarray(rows, dtype=np.int64)
    if isinstance(dataset, pa.Table):
        table = dataset.take(indices)
    else:
        table = dataset.with_format("arrow")[indices.tolist()]
    column = table.column("image").combine_chunks()
    blobs = column.field("bytes").to_pylist()
    paths = column.field("path").to_pylist()
    out = []
    for blob, path in zip(blobs, paths, strict=True):
        if blob is None:
            if not path:
                raise ZooRankError("an image row has neither bytes nor a path; rebuild the dataset.")
            blob = Path(path).read_bytes()
        out.append(blob)
    return out


def _decode_pil(blob: bytes) -> torch.Tensor:
    from PIL import Image

    with Image.open(io.BytesIO(blob)) as img:
        rgb = img.convert("RGB")  # as zoo_rank.models.RGBTransform does for the PIL path
    return torch.from_numpy(np.asarray(rgb).copy()).permute(2, 0, 1)


def decode_images(blobs: list[bytes], device: torch.device) -> list[torch.Tensor]:
    """Encoded images -> list of (3, h, w) uint8 RGB tensors on `device` (JPEG: torchvision; else PIL)."""
    from torchvision.io import ImageReadMode, decode_jpeg

    out: list[torch.Tensor | None] = [None] * len(blobs)
    jpegs = [i for i, b in enumerate(blobs) if b[:2] == _JPEG_MAGIC]
    if jpegs:
        data = [torch.frombuffer(bytearray(blobs[i]), dtype=torch.uint8) for i in jpegs]
        try:
            decoded = decode_jpeg(data, mode=ImageReadMode.RGB, device=device)
        except RuntimeError:  # a JPEG flavour the fast decoder refuses (e.g. lossless): PIL decodes it
            decoded = [None] * len(jpegs)
        for i, img in zip(jpegs, decoded, strict=True):
            out[i] = img
    for i, img in enumerate(out):
        if img is None:
            out[i] = _decode_pil(blobs[i]).to(device)
    return out  # type: ignore[return-value]


def to_square(images: list[torch.Tensor], side: int) -> list[torch.Tensor]:
    """Central square of each (3, h, w) uint8 image, antialiased-bicubic downscaled to `side` when larger.

    Offsets are torchvision CenterCrop's; images of one shape are resized in one batched call.
    """
    squares = []
    for img in images:
        h, w = img.shape[-2:]
        s = min(h, w)
        top, left = round((h - s) / 2.0), round((w - s) / 2.0)
        squares.append(img[:, top : top + s, left : left + s])
    out: list[torch.Tensor | None] = [sq if sq.shape[-1] <= side else None for sq in squares]
    big: dict[int, list[int]] = {}
    for i, sq in enumerate(squares):
        if out[i] is None:
            big.setdefault(sq.shape[-1], []).append(i)
    for idx in big.values():
        x = torch.stack([squares[i] for i in idx]).float()
        x = F.interpolate(x, size=(side, side), mode="bicubic", antialias=True, align_corners=False)
        x = x.round_().clamp_(0, 255).to(torch.uint8)
        for i, img in zip(idx, x.unbind(0), strict=True):
            out[i] = img
    return [t.contiguous() for t in out]  # type: ignore[union-attr]


def _available_ram() -> int:
    with contextlib.suppress(ValueError, OSError, AttributeError):
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    return 2 << 30  # pragma: no cover


class DecodedImages:
    """Rows of an image set decoded once: image(i) is the (3, s, s) uint8 square of rows[i], s <= side.

    Filled by `start()` in a background thread, chunk by chunk; `batches()` waits only for what it hands
    out. `decoder` is "cuda" (nvJPEG) or "cpu"; `spec` goes into cache keys.
    """

    def __init__(
        self,
        dataset: Any,
        rows: np.ndarray,
        side: int,
        decode_device: torch.device,
        *,
        key_parts: dict | None = None,
        cache_dir: str | os.PathLike | None = None,
        store: str = "auto",
    ):
        self.dataset = dataset
        self.rows = np.asarray(rows, dtype=np.int64)
        self.side = int(side)
        self.decode_device = decode_device
        self.decoder = "cuda" if decode_device.type == "cuda" else "cpu"
        self.spec = decode_spec(self.decoder, self.side)
        n = len(self.rows)
        self.sides = np.zeros(n, dtype=np.int32)
        self._images: list[torch.Tensor | None] = [None] * n
        self._n_chunks = (n + CHUNK - 1) // CHUNK
        self._ready = [threading.Event() for _ in range(self._n_chunks)]
        self._events: list[Any] = [None] * self._n_chunks  # CUDA events of the decode stream
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None
        bound = n * 3 * self.side * self.side
        self.store = store if store != "auto" else self._pick_store(bound)
        self.path: Path | None = None
        self._mm: np.ndarray | None = None
        if self.store == "file":
            record = {"parts": key_parts or {}, "rows": _rows_digest(self.rows), "spec": self.spec}
            digest = hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()[:24]
            self.path = cache_root(cache_dir) / "decoded" / f"{digest}.u8"

    def _pick_store(self, bound: int) -> str:
        if self.decoder == "cuda":
            free, _ = torch.cuda.mem_get_info(self.decode_device)
            if bound <= GPU_BUDGET_FRACTION * free:
                return "device"
        return "memory" if bound <= HOST_BUDGET_FRACTION * _available_ram() else "file"

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def device(self) -> torch.device:
        return self.decode_device if self.store == "device" else torch.device("cpu")

    # ---- filling ----------------------------------------------------------------------------------

    def start(self) -> DecodedImages:
        """Decode in a background thread (or reuse a complete memory-mapped file); returns self."""
        if self.path is not None and self._reuse_file():
            return self
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._tmp = self.path.with_name(f".{self.path.name}.{uuid.uuid4().hex[:8]}")
            self._mm = np.lib.format.open_memmap(
                self._tmp, mode="w+", dtype=np.uint8, shape=(len(self.rows), 3, self.side, self.side)
            )
        self._thread = threading.Thread(target=self._fill, name="zoo_rank-decode", daemon=True)
        self._thread.start()
        return self

    def _fill(self) -> None:
        stream = torch.cuda.Stream(self.decode_device) if self.decoder == "cuda" else None
        try:
            with torch.cuda.stream(stream) if stream is not None else contextlib.nullcontext():
                for c in range(self._n_chunks):
                    lo, hi = c * CHUNK, min(len(self.rows), (c + 1) * CHUNK)
                    blobs = image_bytes(self.dataset, self.rows[lo:hi])
                    if stream is not None:
                        # nvJPEG writes from a private stream into blocks allocated on this one without
                        # waiting for it (pytorch/vision#9606): let this stream's earlier work finish so
                        # that no block it frees is still being read.
                        stream.synchronize()
                    squares = to_square(decode_images(blobs, self.decode_device), self.side)
                    for i, img in enumerate(squares, start=lo):
                        self._put(i, img)
                    if stream is not None:
                        self._events[c] = torch.cuda.Event()
                        self._events[c].record(stream)
                    self._ready[c].set()
            if self._mm is not None:
                self._mm.flush()
                write_text_atomic(self.path.with_suffix(".json"), json.dumps({"sides": self.sides.tolist()}))
                os.replace(self._tmp, self.path)
        except BaseException as err:  # handed to the consumer, which re-raises it
            self._error = err
            for ev in self._ready:
                ev.set()

    def _put(self, i: int, img: torch.Tensor) -> None:
        s = img.shape[-1]
        self.sides[i] = s
        if self._mm is not None:
            self._mm[i, :, :s, :s] = img.cpu().numpy()
            self._images[i] = torch.from_numpy(self._mm[i, :, :s, :s])
        elif self.store == "device":
            self._images[i] = img
        else:
            self._images[i] = img.cpu()

    def _reuse_file(self) -> bool:
        index = self.path.with_suffix(".json")
        if not (self.path.is_file() and index.is_file()):
            return False
        try:
            sides = np.asarray(json.loads(index.read_text())["sides"], dtype=np.int32)
            mm = np.load(self.path, mmap_mode="c")  # copy-on-write: writable views, file untouched
        except (OSError, ValueError, KeyError):
            return False
        if sides.shape != self.sides.shape or mm.shape != (len(self.rows), 3, self.side, self.side):
            return False
        self.sides, self._mm = sides, mm
        for i, s in enumerate(sides):
            self._images[i] = torch.from_numpy(np.ascontiguousarray(mm[i, :, :s, :s]))
        for ev in self._ready:
            ev.set()
        return True

    def remove_file(self) -> None:
        """Delete the memory-mapped file (when one was used) after every model is done."""
        if self.path is not None:
            self._mm = None
            self.path.unlink(missing_ok=True)
            self.path.with_suffix(".json").unlink(missing_ok=True)

    def wait(self) -> None:
        """Block until every image is decoded (and the file, if any, is complete); re-raise the thread's error."""
        for c in range(self._n_chunks):
            self._wait_chunk(c)
        if self._thread is not None:
            self._thread.join()
        self._raise_error()

    def _raise_error(self) -> None:
        if self._error is not None:
            raise DecodeError(
                f"decoding the images failed ({type(self._error).__name__}: {self._error})"
            ) from self._error

    def _wait_chunk(self, c: int) -> None:
        self._ready[c].wait()
        self._raise_error()
        if self._events[c] is not None:
            torch.cuda.current_stream(self.decode_device).wait_event(self._events[c])

    # ---- reading ----------------------------------------------------------------------------------

    def batches(self, batch_size: int) -> Iterator[tuple[np.ndarray, list[torch.Tensor]]]:
        """(positions (b,), their uint8 squares) in row order, each batch as soon as it is decoded."""
        done = -1
        for start in range(0, len(self.rows), batch_size):
            end = min(len(self.rows), start + batch_size)
            for c in range(done + 1, (end - 1) // CHUNK + 1):
                self._wait_chunk(c)
                done = c
            yield np.arange(start, end), [self._images[i] for i in range(start, end)]  # type: ignore[misc]


def _rows_digest(rows: np.ndarray) -> str:
    return hashlib.sha256(np.asarray(rows, dtype="<i8").tobytes()).hexdigest()


__all__ = [
    "CHUNK",
    "DecodeError",
    "DecodedImages",
    "decode_images",
    "decode_spec",
    "image_bytes",
    "to_square",
]
