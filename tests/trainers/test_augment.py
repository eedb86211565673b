"""Tests for the batched augmentation chain: the distribution of its random draws, and its geometry."""

from __future__ import annotations

import math

import pytest
import torch

from trainers.augment import (
    AUG_DOC,
    BIAS_SPAN,
    MAX_BIAS_COEFF,
    MAX_NOISE_SD,
    MAX_ROTATION_DEG,
    MAX_SCALE_INTENSITY,
    MAX_SHIFT_INTENSITY,
    MAX_ZOOM,
    PROB,
    Draws,
    build_augment,
)

N_DRAWS = 40_000  # rate tolerance below is about 5 standard errors at this count


def _square(batch: int, channels: int, size: int = 48) -> torch.Tensor:
    """Bright off-centre rectangle on a dark background, identical in every channel (sharp, asymmetric)."""
    image = torch.zeros(batch, channels, size, size)
    image[:, :, 8:24, 10:30] = 10.0
    return image


def _only(n: int, **kw: torch.Tensor) -> Draws:
    """Draws that do nothing except what is given (to test one transform's geometry)."""
    base = dict(
        flip=torch.zeros(n, dtype=torch.bool),
        angle=torch.zeros(n),
        zoom=torch.ones(n),
        elastic=None,
        bias=torch.zeros(n, 10),
        scale=torch.zeros(n),
        shift=torch.zeros(n),
        noise_sd=torch.zeros(n),
    )
    base.update(kw)
    return Draws(**base)


def test_zero_strength_is_identity() -> None:
    """Strength 0 draws nothing and returns the input object untouched."""
    augment = build_augment(0.0, elastic=True, seed=1)
    assert not augment.active
    x = torch.randn(4, 3, 32, 32)
    before = x.clone()
    assert augment(x) is x
    assert torch.equal(x, before)


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("elastic", [False, True])
def test_shape_and_dtype_kept(channels: int, elastic: bool) -> None:
    """Output is a float32 batch with the input's shape, for 2D and 2.5D samples and non-square images."""
    augment = build_augment(1.0, elastic=elastic, seed=0)
    out = augment(torch.randn(6, channels, 40, 36))
    assert out.dtype == torch.float32
    assert out.shape == (6, channels, 40, 36)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("strength", [0.5, 1.0])
def test_draw_rates_and_ranges_follow_the_strength_table(strength: float) -> None:
    """Every transform fires at PROB * s and draws within its documented range, roughly uniformly."""
    d = build_augment(strength, elastic=True, seed=2).draw(N_DRAWS, (64, 64))
    s = strength

    def rate(fired: torch.Tensor) -> float:
        return fired.float().mean().item()

    tol = 0.015
    assert abs(rate(d.flip) - PROB["flip"] * s) < tol
    assert abs(rate(d.angle != 0) - PROB["rotate"] * s) < tol
    assert abs(rate(d.zoom != 1) - PROB["zoom"] * s) < tol
    assert abs(rate(d.elastic.flatten(1).abs().sum(1) > 0) - PROB["elastic"] * s) < tol
    assert abs(rate(d.bias.abs().sum(1) > 0) - PROB["bias"] * s) < tol
    assert abs(rate(d.scale != 0) - PROB["scale"] * s) < tol
    assert abs(rate(d.shift != 0) - PROB["shift"] * s) < tol
    assert abs(rate(d.noise_sd != 0) - PROB["noise"] * s) < tol

    def check_uniform(values: torch.Tensor, low: float, high: float) -> None:
        assert values.min() >= low - 1e-6 and values.max() <= high + 1e-6
        assert values.min() < low + 0.02 * (high - low) and values.max() > high - 0.02 * (high - low)
        assert abs(values.mean().item() - (low + high) / 2) < 0.02 * (high - low)

    max_angle = math.radians(MAX_ROTATION_DEG * s)
    check_uniform(d.angle[d.angle != 0], -max_angle, max_angle)
    check_uniform(d.zoom[d.zoom != 1], 1 - MAX_ZOOM * s, 1 + MAX_ZOOM * s)
    fired = d.bias.abs().sum(1) > 0
    check_uniform(d.bias[fired].flatten(), -MAX_BIAS_COEFF * s, MAX_BIAS_COEFF * s)
    check_uniform(d.scale[d.scale != 0], -MAX_SCALE_INTENSITY * s, MAX_SCALE_INTENSITY * s)
    check_uniform(d.shift[d.shift != 0], -MAX_SHIFT_INTENSITY * s, MAX_SHIFT_INTENSITY * s)
    check_uniform(d.noise_sd[d.noise_sd != 0], 0.0, MAX_NOISE_SD * s)


