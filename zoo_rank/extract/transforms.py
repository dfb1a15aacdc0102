"""timm's eval transform as batched tensor ops, for images decoded once and shared by every model of a run.

timm's eval transform (``transforms_imagenet_eval``, crop_mode "center") is, on a PIL image:
``Resize(scale)`` of the shorter side with ``scale = floor(img_size / crop_pct)``, ``CenterCrop(img_size)``,
``ToTensor`` and ``Normalize(mean, std)``. The final crop is a centred square of the image's central
``short x short`` square, so the decode stage (zoo_rank.decode) keeps only that square, downscaled (never
upscaled) to a side that covers every model of the run (``cover_side``). `EvalTransform` then does the
rest on whatever device the model runs on: resize the square to ``scale x scale`` with the model's own
antialiased interpolation (PIL's kernels: torch's ``antialias=True`` bicubic uses PIL's a = -0.5),
round to uint8 levels as PIL does, centre-crop, scale and normalise in one fused multiply-add.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from zoo_rank._validation import ZooRankError

_INTERPOLATIONS = {"bicubic": "bicubic", "bilinear": "bilinear"}
# timm's default when a config has no crop_pct (timm.data.constants.DEFAULT_CROP_PCT).
_DEFAULT_CROP_PCT = 0.875


def tensor_path_reason(data_config: dict) -> str | None:
    """Why `data_config` cannot run as tensor ops (None when it can): only centre crops of square inputs
    with crop_pct <= 1 and bilinear/bicubic interpolation see nothing outside the central square."""
    size = tuple(data_config.get("input_size", (3, 0, 0)))[-2:]
    crop_pct = data_config.get("crop_pct") or _DEFAULT_CROP_PCT
    if (data_config.get("crop_mode") or "center") != "center":
        return f"crop_mode {data_config.get('crop_mode')!r} (only 'center' is done as tensor ops)"
    if len(size) != 2 or size[0] != size[1] or size[0] < 1:
        return f"input_size {data_config.get('input_size')} is not square"
    if crop_pct > 1:
        return f"crop_pct {crop_pct} > 1 crops outside the central square"
    if data_config.get("interpolation", "bilinear") not in _INTERPOLATIONS:
        return f"interpolation {data_config.get('interpolation')!r} (only bilinear and bicubic)"
    return None


@dataclass(frozen=True)
class EvalTransform:
    """One model's eval transform on square uint8 images.

    crop: the model's input side; scale: floor(crop / crop_pct), the side the square is resized to;
    interpolation: "bicubic" | "bilinear"; mean, std: per-channel normalisation (3,).
    """

    crop: int
    scale: int
    interpolation: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    @classmethod
    def from_data_config(cls, data_config: dict) -> EvalTransform:
        reason = tensor_path_reason(data_config)
        if reason is not None:
            raise ZooRankError(
                f"this model's eval transform cannot run on decoded tensors: {reason}; extract it with the "
                "per-model PIL path (zoo_rank.extract.extract_features)."
            )
        crop = int(tuple(data_config["input_size"])[-1])
        crop_pct = data_config.get("crop_pct") or _DEFAULT_CROP_PCT
        return cls(
            crop=crop,
            scale=math.floor(crop / crop_pct),
            interpolation=data_config.get("interpolation", "bilinear"),
            mean=tuple(float(v) for v in data_config["mean"]),  # type: ignore[arg-type]
            std=tuple(float(v) for v in data_config["std"]),  # type: ignore[arg-type]
        )

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, s, s) uint8 squares on any device -> (B, 3, crop, crop) float32 normalised, same device."""
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[-1] != images.shape[-2]:
            raise ZooRankError(
                f"EvalTransform expects (B, 3, s, s) uint8 squares, got {tuple(images.shape)} {images.dtype}"
            )
        x = images.float()
        if images.shape[-1] != self.scale:
            x = F.interpolate(
                x, size=(self.scale, self.scale), mode=self.interpolation, antialias=True, align_corners=False
            )
            # PIL resizes uint8 images to uint8: round and clip as it does, so both paths see the same levels.
            x = x.round_().clamp_(0, 255)
        top = round((self.scale - self.crop) / 2.0)  # torchvision's CenterCrop offsets
        if top > 0:
            x = x[..., top : top + self.crop, top : top + self.crop]
        elif top < 0:  # a crop larger than the image: CenterCrop pads with zeros
            pad = self.crop - self.scale
            x = F.pad(x, (-top, pad + top, -top, pad + top))
        mean = torch.tensor(self.mean, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=x.device).view(1, 3, 1, 1)
        return (x * (1.0 / (255.0 * std)) - mean / std).contiguous()


def cover_side(data_configs: list[dict]) -> int:
    """The decode side that covers every model: the largest resize side, rounded up to a multiple of 32.

    Rounding makes the side (and so the cache key, which records it) the same for zoos whose largest
    models differ by a few pixels; it never downscales below any model's own resize.
    """
    sides = [EvalTransform.from_data_config(dc).scale for dc in data_configs]
    if not sides:
        raise ZooRankError("cover_side got no data configs; pass at least one model's data config.")
    return 32 * math.ceil(max(sides) / 32)


__all__ = ["EvalTransform", "cover_side", "tensor_path_reason"]
