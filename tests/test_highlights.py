"""Highlight recovery (nnraw.highlights): the reference rule in white-balanced space."""

from __future__ import annotations

import pytest
import torch

from nnraw.highlights import recover_highlights

WB = (2.0, 1.0, 1.5)


def _pixels(*rgb_triples):
    """Tensor[1, 3, 1, K] from K (R, G, B) camera-space triples."""
    return torch.tensor(rgb_triples, dtype=torch.float32).T.reshape(1, 3, 1, -1)


def test_unclipped_pixels_unchanged():
    x = torch.rand(2, 3, 16, 16) * 0.9
    assert torch.equal(recover_highlights(x, WB), x)


def test_clipped_green_rebuilt_in_wb_space():
    # Green clipped (1.0), red clipped (1.0 -> r = 2.0 in WB space), blue 0.8 -> b = 1.2.
    out = recover_highlights(_pixels((1.0, 1.0, 0.8)), WB)
    assert out[0, 0, 0, 0].item() == 1.0 and out[0, 2, 0, 0].item() == pytest.approx(0.8)
    assert out[0, 1, 0, 0].item() == pytest.approx((2.0 + 1.2) / 2)  # 1.6: above the clip level


def test_green_never_lowered_below_its_clip_level():
    # r = 1.1 > 1 triggers the rule, but b = 0.3 makes (r + b)/2 = 0.7 < 1: keep the clipped green.
    out = recover_highlights(_pixels((0.55, 1.0, 0.2)), WB)
    assert out[0, 1, 0, 0].item() == 1.0


def test_needs_green_clipped_and_red_or_blue_above_green_clip():
    x = _pixels((0.6, 0.998, 0.9),   # green not clipped
                (0.45, 1.0, 0.6),    # green clipped but r = 0.9, b = 0.9: nothing to take from
                (0.45, 1.0, 0.7))    # b = 1.05 > 1
    out = recover_highlights(x, WB)
    assert out[0, 1, 0, 0].item() == pytest.approx(0.998)
    assert out[0, 1, 0, 1].item() == 1.0
    assert out[0, 1, 0, 2].item() == pytest.approx(max(1.0, (0.9 + 1.05) / 2))


def test_gain_scale_does_not_matter_and_per_image_gains():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 8, 8, generator=g) * 0.5 + 0.5      # values in [0.5, 1.0]
    x[:, 1, ::2] = 1.0                                      # half the rows: green clipped
    a = recover_highlights(x, WB)
    assert (a[:, 1] > 1).any()                              # something was recovered
    b = recover_highlights(x, torch.tensor(WB) * 1024)
    assert torch.allclose(a, b)
    per_image = recover_highlights(x, torch.tensor([WB, (1.0, 1.0, 1.0)]))
    assert torch.allclose(per_image[0], a[0])
    assert torch.equal(per_image[1], x[1])                  # unit gains: r, b never exceed 1 here


def test_errors():
    with pytest.raises(ValueError, match=r"nnraw.recover_highlights: rgb must be a Tensor of shape \[N, 3, H, W\], got \[3, 4, 4\]"):
        recover_highlights(torch.rand(3, 4, 4), WB)
    with pytest.raises(ValueError, match=r"wb must have shape \[3\] or \[N, 3\] = \[1, 3\], got \[4\]"):
        recover_highlights(torch.rand(1, 3, 4, 4), (2.0, 1.0, 1.0, 1.5))
    with pytest.raises(ValueError, match="wb gains must be finite and > 0"):
        recover_highlights(torch.rand(1, 3, 4, 4), (2.0, 0.0, 1.5))


def test_chunks_and_inplace_give_the_same_result():
    g = torch.Generator().manual_seed(1)
    x = torch.rand(1, 3, 37, 20, generator=g) * 0.6 + 0.45
    x[:, 1, 5:30] = 1.0
    whole = recover_highlights(x, WB, rows_per_chunk=1000)
    assert torch.equal(recover_highlights(x, WB, rows_per_chunk=3), whole)
    y = x.clone()
    assert recover_highlights(y, WB, inplace=True) is y and torch.equal(y, whole)
    assert not torch.equal(x, whole)  # the default leaves the input alone
