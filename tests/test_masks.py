import numpy as np
import pytest

from src_core import DIPError, bernoulli_mask, mask_from_labels, text_mask
from src_core.masks import load_mask
from src_core.io import data_path


def test_bernoulli_fraction_and_seed():
    a = bernoulli_mask((200, 200), 0.5, seed=3)
    assert a.dtype == bool and abs((~a).mean() - 0.5) < 0.02
    assert np.array_equal(a, bernoulli_mask((200, 200), 0.5, seed=3))
    assert not np.array_equal(a, bernoulli_mask((200, 200), 0.5, seed=4))
    assert abs((~bernoulli_mask((200, 200), 0.8, 0)).mean() - 0.8) < 0.02
    with pytest.raises(DIPError):
        bernoulli_mask((4, 4), 1.0)


def test_text_mask_draws_missing_text_where_asked():
    m = text_mask((64, 160), [("Deep Prior", (10, 20), 24)])
    assert m.shape == (64, 160) and m.dtype == bool
    missing = np.argwhere(~m)
    assert len(missing) > 50
    assert missing[:, 0].min() >= 15 and missing[:, 1].min() >= 8  # near the requested position
    bigger = text_mask((64, 160), [("Deep Prior", (10, 20), 30)])
    assert (~bigger).sum() > (~m).sum()


def test_labels_mark_pixels_to_fill():
    labels = np.zeros((5, 5), np.uint8)
    labels[1, 1] = 1
    labels[2, 2] = 2
    m = mask_from_labels(labels)
    assert not m[1, 1] and not m[2, 2] and m[0, 0]
    only2 = mask_from_labels(labels, label=2)
    assert only2[1, 1] and not only2[2, 2]
    with pytest.raises(DIPError):
        mask_from_labels(labels.astype(float))


def test_shipped_mask_file_uses_white_for_observed():
    m = load_mask(data_path("dip/kate_mask.png"))
    assert m.shape == (512, 512) and 0.95 < m.mean() < 0.96  # 95.68% known (PROVENANCE.md)


# ----------------------------------------------------------------------------- damaged_box

def test_damaged_box_pools_slices_and_keeps_the_margin():
    from src_core.masks import damaged_box

    observed = np.ones((3, 100, 120), bool)
    observed[0, 40:45, 50:52] = False
    observed[2, 60:62, 80:90] = False        # another slice: the box covers both holes
    rows, cols = damaged_box(observed, margin=5)
    assert (rows.start, rows.stop) == (35, 67) and (cols.start, cols.stop) == (45, 95)


def test_damaged_box_grows_to_the_network_size_and_stays_inside():
    from src_core.masks import damaged_box

    observed = np.ones((100, 200), bool)
    observed[1, 198] = False                 # a corner pixel: the box is pushed off the edges
    rows, cols = damaged_box(observed, margin=2, min_side=32)
    assert (rows.start, rows.stop) == (0, 32) and (cols.start, cols.stop) == (168, 200)


def test_damaged_box_is_none_when_nothing_is_gained():
    from src_core.masks import damaged_box

    assert damaged_box(np.ones((50, 50), bool), margin=4) is None          # nothing missing
    spread = np.ones((50, 50), bool)
    spread[0, 0] = spread[-1, -1] = False
    assert damaged_box(spread, margin=0) is None                            # the whole image
    with pytest.raises(DIPError, match="at least two axes"):
        damaged_box(np.ones(5, bool), margin=1)