@pytest.mark.parametrize("strength", [0.5, 1.0])
def test_bias_field_span_matches_the_documented_percentiles(strength: float) -> None:
    """The multiplicative field's min/max (5th/95th percentile over draws) is what AUG_DOC states."""
    augment = build_augment(strength, seed=3)
    d = augment.draw(4000, (64, 64))
    fired = d.bias.abs().sum(1) > 0
    field = torch.exp(augment._bias_field(d.bias[fired], torch.Size((64, 64)), torch.float32))
    low = torch.quantile(field.flatten(1).min(1).values, 0.05).item()
    high = torch.quantile(field.flatten(1).max(1).values, 0.95).item()
    want_low, want_high = BIAS_SPAN[strength]
    assert abs(low - want_low) < 0.03 and abs(high - want_high) < 0.04


def test_per_sample_draws_differ_within_a_batch() -> None:
    """Each sample of one batch gets its own parameters (not one draw for the whole batch)."""
    out = build_augment(1.0, seed=4)(_square(16, 1))
    distinct = {tuple(o.flatten()[::97].round(decimals=3).tolist()) for o in out}
    assert len(distinct) >= 12


@pytest.mark.parametrize(("lr_axis", "dim"), [(0, -2), (1, -1)])
def test_flip_mirrors_only_the_left_right_axis(lr_axis: int, dim: int) -> None:
    """A flip reverses the chosen axis exactly, and never the other one."""
    augment = build_augment(1.0, seed=0, lr_axis=lr_axis)
    x = torch.randn(3, 2, 20, 24)
    out = augment.apply(x, _only(3, flip=torch.tensor([True, False, True])))
    assert torch.allclose(out[0], torch.flip(x[0], dims=[dim]), atol=1e-5)
    assert torch.allclose(out[1], x[1], atol=1e-5)
    assert not torch.allclose(out[0], torch.flip(x[0], dims=[-1 if dim == -2 else -2]), atol=1e-2)
    assert not build_augment(1.0, seed=0, lr_axis=None).draw(1000, (8, 8)).flip.any()


def test_rotation_by_a_right_angle_is_rot90() -> None:
    """The fused resampling rotates about the image centre (checked against torch.rot90 away from borders)."""
    x = torch.randn(1, 1, 32, 32)
    out = build_augment(1.0, seed=0).apply(x, _only(1, angle=torch.tensor([math.pi / 2])))
    rotated = [torch.rot90(x, k, dims=(-2, -1)) for k in (1, 3)]
    assert min((out - r)[..., 2:-2, 2:-2].abs().max().item() for r in rotated) < 1e-4


def test_zoom_above_one_magnifies() -> None:
    """Scaling by z multiplies the bright area by about z squared (z > 1 enlarges, z < 1 shrinks)."""
    x = _square(2, 1, 64)
    x[:, :, 24:40, 24:40] = 10.0  # a centred square, so nothing leaves the image
    x[:, :, 8:24, 10:30] = 0.0
    out = build_augment(1.0, seed=0).apply(x, _only(2, zoom=torch.tensor([1.15, 0.85])))
    area = (x[0] > 5).sum().item()
    assert (out[0] > 5).sum().item() == pytest.approx(area * 1.15**2, rel=0.1)
    assert (out[1] > 5).sum().item() == pytest.approx(area * 0.85**2, rel=0.1)


