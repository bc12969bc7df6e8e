"""The native transforms against plain numpy: OIHW -> HWIO transpose (with fused scale) and BN folding, one kernel
at a time (oihw_to_hwio) and a checkpoint's convolutions in one call (convs_to_hwio); float16 kernels through both
widenings (F16C + AVX2 where the CPU has them, and the portable one)."""

import platform

import numpy as np
import pytest

from pyloader import FormatError, _core


def _cpu_flags() -> set:
    try:
        with open("/proc/cpuinfo") as f:
            return next((set(line.split(":")[1].split()) for line in f if line.startswith("flags")), set())
    except OSError:
        return set()


FAST = _core.half_widening()


def test_f16c_chosen_where_the_cpu_has_it():
    x86 = platform.machine().lower() in ("x86_64", "amd64")
    assert FAST == ("f16c" if x86 and {"f16c", "avx2"} <= _cpu_flags() else "sse2" if x86 else FAST)


@pytest.fixture(params=["fast", "portable"])
def widening(request):
    """Each float16 widening in turn: the one chosen for this CPU, then F16C turned off."""
    if request.param == "portable":
        assert _core.half_widening(f16c=False) in ("sse2", "scalar")
    yield
    assert _core.half_widening(f16c=True) == FAST


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
@pytest.mark.usefixtures("widening")
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


@pytest.mark.usefixtures("widening")
def test_oihw_to_hwio_widens_every_half_exactly():
    """Every float16 bit pattern (zeros, subnormals, infinities, NaN payloads, signalling NaNs) widens as numpy
    widens it, in every row of the 16-channel tiles, the 4x4 blocks and the scalar edges alike (37 channels,
    65,539 positions)."""
    h = np.arange(65536, dtype=np.uint16).view(np.float16)
    k = np.stack([np.roll(np.concatenate([h, h[:3]]), 7 * s) for s in range(37)]).reshape(37, 1, 1, 65539)
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


def _fold(dtype, n, eps, conv_bias):
    """convs_to_hwio of one 1x1 conv (identity kernel) with a norm: (scale, bias), and the numpy (float64) ones."""
    rng = np.random.default_rng(n)
    g, b, m, v = (rng.uniform(0.5, 1.5, n).astype(dtype) for _ in range(4))
    cb = rng.normal(size=n).astype(dtype) if conv_bias else None
    [(kernel, bias)] = _core.convs_to_hwio([(np.eye(n, dtype=dtype)[:, :, None, None], (g, b, m, v, eps), cb)])
    g, b, m, v = (x.astype(np.float64) for x in (g, b, m, v))
    want = g / np.sqrt(v + eps)
    return np.diagonal(kernel[0, 0]), bias, want, b + ((cb.astype(np.float64) if conv_bias else 0) - m) * want


@pytest.mark.parametrize("dtype, conv_bias", [(np.float32, True), (np.float16, False), (np.float16, True)])
def test_fold_batchnorm_matches_numpy(dtype, conv_bias):
    scale, bias, want_scale, want_bias = _fold(dtype, 37, 1e-3, conv_bias)
    np.testing.assert_allclose(scale, want_scale, rtol=1e-6)
    np.testing.assert_allclose(bias, want_bias, rtol=1e-5, atol=1e-6)


@pytest.mark.usefixtures("widening")
def test_convs_to_hwio_batch_matches_numpy():
    """Many kernels of mixed dtypes and sizes in one call, with a norm, a bias or neither: each as numpy computes
    it, and all independent (one arena)."""
    rng = np.random.default_rng(4)
    jobs, want = [], []
    for k, (shape, dtype) in enumerate([((300, 1024, 1, 1), np.float16), ((32, 16, 3, 3), np.float32),
                                        ((7, 3, 5, 2), np.float16), ((16, 2, 0, 3), np.float32),
                                        ((64, 1, 3, 3), np.float32)]):
        w = rng.normal(size=shape).astype(dtype)
        o = shape[0]
        norm = (rng.uniform(0.5, 1.5, o).astype(dtype), rng.normal(size=o).astype(dtype),
                rng.normal(size=o).astype(dtype), rng.uniform(0.5, 1.5, o).astype(dtype), 1e-3) if k % 2 == 0 else None
        bias = rng.normal(size=o).astype(dtype) if k % 3 != 1 else None
        jobs.append((w, norm, bias))
        w64 = w.astype(np.float64).transpose(2, 3, 1, 0)
        if norm is None:
            want.append((w64, None if bias is None else bias.astype(np.float64)))
        else:
            g, b, m, v = (x.astype(np.float64) for x in norm[:4])
            s = g / np.sqrt(v + 1e-3)
            want.append((w64 * s, b + ((0 if bias is None else bias.astype(np.float64)) - m) * s))
    got = _core.convs_to_hwio(jobs, 2)
    for (kernel, bias), (wk, wb) in zip(got, want, strict=True):
        assert kernel.dtype == np.float32 and kernel.flags.writeable
        np.testing.assert_allclose(kernel, wk, rtol=1e-6, atol=1e-7)
        assert (bias is None) == (wb is None)
        if wb is not None:
            np.testing.assert_allclose(bias, wb, rtol=1e-5, atol=1e-6)
    got[0][0][...] = 0
    np.testing.assert_allclose(got[1][0], want[1][0], rtol=1e-6)


def test_convs_to_hwio_rejects_mismatched_norms():
    w = np.zeros((4, 2, 1, 1), np.float32)
    with pytest.raises(FormatError, match="one element per output channel"):
        _core.convs_to_hwio([(w, (np.ones(4, np.float32),) * 3 + (np.ones(3, np.float32), 1e-3), None)])
    with pytest.raises(FormatError, match="one dtype"):
        _core.convs_to_hwio([(w, None, np.ones(4, np.float16)), (w, (np.ones(4, np.float32),) * 4 + (1e-3,),
                                                                  np.ones(4, np.float16))])


def test_kernel_rejects_wrong_dtype():
    with pytest.raises(FormatError, match="float32 or float16"):
        _core.oihw_to_hwio(np.zeros((2, 2, 1, 1), np.int32))
