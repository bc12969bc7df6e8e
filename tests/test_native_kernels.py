"""The native transforms against plain numpy: OIHW -> HWIO transpose (with fused scale) and BN folding."""

import numpy as np
import pytest

from pyloader import FormatError, _core


@pytest.mark.parametrize(
    "shape",
    [
        (32, 16, 3, 3),  # a full 16-channel block
        (255, 128, 1, 1),  # 1x1 head conv, O not a multiple of 16
        (64, 1, 3, 3),  # depthwise (channels per group = 1)
        (128, 4, 3, 3),  # grouped (32 groups of 4 input channels)
        (7, 3, 5, 2),  # non-square kernel, tiny O
        (1, 1, 1, 1),
        (300, 1024, 1, 1),  # several ~1 MiB work items over two threads, O % 16 != 0
        (48, 7, 1, 3),  # input positions not a multiple of 4 (the 4x4 blocks' scalar edge)
        (16, 2, 0, 3),  # empty
    ],
)
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@pytest.mark.parametrize("with_scale", [False, True])
def test_oihw_to_hwio_matches_numpy(shape, dtype, with_scale):
    rng = np.random.default_rng(0)
    k = rng.normal(size=shape).astype(dtype)
    scale = rng.uniform(0.5, 1.5, shape[0]).astype(np.float32) if with_scale else None
    got = _core.oihw_to_hwio(k, scale, threads=2)
    want = k.astype(np.float32).transpose(2, 3, 1, 0)
    if with_scale:
        want = want * scale
    assert got.shape == want.shape and got.dtype == np.float32
    np.testing.assert_array_equal(got, want)


def test_oihw_to_hwio_non_contiguous_input():
    k = np.random.default_rng(1).normal(size=(8, 6, 3, 3)).astype(np.float32)[:, ::2]
    np.testing.assert_array_equal(_core.oihw_to_hwio(k), k.transpose(2, 3, 1, 0))


def test_oihw_to_hwio_widens_every_half_exactly():
    """Every float16 bit pattern (zeros, subnormals, infinities, NaN payloads) widens as numpy widens it, through
    the 4x4 blocks and the scalar edge alike."""
    h = np.arange(65536, dtype=np.uint16).view(np.float16)
    k = np.stack([np.roll(h, s) for s in range(5)]).reshape(5, 1, 1, 65536)
    got = _core.oihw_to_hwio(k)
    assert np.array_equal(got.view(np.uint32), k.astype(np.float32).transpose(2, 3, 1, 0).view(np.uint32))


def test_oihw_to_hwio_outputs_stay_independent():
    """Outputs come from the arena pool (freed ones are reused): an array still alive is never handed out
    again, and one written into reused memory holds only its own values."""
    rng = np.random.default_rng(3)
    a, b = (rng.normal(size=(64, 32, 3, 3)).astype(np.float32) for _ in range(2))
    first = _core.oihw_to_hwio(a)
    second = _core.oihw_to_hwio(b)
    assert not np.shares_memory(first, second)
    np.testing.assert_array_equal(first, a.transpose(2, 3, 1, 0))
    del second
    third = _core.oihw_to_hwio(a)
    third[...] = 0  # writable, and its own
    np.testing.assert_array_equal(first, a.transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(_core.oihw_to_hwio(b), b.transpose(2, 3, 1, 0))


def test_fold_batchnorm_matches_numpy():
    rng = np.random.default_rng(2)
    n = 37
    gamma, beta, mean = rng.uniform(0.5, 1.5, n), rng.normal(size=n), rng.normal(size=n)
    var = rng.uniform(0.5, 1.5, n)
    conv_bias = rng.normal(size=n)
    args = [a.astype(np.float32) for a in (gamma, beta, mean, var)]
    scale, bias = _core.fold_batchnorm(*args, 1e-5, conv_bias.astype(np.float32))
    g, b, m, v, cb = (a.astype(np.float32).astype(np.float64) for a in (gamma, beta, mean, var, conv_bias))
    want_scale = g / np.sqrt(v + 1e-5)
    np.testing.assert_allclose(scale, want_scale, rtol=1e-6)
    np.testing.assert_allclose(bias, b + (cb - m) * want_scale, rtol=1e-5, atol=1e-6)


def test_fold_batchnorm_fp16():
    rng = np.random.default_rng(3)
    a = [rng.uniform(0.5, 1.5, 9).astype(np.float16) for _ in range(4)]
    scale, bias = _core.fold_batchnorm(*a, 1e-3)
    g, b, m, v = (x.astype(np.float64) for x in a)
    np.testing.assert_allclose(scale, g / np.sqrt(v + 1e-3), rtol=1e-6)
    np.testing.assert_allclose(bias, b - m * g / np.sqrt(v + 1e-3), rtol=1e-5, atol=1e-6)


def test_kernel_rejects_wrong_dtype():
    with pytest.raises(FormatError, match="float32 or float16"):
        _core.oihw_to_hwio(np.zeros((2, 2, 1, 1), np.int32))
