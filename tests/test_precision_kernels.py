"""The reduced-precision kernels (csrc/fl_quant.c, the fl_qtile kernels of csrc/fl_simd_*.c),
called through _core's test hooks: the row quantization against NumPy doing the same float32
operations, and every product kernel this CPU runs, of every table, against exact sums. int8
sums are integers, so every int8 kernel must give the NumPy bits; the widening bfloat16 kernels
add each pair in the documented order (NumPy bits too); the native vdpbf16ps may round its
pairs otherwise and is held to float32 round-off."""
import zlib

import numpy as np
import pytest

from fastlstm import _core

TABLES = {name: (rows, units) for name, rows, units in _core._simd_tables_for_test()}
SENTINEL = np.float32(-7.25)
KERNELS = [(isa, precision, i, name) for isa in TABLES for precision in ("int8", "bfloat16")
           for i, name in enumerate(_core._qkernels_for_test(isa, precision))]
KS = (1, 3, 4, 5, 31, 64, 130)


def rng_for(*key):
    return np.random.default_rng(zlib.crc32(repr(key).encode()))


def bf16_value(codes):
    return (codes.astype(np.uint32) << 16).view(np.float32)


def round_even(v):
    """(v + 1.5 * 2^23) - 1.5 * 2^23 in float32, as fl_quant.c rounds."""
    magic = np.float32(12582912.0)
    return (v.astype(np.float32) + magic) - magic


def int8_reference(x):
    """One part of fl_quantize_rows: codes + 128 and the scale, in float32 as the C does."""
    m = np.abs(x).max().astype(np.float32)
    scale = np.float32(m / np.float32(127))
    inv = np.float32(127) / m if m > 0 else np.float32(0)
    q = np.clip(round_even(x * inv), -127, 127).astype(np.int32)
    return (q + 128).astype(np.uint8), scale


def bf16_reference(x):
    bits = x.astype(np.float32).view(np.uint32).astype(np.uint64)
    return ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)


