"""Augmentation strength: one scalar in [0, 1] scales a random-transform chain applied to whole batches.

The chain runs on the device that holds the batch (GPU or CPU), with per-sample random parameters drawn
from a seeded ``torch.Generator``: no per-sample Python, no DataLoader workers. All spatial transforms of a
sample (flip, rotation, scaling, optional elastic warp) are fused into one resampling.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

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
    "of one transform chain linearly; `0` is the identity (nothing is drawn or applied). The chain runs on "
    "whole batches on the training device, each sample with its own random draws, in the order below "
    "(spatial first, then intensity). All C channels of a 2.5D sample (neighbouring slices) get the same "
    "spatial transform, bias field, scale and shift, while noise is drawn per pixel. The spatial transforms "
    "of a sample are fused into one bilinear resampling that keeps the image size and pads by repeating "
    "the border. Noise sd is in intensity units, so it assumes intensity-normalised input (e.g. z-scored); "
    "the shift is relative to each image's std. The flip mirrors one image axis, `lr_axis` (0 = rows, "
    "1 = columns); training passes 0, because the cached slices are axial planes of RAS-oriented volumes "
    "whose first axis runs left-right; `lr_axis=None` disables the flip.\n\n" + _doc_table() + "\n"
)


def _indexed(device: torch.device) -> torch.device:
    """`cuda` as `cuda:<current>`: tensors always carry their index, so a bare `cuda` never equals their device."""
    if device.type == "cuda" and device.index is None:
        return torch.device("cuda", torch.cuda.current_device())
    return device


@dataclass
class Draws:
    """The random parameters of one batch: one row per sample (the unit that tests check for rates/ranges)."""

    flip: torch.Tensor  # (B,) bool
    angle: torch.Tensor  # (B,) radians, 0 where not rotated
    zoom: torch.Tensor  # (B,) factor, 1 where not scaled
    elastic: torch.Tensor | None  # (B, 2, gh, gw) control-point displacements in px, or None
    bias: torch.Tensor  # (B, n_coeff) Legendre coefficients, 0 where no bias field
    scale: torch.Tensor  # (B,) f of x(1+f), 0 where not scaled
    shift: torch.Tensor  # (B,) f of +f*std, 0 where not shifted
    noise_sd: torch.Tensor  # (B,) noise sd, 0 where no noise


def _bias_terms(degree: int) -> list[tuple[int, int]]:
    """Legendre index pairs (i, j), j <= i <= degree, of the bias polynomial (MONAI's RandBiasField layout)."""
    return [(i, j) for i in range(degree + 1) for j in range(i + 1)]


def _legendre(n: int, t: torch.Tensor) -> torch.Tensor:
    """Legendre polynomial P_n at ``t`` (Bonnet's recursion)."""
    prev, cur = torch.ones_like(t), t
    if n == 0:
        return prev
    for k in range(1, n):
        prev, cur = cur, ((2 * k + 1) * t * cur - k * prev) / (k + 1)
    return cur


class BatchAugment:
    """The scaled chain as a callable on (B, C, H, W) float batches, seeded by its own generator."""

    def __init__(
        self,
        aug_strength: float,
        elastic: bool = False,
        seed: int | None = None,
        lr_axis: int | None = 0,
        device: torch.device | str = "cpu",
    ) -> None:
        self.aug_strength = float(aug_strength)
        self.elastic = elastic
        self.lr_axis = lr_axis
        self.device = _indexed(torch.device(device))
        if seed is None:  # follow torch's seed so seeded trials repeat
            seed = int(torch.randint(0, 2**31 - 1, (1,)).item())
        self.seed = seed
        self.generator = torch.Generator(device=self.device).manual_seed(seed)
        self._basis: dict[tuple[int, int], torch.Tensor] = {}

    @property
    def active(self) -> bool:
        """False at strength 0 (the identity)."""
        return self.aug_strength > 0.0

    def _uniform(self, n: int, low: float, high: float) -> torch.Tensor:
        u = torch.rand(n, generator=self.generator, device=self.device)
        return low + (high - low) * u

    def _gate(self, n: int, key: str) -> torch.Tensor:
        return torch.rand(n, generator=self.generator, device=self.device) < PROB[key] * self.aug_strength

    def draw(self, n: int, size: tuple[int, int]) -> Draws:
        """Per-sample random parameters for a batch of ``n`` images of ``size`` (H, W)."""
        s = self.aug_strength
        flip = self._gate(n, "flip") if self.lr_axis is not None else torch.zeros(n, dtype=torch.bool)
        flip = flip.to(self.device)
        max_angle = math.radians(MAX_ROTATION_DEG * s)
        angle = torch.where(self._gate(n, "rotate"), self._uniform(n, -max_angle, max_angle), 0.0)
        zoom = torch.where(self._gate(n, "zoom"), self._uniform(n, 1 - MAX_ZOOM * s, 1 + MAX_ZOOM * s), 1.0)
        elastic = None
        if self.elastic:
            gh, gw = (max(2, math.ceil(d / ELASTIC_SPACING_PX) + 1) for d in size)
            magnitude = torch.where(self._gate(n, "elastic"), self._uniform(n, 0.0, MAX_ELASTIC_PX * s), 0.0)
            shape = (n, 2, gh, gw)
            elastic = torch.randn(shape, generator=self.generator, device=self.device)
            elastic = elastic * magnitude.view(n, 1, 1, 1)
        n_coeff = len(_bias_terms(BIAS_DEGREE))
        coeff = torch.rand((n, n_coeff), generator=self.generator, device=self.device)
        coeff = (2 * coeff - 1) * (MAX_BIAS_COEFF * s)
        bias = torch.where(self._gate(n, "bias").view(n, 1), coeff, 0.0)
        scale = torch.where(self._gate(n, "scale"), self._uniform(n, -1, 1) * MAX_SCALE_INTENSITY * s, 0.0)
        shift = torch.where(self._gate(n, "shift"), self._uniform(n, -1, 1) * MAX_SHIFT_INTENSITY * s, 0.0)
        noise_sd = torch.where(self._gate(n, "noise"), self._uniform(n, 0.0, MAX_NOISE_SD * s), 0.0)
        return Draws(flip, angle, zoom, elastic, bias, scale, shift, noise_sd)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Augment a (B, C, H, W) float batch on its device; returns a new tensor of the same shape."""
        if not isinstance(x, torch.Tensor) or x.ndim != 4:
            raise ValueError(
                f"expected a (B, C, H, W) torch tensor, got {type(x).__name__} "
                f"of shape {tuple(getattr(x, 'shape', ()))}"
            )
        if not self.active or len(x) == 0:
            return x
        if _indexed(x.device) != self.device:
            raise ValueError(f"batch is on {x.device} but the augmentation draws on {self.device}")
        d = self.draw(len(x), (x.shape[-2], x.shape[-1]))
        return self.apply(x, d)

    def apply(self, x: torch.Tensor, d: Draws) -> torch.Tensor:
        """Apply given draws: one fused spatial resampling, then bias field, scale, shift and noise."""
        out = self._spatial(x.float(), d)
        out = out * torch.exp(self._bias_field(d.bias, out.shape[-2:], out.dtype))
        out = out * (1.0 + d.scale).view(-1, 1, 1, 1)
        std = out.flatten(1).std(dim=1)
        out = out + (d.shift * std).view(-1, 1, 1, 1)
        noise = torch.randn(out.shape, generator=self.generator, device=self.device, dtype=out.dtype)
        return out + noise * d.noise_sd.view(-1, 1, 1, 1)

    def _spatial(self, x: torch.Tensor, d: Draws) -> torch.Tensor:
        n, _, h, w = x.shape
        # Affine from output to input positions in pixel units about the centre, then to grid units.
        cos, sin = torch.cos(d.angle) / d.zoom, torch.sin(d.angle) / d.zoom
        mirror = torch.where(d.flip, -1.0, 1.0)
        theta = torch.zeros(n, 2, 3, device=x.device, dtype=x.dtype)
        theta[:, 0, 0] = cos
        theta[:, 0, 1] = -sin * (h / w)
        theta[:, 1, 0] = sin * (w / h)
        theta[:, 1, 1] = cos
        # the flip acts first on the image, so last on the sampling position (grid x = column, y = row)
        theta[:, 1 if self.lr_axis == 0 else 0] *= mirror.view(n, 1)
        identity = (~d.flip) & (d.angle == 0) & (d.zoom == 1)
        if d.elastic is None and bool(identity.all()):
            return x
        grid = F.affine_grid(theta, [n, 1, h, w], align_corners=False)
        if d.elastic is not None:
            disp = F.interpolate(d.elastic, size=(h, w), mode="bicubic", align_corners=True)
            scale = torch.tensor([2.0 / w, 2.0 / h], device=x.device, dtype=x.dtype)
            grid = grid + disp.permute(0, 2, 3, 1) * scale
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)

    def _bias_field(self, coeff: torch.Tensor, size: torch.Size, dtype: torch.dtype) -> torch.Tensor:
        key = (int(size[0]), int(size[1]))
        if key not in self._basis:
            rows = torch.linspace(-1.0, 1.0, key[0], device=self.device, dtype=dtype)
            cols = torch.linspace(-1.0, 1.0, key[1], device=self.device, dtype=dtype)
            terms = _bias_terms(BIAS_DEGREE)
            self._basis[key] = torch.stack(
                [_legendre(i, rows)[:, None] * _legendre(j, cols)[None, :] for i, j in terms]
            )
        field = torch.einsum("bk,khw->bhw", coeff.to(dtype), self._basis[key])
        return field.unsqueeze(1)


def build_augment(
    aug_strength: float,
    elastic: bool = False,
    seed: int | None = None,
    lr_axis: int | None = 0,
    device: torch.device | str = "cpu",
) -> BatchAugment:
    """Build the batched augmentation for one strength (see AUG_DOC) drawing on ``device``."""
    strength = float(aug_strength)
    if not 0.0 <= strength <= 1.0 or math.isnan(strength):
        raise ValueError(f"aug_strength must be in [0, 1], got {aug_strength}")
    if lr_axis not in (None, 0, 1):
        raise ValueError(f"lr_axis must be 0 (rows), 1 (columns) or None, got {lr_axis}")
    return BatchAugment(strength, elastic=elastic, seed=seed, lr_axis=lr_axis, device=device)
