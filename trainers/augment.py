"""Augmentation strength: one scalar in [0, 1] scales a MONAI random-transform chain for 2D/2.5D MRI slices."""

from __future__ import annotations

import math

import torch
from monai.data import MetaTensor
from monai.transforms import (
    Compose,
    Rand2DElastic,
    RandBiasField,
    RandFlip,
    RandGaussianNoise,
    RandRotate,
    RandScaleIntensity,
    RandStdShiftIntensity,
    RandZoom,
    Transform,
)

# Settings at aug_strength = 1.0; every magnitude and every probability is multiplied by the strength.
MAX_ROTATION_DEG = 15.0  # in-plane rotation, uniform in +-15 deg * s
MAX_ZOOM = 0.15  # isotropic scale factor uniform in [1 - 0.15 s, 1 + 0.15 s]
MAX_SCALE_INTENSITY = 0.10  # intensities multiplied by (1 + f), f uniform in +-0.10 s
MAX_SHIFT_INTENSITY = 0.10  # intensities shifted by f * (image std), f uniform in +-0.10 s
MAX_NOISE_SD = 0.10  # additive Gaussian noise, sd uniform in [0, 0.10 s] (intensity units)
MAX_BIAS_COEFF = 0.05  # degree-3 Legendre bias field, coefficients uniform in +-0.05 s (multiplicative, exp)
BIAS_DEGREE = 3
BIAS_SPAN = {0.5: (0.9, 1.1), 1.0: (0.8, 1.25)}  # measured 5th/95th percentile of the field's min/max
ELASTIC_SPACING_PX = 16  # control-point spacing of the optional elastic deformation
MAX_ELASTIC_PX = 2.0  # control-point displacement ~ N(0, 1) * U(0, 2 s) px
PROB = {
    "flip": 0.5,
    "rotate": 0.8,
    "zoom": 0.8,
    "elastic": 0.5,
    "bias": 0.5,
    "scale": 0.8,
    "shift": 0.8,
    "noise": 0.5,
}  # probabilities at strength 1.0


def _settings(s: float) -> list[tuple[str, str]]:
    """Human-readable setting of every transform at strength ``s`` (source of AUG_DOC)."""

    def p(key: str) -> str:
        return f"p={PROB[key] * s:.2f}"

    return [
        ("left-right flip (one axis only, never up-down)", p("flip")),
        ("in-plane rotation", f"±{MAX_ROTATION_DEG * s:g}°, {p('rotate')}"),
        ("isotropic scaling", f"×{1 - MAX_ZOOM * s:g} to ×{1 + MAX_ZOOM * s:g}, {p('zoom')}"),
        (
            "elastic deformation (only with `elastic=True`)",
            f"{ELASTIC_SPACING_PX} px control grid, shift N(0,1)·U(0,{MAX_ELASTIC_PX * s:g}) px, {p('elastic')}",
        ),
        (
            "bias field (smooth, multiplicative)",
            f"degree {BIAS_DEGREE}, coefficients ±{MAX_BIAS_COEFF * s:g} "
            f"(≈×{BIAS_SPAN[s][0]}–×{BIAS_SPAN[s][1]} across the slice), {p('bias')}",
        ),
        ("intensity scale", f"×(1+f), f ∈ ±{MAX_SCALE_INTENSITY * s:g}, {p('scale')}"),
        ("intensity shift", f"+f·std(image), f ∈ ±{MAX_SHIFT_INTENSITY * s:g}, {p('shift')}"),
        ("Gaussian noise", f"sd ~ U(0, {MAX_NOISE_SD * s:g}), {p('noise')}"),
    ]


def _doc_table() -> str:
    """Markdown table of what strengths 0.5 and 1.0 mean, generated from the constants above."""
    lines = ["| transform | `aug_strength=0.5` | `aug_strength=1.0` |", "|---|---|---|"]
    for (what, half), (_, full) in zip(_settings(0.5), _settings(1.0), strict=True):
        lines.append(f"| {what} | {half} | {full} |")
    return "\n".join(lines)


AUG_DOC: str = (
    "**Augmentation strength.** `aug_strength` in [0, 1] scales every magnitude *and* every probability "
    "of one MONAI chain linearly; `0` is the identity (no transform is applied or even built). Transforms "
    "run in the order below (spatial first, then intensity) on one (C, H, W) slice; all C channels of a "
    "2.5D sample (neighbouring slices) get the same spatial transform, bias field, scale and shift, while "
    "noise is drawn per pixel. Spatial transforms use bilinear interpolation, keep the image size and "
    "pad by repeating the border. Noise sd is in intensity units, so it assumes intensity-normalised "
    "input (e.g. z-scored); the shift is relative to each image's std. The flip assumes left-right runs "
    "along the last (W) axis, as in axial/coronal slices; pass `lr_axis=None` for sagittal slices.\n\n"
    + _doc_table()
    + "\n"
)