def test_channels_share_the_spatial_transform_and_edges_stay_aligned() -> None:
    """Identical channels stay identical through the spatial part and differ only by noise after the chain."""
    augment = build_augment(1.0, elastic=True, seed=3)
    x = _square(20, 3)
    d = augment.draw(20, (48, 48))
    spatial = augment._spatial(x, d)
    assert torch.equal(spatial[:, 0], spatial[:, 1]) and torch.equal(spatial[:, 0], spatial[:, 2])
    out = augment.apply(x, d)
    assert (out[:, 0] - out[:, 1]).abs().max() < 1.0  # a misaligned 10-unit edge would differ by several
    moved = sum(not torch.equal(o[0] > 5.0, i[0] > 5.0) for o, i in zip(out, x, strict=True))
    assert moved >= 10


def test_same_seed_same_output_and_different_seed_differs() -> None:
    """A seed fixes the whole draw sequence, so augmented epochs are reproducible."""
    x = torch.randn(8, 3, 32, 32)
    first, second, other = (build_augment(0.8, elastic=True, seed=s) for s in (7, 7, 8))
    outs_a = [first(x) for _ in range(3)]
    outs_b = [second(x) for _ in range(3)]
    outs_c = [other(x) for _ in range(3)]
    assert all(torch.equal(a, b) for a, b in zip(outs_a, outs_b, strict=True))
    assert not torch.equal(outs_a[0], outs_c[0])
    assert not torch.equal(outs_a[0], outs_a[1])  # successive batches draw anew


def test_unseeded_follows_torch_seed() -> None:
    """Without a seed the chain is seeded from torch's RNG, so torch.manual_seed makes trials repeat."""
    x = torch.randn(4, 1, 32, 32)
    torch.manual_seed(123)
    a = build_augment(1.0)(x)
    torch.manual_seed(123)
    b = build_augment(1.0)(x)
    assert torch.equal(a, b)


@pytest.mark.parametrize("bad", [1.5, -0.1, float("nan")])
def test_invalid_strength_rejected(bad: float) -> None:
    """Strengths outside [0, 1] are a configuration error."""
    with pytest.raises(ValueError, match="aug_strength"):
        build_augment(bad)


def test_rejects_non_batch_input_and_wrong_device() -> None:
    """Single images are refused instead of being silently mis-augmented; so is a batch on another device."""
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        build_augment(0.5, seed=0)(torch.zeros(1, 16, 16))
    with pytest.raises(ValueError, match="meta"):
        build_augment(0.5, seed=0)(torch.zeros(2, 1, 16, 16, device="meta"))


def test_change_grows_with_strength() -> None:
    """Mean absolute change, averaged over many draws, increases monotonically with strength."""
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 32), torch.linspace(-1, 1, 32), indexing="ij")
    image = torch.stack([torch.sin(3 * xx + 2 * yy) + xx, torch.cos(2 * xx - yy), yy]).float()
    batch = image.expand(256, -1, -1, -1).contiguous()
    changes = []
    for strength in (0.0, 0.25, 0.5, 1.0):
        changes.append((build_augment(strength, seed=11)(batch) - batch).abs().mean().item())
    assert changes[0] == 0.0
    assert changes[0] < changes[1] < changes[2] < changes[3]


def test_doc_states_the_settings() -> None:
    """AUG_DOC spells out the numbers at 0.5 and 1.0 (kept in sync by being generated)."""
    for needle in ("±15°", "±7.5°", "×0.85 to ×1.15", "p=0.80", "p=0.40", "U(0, 0.1)", "`aug_strength=0.5`"):
        assert needle in AUG_DOC


def test_bare_cuda_names_the_current_device(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tensors on a GPU report `cuda:0`; a trial configured with `cuda` must not refuse its own batches."""
    from trainers.augment import _indexed

    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    assert _indexed(torch.device("cuda")) == torch.device("cuda:0")
    assert _indexed(torch.device("cuda:1")) == torch.device("cuda:1")
    assert _indexed(torch.device("cpu")) == torch.device("cpu")