@pytest.mark.parametrize("isa", list(TABLES))
@pytest.mark.parametrize("K", KS)
@pytest.mark.parametrize("parts", [1, 2])
def test_int8_rows(K, parts, isa):
    x = (rng_for("i8rows", K, parts).standard_normal((4, K)) * [[1], [1e-3], [30], [0]]).astype(np.float32)
    codes, scales = _core._quantize_rows_for_test("int8", x, parts, isa)
    Kp = -(-K // 4) * 4
    assert codes.shape == (4 * parts, Kp)
    for r in range(4):
        hi, s_hi = int8_reference(x[r])
        assert np.array_equal(codes[r * parts, :K], hi) and scales[r * parts] == s_hi
        assert np.all(codes[r * parts, K:] == 128)
        if parts == 2:
            rest = x[r] - s_hi * (hi.astype(np.int32) - 128).astype(np.float32)
            lo, s_lo = int8_reference(rest)
            assert np.array_equal(codes[r * 2 + 1, :K], lo) and scales[r * 2 + 1] == s_lo
            # the two parts stand for x to a part in 127^2 of its largest
            back = (s_hi * (hi.astype(np.float32) - 128) + s_lo * (lo.astype(np.float32) - 128))
            assert np.abs(back - x[r]).max() <= np.abs(x[r]).max() / 127 ** 2 + 1e-30
    assert scales[3 * parts] == 0 and np.all(codes[3 * parts] == 128)   # a zero row


@pytest.mark.parametrize("isa", list(TABLES))
@pytest.mark.parametrize("K", KS)
def test_bf16_rows(K, isa):
    x = (rng_for("bfrows", K).standard_normal((3, K)) * [[1], [1e-30], [1e30]]).astype(np.float32)
    codes, scales = _core._quantize_rows_for_test("bfloat16", x, 2, isa)
    Kp = K + K % 2
    for r in range(3):
        hi = bf16_reference(x[r])
        lo = bf16_reference(x[r] - bf16_value(hi))
        assert np.array_equal(codes[2 * r, :K], hi) and np.array_equal(codes[2 * r + 1, :K], lo)
        assert np.all(codes[2 * r:2 * r + 2, K:Kp] == 0)
        rel = np.abs(bf16_value(hi).astype(np.float64) + bf16_value(lo) - x[r]) / np.abs(x[r])
        assert rel.max() < 2.0 ** -16
    assert np.all(scales == 1)


@pytest.mark.parametrize("isa", list(TABLES))
def test_rows_with_nan_or_inf(isa):
    x = np.array([[1.0, np.inf, 2.0], [np.nan, 0.0, 1.0]], np.float32)
    _, scales = _core._quantize_rows_for_test("int8", x, 1, isa)
    assert np.all(np.isnan(scales))
    codes, _ = _core._quantize_rows_for_test("bfloat16", x, 1, isa)
    assert np.isinf(bf16_value(codes[0, 1])) and np.isnan(bf16_value(codes[1, 0]))


def expected(precision, codes, x_codes, x_scale, w_scale, w_comp, parts, K):
    """The fl_qtile contract in NumPy: out (nb, rows of codes)."""
    nb = x_codes.shape[0] // parts
    out = np.zeros((nb, codes.shape[0]), np.float32)
    for r in range(nb):
        vals = []
        for p in range(parts):
            xr = x_codes[r * parts + p, :K]
            if precision == "int8":
                acc = codes.astype(np.int64) @ xr.astype(np.int64)
                scale = (np.float32(x_scale[r * parts + p]) * w_scale).astype(np.float32)
                vals.append(((acc - w_comp).astype(np.float32) * scale).astype(np.float32))
            else:
                w, xv = bf16_value(codes), bf16_value(xr)
                acc = np.zeros(codes.shape[0], np.float32)
                for k in range(K):   # pairs: k even, then k odd; products exact in float32
                    acc = (acc + w[:, k] * xv[k]).astype(np.float32)
                vals.append(acc)
        out[r] = vals[0] + vals[1] if parts == 2 else vals[0]
    return out


@pytest.mark.parametrize("isa,precision,variant,name", KERNELS,
                         ids=[f"{k[0]}-{k[3]}" for k in KERNELS])
@pytest.mark.parametrize("K", KS)
def test_product_kernel(isa, precision, variant, name, K):
    rows, U = TABLES[isa]
    rng = rng_for("qtile", isa, precision, variant, K)
    for M, parts in ((4, 1), (1, 1), (4, 2)):
        for nb in sorted({1, 2, rows - 1, rows}):
            for width in sorted({1, U - 3, U} & set(range(1, U + 1))):
                w = rng.standard_normal((M * U, K)).astype(np.float32) * 0.1
                x = rng.standard_normal((nb, K)).astype(np.float32)
                x_codes, x_scale = _core._quantize_rows_for_test(precision, x, parts)
                if precision == "int8":
                    codes = rng.integers(-127, 128, (M * U, K)).astype(np.int8)
                    w_scale = (np.abs(w).max(axis=1) / 127).astype(np.float32)
                    w_comp = (128 * codes.astype(np.int64).sum(axis=1)).astype(np.int32)
                else:
                    codes = bf16_reference(w)
                    w_scale, w_comp = None, None
                m_stride = width + 3
                out = np.full((nb, (M - 1) * m_stride + width + 2), SENTINEL, np.float32)
                ws = wc = None
                if precision == "int8":   # laid out like out: gate m's units at m * m_stride
                    ws = np.zeros(out.shape[1], np.float32)
                    wc = np.zeros(out.shape[1], np.int32)
                    for m in range(M):
                        ws[m * m_stride:m * m_stride + width] = w_scale[m * U:m * U + width]
                        wc[m * m_stride:m * m_stride + width] = w_comp[m * U:m * U + width]
                accumulate = parts == 1 and M == 4   # out += the sums, onto what out holds
                before = out.copy()
                if accumulate:
                    for m in range(M):
                        out[:, m * m_stride:m * m_stride + width] = rng.standard_normal(
                            (nb, width)).astype(np.float32)
                    before = out.copy()
                _core._qtile_for_test(isa, precision, variant, M, codes, K, x_codes, x_scale,
                                      out, m_stride, width, ws, wc, parts, accumulate)
                want = expected(precision, codes, x_codes, x_scale, w_scale, w_comp, parts, K)
                if accumulate:
                    for m in range(M):
                        want[:, m * U:m * U + width] = (
                            before[:, m * m_stride:m * m_stride + width]
                            + want[:, m * U:m * U + width]).astype(np.float32)
                for m in range(M):
                    got = out[:, m * m_stride:m * m_stride + width]
                    ref = want[:, m * U:m * U + width]
                    if precision == "int8" or "widening" in name or isa == "portable":
                        assert np.array_equal(got, ref), (M, parts, nb, width, m)
                    else:
                        tol = 4 * K * 2.0 ** -24 * (np.abs(bf16_value(codes)).max()
                                                    * np.abs(x).max() * parts)
                        assert np.abs(got - ref).max() <= tol, (M, parts, nb, width, m)
                    if m + 1 < M:   # the gaps between gates keep their sentinel
                        assert np.all(out[:, m * m_stride + width:(m + 1) * m_stride] == SENTINEL)
                assert np.all(out[:, (M - 1) * m_stride + width:] == SENTINEL)


def test_every_table_has_kernels():
    for isa in TABLES:
        for precision in ("int8", "bfloat16"):
            assert _core._qkernels_for_test(isa, precision), (isa, precision)