class Augmenter:
    """Callable applying the scaled chain; reseeds itself per DataLoader worker so workers don't repeat."""

    def __init__(
        self,
        aug_strength: float,
        spatial: list[Transform],
        intensity: list[Transform],
        seed: int | None = None,
    ) -> None:
        self.aug_strength = aug_strength
        transforms = spatial + intensity
        self.spatial: Compose | None = Compose(spatial) if spatial else None
        self.intensity: Compose | None = Compose(intensity) if intensity else None
        self.transform: Compose | None = Compose(transforms) if transforms else None
        if seed is None and self.transform is not None:  # follow torch's seed so seeded trials repeat
            seed = int(torch.randint(0, 2**31 - 1, (1,)).item())
        self.seed = seed
        self._worker_seed: int | None = None
        if self.transform is not None:
            self.set_random_state(seed)

    def set_random_state(self, seed: int | None) -> None:
        """Reseed every random transform of the chain (deterministically derived from ``seed``)."""
        if self.transform is not None:
            self.transform.set_random_state(seed=seed)

    def _reseed_in_worker(self) -> None:
        """In a DataLoader worker, mix the worker's seed in once, so workers and epochs get new draws."""
        info = torch.utils.data.get_worker_info()
        if info is None or info.seed == self._worker_seed:
            return
        self._worker_seed = info.seed
        self.set_random_state(((self.seed or 0) * 1_000_003 + info.seed) % 2**32)

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        """Augment one (C, H, W) float sample; returns a float32 tensor of the same shape."""
        if not isinstance(image, torch.Tensor) or image.ndim != 3:
            raise ValueError(
                f"expected a (C, H, W) torch tensor, got {type(image).__name__} "
                f"of shape {tuple(getattr(image, 'shape', ()))}"
            )
        if self.transform is None:
            return image
        self._reseed_in_worker()
        out = self.transform(image.to(torch.float32))
        if isinstance(out, MetaTensor):
            out = out.as_tensor()
        return torch.as_tensor(out, dtype=torch.float32).contiguous()


def build_augment(
    aug_strength: float, elastic: bool = False, seed: int | None = None, lr_axis: int | None = 1
) -> Augmenter:
    """Build the augmentation for one strength (see AUG_DOC); ``lr_axis`` is the (H, W) axis to flip."""
    strength = float(aug_strength)
    if not 0.0 <= strength <= 1.0 or math.isnan(strength):
        raise ValueError(f"aug_strength must be in [0, 1], got {aug_strength}")
    if lr_axis not in (None, 0, 1):
        raise ValueError(f"lr_axis must be 0 (H), 1 (W) or None, got {lr_axis}")
    if strength == 0.0:
        return Augmenter(0.0, [], [], seed)
    s = strength
    spatial: list[Transform] = []
    if lr_axis is not None:
        spatial.append(RandFlip(prob=PROB["flip"] * s, spatial_axis=lr_axis))
    spatial += [
        RandRotate(
            range_x=math.radians(MAX_ROTATION_DEG * s),
            prob=PROB["rotate"] * s,
            keep_size=True,
            mode="bilinear",
            padding_mode="border",
        ),
        RandZoom(
            prob=PROB["zoom"] * s,
            min_zoom=1.0 - MAX_ZOOM * s,
            max_zoom=1.0 + MAX_ZOOM * s,
            mode="bilinear",
            padding_mode="edge",
            keep_size=True,
        ),
    ]
    if elastic:
        spatial.append(
            Rand2DElastic(
                spacing=(ELASTIC_SPACING_PX, ELASTIC_SPACING_PX),
                magnitude_range=(0.0, MAX_ELASTIC_PX * s),
                prob=PROB["elastic"] * s,
                mode="bilinear",
                padding_mode="border",
            )
        )
    intensity: list[Transform] = [
        RandBiasField(
            degree=BIAS_DEGREE, coeff_range=(-MAX_BIAS_COEFF * s, MAX_BIAS_COEFF * s), prob=PROB["bias"] * s
        ),
        RandScaleIntensity(factors=MAX_SCALE_INTENSITY * s, prob=PROB["scale"] * s),
        RandStdShiftIntensity(factors=MAX_SHIFT_INTENSITY * s, prob=PROB["shift"] * s),
        RandGaussianNoise(prob=PROB["noise"] * s, mean=0.0, std=MAX_NOISE_SD * s, sample_std=True),
    ]
    return Augmenter(strength, spatial, intensity, seed)
