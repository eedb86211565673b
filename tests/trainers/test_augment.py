"""Tests for the augmentation-strength chain."""

from __future__ import annotations

import pytest
import torch

from trainers.augment import AUG_DOC, build_augment


def _square(channels: int, size: int = 48) -> torch.Tensor:
    """Bright off-centre square on a dark background, identical in every channel (sharp, asymmetric edges)."""
    image = torch.zeros(channels, size, size)
    image[:, 8:24, 10:30] = 10.0
    return image


def test_zero_strength_is_identity() -> None:
    """Strength 0 builds no transforms and returns the input object untouched."""
    augment = build_augment(0.0, elastic=True, seed=1)
    assert augment.transform is None
    image = torch.randn(3, 32, 32)
    before = image.clone()
    assert augment(image) is image
    assert torch.equal(image, before)


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("elastic", [False, True])
def test_shape_and_dtype_kept(channels: int, elastic: bool) -> None:
    """Output is a plain float32 tensor with the input's shape, for 2D and 2.5D samples."""
    augment = build_augment(1.0, elastic=elastic, seed=0)
    for _ in range(5):
        out = augment(torch.randn(channels, 40, 36))
        assert type(out) is torch.Tensor
        assert out.dtype == torch.float32
        assert out.shape == (channels, 40, 36)
        assert torch.isfinite(out).all()


def test_full_strength_changes_the_image() -> None:
    """Strength 1 really augments (at least most draws differ from the input)."""
    augment = build_augment(1.0, seed=0)
    image = _square(1)
    changed = sum(not torch.allclose(augment(image), image) for _ in range(20))
    assert changed >= 15


def test_channels_share_the_spatial_transform() -> None:
    """With identical channels, the spatial part alone leaves them exactly identical."""
    augment = build_augment(1.0, elastic=True, seed=3)
    image = _square(3)
    moved = 0
    for _ in range(20):
        out = augment.spatial(image).as_tensor()
        assert torch.equal(out[0], out[1]) and torch.equal(out[0], out[2])
        moved += not torch.allclose(out, image)
    assert moved >= 10


def test_full_chain_keeps_edges_aligned_across_channels() -> None:
    """After the whole chain, identical channels differ only by per-pixel noise (sd <= 0.1), not at edges."""
    augment = build_augment(1.0, elastic=True, seed=4)
    image = _square(3)
    moved = 0
    for _ in range(20):
        out = augment(image)
        # a misaligned 10-unit edge would differ by several units; noise alone stays far below 1
        assert (out[0] - out[1]).abs().max() < 1.0 and (out[0] - out[2]).abs().max() < 1.0
        moved += not torch.equal(out[0] > 5.0, image[0] > 5.0)
    assert moved >= 10


def test_flip_is_left_right_only() -> None:
    """Flips mirror the W axis (columns) and never the H axis (rows)."""
    augment = build_augment(1.0, seed=0)
    flip = augment.spatial.transforms[0]
    image = _square(1)
    flip.set_random_state(0)
    seen_flip = False
    for _ in range(20):
        out = torch.as_tensor(flip(image))
        assert torch.equal(out, image) or torch.equal(out, torch.flip(image, dims=[2]))
        seen_flip |= not torch.equal(out, image)
    assert seen_flip
    assert all(
        t.__class__.__name__ != "RandFlip" for t in build_augment(1.0, lr_axis=None).spatial.transforms
    )


def test_same_seed_same_output_and_different_seed_differs() -> None:
    """A seed fixes the whole draw sequence, so augmented epochs are reproducible."""
    image = torch.randn(3, 32, 32)
    first = build_augment(0.8, elastic=True, seed=7)
    second = build_augment(0.8, elastic=True, seed=7)
    other = build_augment(0.8, elastic=True, seed=8)
    outs_a = [first(image) for _ in range(5)]
    outs_b = [second(image) for _ in range(5)]
    outs_c = [other(image) for _ in range(5)]
    assert all(torch.equal(a, b) for a, b in zip(outs_a, outs_b, strict=True))
    assert not all(torch.equal(a, c) for a, c in zip(outs_a, outs_c, strict=True))


def test_unseeded_follows_torch_seed() -> None:
    """Without a seed the chain is seeded from torch's RNG, so torch.manual_seed makes trials repeat."""
    image = torch.randn(1, 32, 32)
    torch.manual_seed(123)
    a = build_augment(1.0)(image)
    torch.manual_seed(123)
    b = build_augment(1.0)(image)
    assert torch.equal(a, b)


@pytest.mark.parametrize("bad", [1.5, -0.1, float("nan")])
def test_invalid_strength_rejected(bad: float) -> None:
    """Strengths outside [0, 1] are a configuration error."""
    with pytest.raises(ValueError, match="aug_strength"):
        build_augment(bad)


def test_rejects_non_chw_input() -> None:
    """Batches or bare 2D arrays are refused instead of being silently mis-augmented."""
    with pytest.raises(ValueError, match=r"\(C, H, W\)"):
        build_augment(0.5, seed=0)(torch.zeros(2, 1, 16, 16))


def test_change_grows_with_strength() -> None:
    """Mean absolute change, averaged over many draws, increases monotonically with strength."""
    torch.manual_seed(0)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 32), torch.linspace(-1, 1, 32), indexing="ij")
    image = torch.stack([torch.sin(3 * xx + 2 * yy) + xx, torch.cos(2 * xx - yy), yy]).float()
    changes = []
    for strength in (0.0, 0.25, 0.5, 1.0):
        augment = build_augment(strength, seed=11)
        changes.append(sum((augment(image) - image).abs().mean().item() for _ in range(60)) / 60)
    assert changes[0] == 0.0
    assert changes[0] < changes[1] < changes[2] < changes[3]


def test_doc_states_the_settings() -> None:
    """AUG_DOC spells out the numbers at 0.5 and 1.0 (kept in sync by being generated)."""
    for needle in ("±15°", "±7.5°", "×0.85 to ×1.15", "p=0.80", "p=0.40", "U(0, 0.1)", "`aug_strength=0.5`"):
        assert needle in AUG_DOC


class _Repeated(torch.utils.data.Dataset):
    """The same image ``n`` times, augmented on access (as a training dataset would)."""

    def __init__(self, augment: object, n: int = 4) -> None:
        self.augment, self.n, self.image = augment, n, torch.randn(1, 16, 16)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.augment(self.image)


def test_dataloader_workers_and_epochs_draw_differently_but_reproducibly() -> None:
    """Forked workers must not replay one stream: workers and epochs differ, yet torch.manual_seed repeats."""

    def run() -> list[torch.Tensor]:
        torch.manual_seed(5)
        loader = torch.utils.data.DataLoader(
            _Repeated(build_augment(1.0, seed=3)), batch_size=1, num_workers=2
        )
        return [batch[0] for _ in range(2) for batch in loader]

    first, second = run(), run()
    assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True))
    # items 0 and 1 come from different workers; items 0 and 4 are the same worker in the next epoch
    assert not torch.equal(first[0], first[1])
    assert not torch.equal(first[0], first[4])
