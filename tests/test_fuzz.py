"""restore() fuzzed over shapes, dtypes and settings: a correct result or DIPError, nothing else.

``FUZZ_EXAMPLES=2000 pytest tests/test_fuzz.py`` for a longer hunt.

Tiny networks and a handful of iterations, so each example takes a fraction of
a second.  Properties (issue 9): the result has the input's shape and dtype;
from finite, non-constant input it is finite and not constant; the input array
is never modified; any refusal is a DIPError.
"""

import os
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from src_core import DIPError, restore

DTYPES = [np.uint8, np.uint16, np.int16, np.int32, np.int64, np.float32, np.float64]
ODD_NUMBERS = [0.0, -1.0, 1e-9, 0.01, 0.5, 3.0, 1e308, float("inf"), float("nan"), "0.1", None, True]


@st.composite
def problems(draw):
    h = draw(st.one_of(st.integers(8, 40), st.integers(1, 8)))
    w = draw(st.one_of(st.integers(8, 40), st.integers(1, 8)))
    shape = [h, w]
    layout = draw(st.sampled_from(["2d", "channels", "stack"]))
    if layout == "channels":
        shape.append(draw(st.integers(1, 4)))
    elif layout == "stack":
        shape.insert(0, draw(st.integers(1, 3)))
    dtype = draw(st.sampled_from(DTYPES))
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 32 - 1)))
    if np.dtype(dtype).kind == "f":
        low, span = draw(st.sampled_from([(0.0, 1.0), (-5.0, 10.0), (0.0, 1e6), (100.0, 1e-3)]))
        image = (low + span * rng.random(shape)).astype(dtype)
    else:
        info = np.iinfo(dtype)
        top = draw(st.sampled_from([255, 4095, int(info.max)]))
        top = min(top, int(info.max))
        image = rng.integers(max(int(info.min), 0), top, size=shape, endpoint=True, dtype=dtype)
    task = draw(st.sampled_from(["random", "denoise", "inpaint"]))
    kwargs = dict(task=task, preset="cpu", device="cpu", scales=draw(st.integers(1, 3)),
                  down_channels=4, up_channels=4, skip_channels=draw(st.sampled_from([0, 2])),
                  iterations=draw(st.integers(1, 4)), report_every=2,
                  classical=draw(st.sampled_from([None, "auto"])))
    if task == "inpaint":
        mask_shape = (h, w) if layout != "stack" else tuple(shape)
        kwargs["mask"] = rng.random(mask_shape) < draw(st.sampled_from([0.0, 0.5, 1.0]))
    # at most one odd setting per example, so a refusal can be traced to it
    odd = draw(st.sampled_from(["none"] * 8 + ["lr", "sigma_p", "ema", "seed", "iterations", "validate",
                                "keep_observed", "missing_fraction", "input_scale"]))
    if odd == "seed":
        kwargs["seed"] = draw(st.sampled_from([-1, 0, 2 ** 64, 1.5, "1"]))
    elif odd == "iterations":
        kwargs["iterations"] = draw(st.sampled_from([0, -3, 2.0, 10 ** 12, None]))
    elif odd == "validate":
        kwargs["validate"] = draw(st.sampled_from([-0.1, 0.0, 0.05, 0.6, "x", True]))
    elif odd == "keep_observed":
        kwargs["keep_observed"] = draw(st.sampled_from([True, False, None]))
    elif odd == "missing_fraction":
        kwargs["missing_fraction"] = draw(st.sampled_from([0.0, 0.9, 1.0, -0.5, "half"]))
    elif odd != "none":
        kwargs[odd] = draw(st.sampled_from(ODD_NUMBERS))
    if kwargs.get("task") != "random":
        kwargs.pop("missing_fraction", None)
    return image, kwargs


@pytest.mark.filterwarnings("ignore")
@settings(max_examples=int(os.environ.get("FUZZ_EXAMPLES", 60)), deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(problems())
def test_restore_gives_a_correct_result_or_a_dip_error(problem):
    image, kwargs = problem
    mask = kwargs.pop("mask", None)
    before = image.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            result = restore(image, mask, **kwargs)
        except DIPError as exc:
            assert str(exc) and "\n" not in str(exc).strip()  # one clear line
            assert np.array_equal(image, before)
            return
    assert np.array_equal(image, before)  # the input is never modified
    out = result.image
    assert out.shape == image.shape and out.dtype == image.dtype
    values = out.astype(np.float64)
    assert np.isfinite(values).all()
    if np.unique(image).size > 1 and out.size > 1:
        assert np.unique(out).size > 1, "a constant answer from a non-constant input"
