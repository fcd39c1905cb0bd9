"""The kernel table of every instruction set this CPU runs (csrc/fl_simd_*.c), called directly
through _core's test hooks and checked against float64: the tile (every row count, tails of
units, K around FL_K_CHUNK, the order of the K blocks), the one-row pair kernel, sigmoid and
tanh, the standard cell and the fused last block. The API tests run only the table the process
chose; these run each one, whatever FASTLSTM_SIMD says: the portable table everywhere, AVX2
and AVX-512 where the CPU has them."""
import math
import zlib

import numpy as np
import pytest

from fastlstm import _core, activations

TABLES = {name: (rows, units) for name, rows, units in _core._simd_tables_for_test()}
ISAS = list(TABLES)
K_CHUNK = _core._kernel_constants_for_test()["FL_K_CHUNK"]
EPS = 2.0 ** -24                      # float32's unit roundoff
SENTINEL = np.float32(-7.25)          # marks floats a kernel must not write
# K around the block size: one block, a block and one, several and a tail
KS = (1, 5, K_CHUNK - 1, K_CHUNK, K_CHUNK + 1, 2 * K_CHUNK - 1, 2 * K_CHUNK, 2 * K_CHUNK + 1, 300)


def units_of(isa):
    return TABLES[isa][1]


def widths(isa):
    """Full blocks and tails: hidden sizes that are not multiples of 16 or of 8."""
    U = units_of(isa)
    return sorted({1, 3, 7, 8, 9, U - 1, U} & set(range(1, U + 1)))


def rng_for(*key):
    """A generator seeded by the key, the same in every process (str hashes are not)."""
    return np.random.default_rng(zlib.crc32(repr(key).encode()))


def pack(w, groups, U):
    """w (groups*units, K) packed [block][k][group][U], zero-padded: csrc/fl_pack.c's layout."""
    rows, K = w.shape
    units = rows // groups
    blocks = -(-units // U)
    padded = np.zeros((groups, blocks * U, K), np.float32)
    padded[:, :units] = w.reshape(groups, units, K)
    return np.ascontiguousarray(
        padded.reshape(groups, blocks, U, K).transpose(1, 3, 0, 2)).reshape(-1)


def tile(isa, w, x, *, accumulate=False, prev=None, ask_lines=0):
    """The tile for weights w (M, width, K) and rows x (nb, >= K): (nb, M, width). Gates lie
    width + 3 apart in out; the gaps must keep their sentinel."""
    M, width, K = w.shape
    nb, U = x.shape[0], units_of(isa)
    wp = pack(w.reshape(M * width, K), M, U)
    m_stride = width + 3
    out = np.full((nb, M * m_stride), SENTINEL, np.float32)
    view = out.reshape(nb, M, m_stride)
    if prev is not None:
        view[:, :, :width] = prev
    _core._tile_for_test(isa, M, wp, K, x, out, m_stride, width, accumulate, ask_lines)
    assert np.all(view[:, :, width:] == SENTINEL)
    return view[:, :, :width].copy()


def assert_sums_close(got, w, x, prev=None):
    """Within the blocked sums' bound: (FL_K_CHUNK + blocks) roundings of sum |w x|."""
    K = w.shape[2]
    w64, x64 = w.astype(np.float64), x[:, :K].astype(np.float64)
    exact = np.einsum("muk,rk->rmu", w64, x64)
    size = np.einsum("muk,rk->rmu", np.abs(w64), np.abs(x64))
    if prev is not None:
        exact, size = exact + prev, size + np.abs(prev)
    bound = (K_CHUNK + math.ceil(K / K_CHUNK) + 2) * EPS * size * 1.01
    assert np.all(np.abs(got - exact) <= bound), np.max(np.abs(got - exact) - bound)


def random_tile(key, M, width, K, nb):
    rng = rng_for(*key)
    w = rng.standard_normal((M, width, K)).astype(np.float32)
    x = rng.standard_normal((nb, K + 2)).astype(np.float32)   # a row stride past K
    return w, x


def test_the_portable_table_is_always_there():
    assert ISAS[0] == "portable"
    assert set(ISAS) <= {"portable", "avx2", "avx512"}
    assert _core.runtime_facts()["kernels"] in ISAS


def test_numpy_packing_is_the_cores():
    """The layout these tests pack by is fl_pack's (for the table this process chose)."""
    U = units_of(_core.runtime_facts()["kernels"])
    rng = np.random.default_rng(0)
    H, I, P = 37, 70, 11
    w_ih = rng.standard_normal((4 * H, I)).astype(np.float32)
    w_hh = rng.standard_normal((4 * H, P)).astype(np.float32)
    w_hr = rng.standard_normal((P, H)).astype(np.float32)
    kernel = _core.CellKernel(
        w_ih, w_hh, np.zeros(4 * H, np.float32), w_hr, None,
        gate_act=activations.resolve("sigmoid"), cell_act=activations.resolve("tanh"),
        out_act=activations.resolve("tanh"), gate_clip=None, cell_clip=None, proj_clip=None,
        input_forget=False)
    assert np.array_equal(kernel.w_ih_packed, pack(w_ih, 4, U))
    assert np.array_equal(kernel.w_hh_packed, pack(w_hh, 4, U))
    assert np.array_equal(kernel.w_hr_packed, pack(w_hr, 1, U))


@pytest.mark.parametrize("M", [4, 1])
@pytest.mark.parametrize("isa", ISAS)
def test_tile_matches_float64(isa, M):
    """Every row count of the table, full blocks and tails, K around FL_K_CHUNK."""
    rows = TABLES[isa][0]
    for nb in range(1, rows + 1):
        for width in widths(isa):
            for K in KS:
                w, x = random_tile((M, nb, width, K), M, width, K, nb)
                assert_sums_close(tile(isa, w, x), w, x)


@pytest.mark.parametrize("isa", ISAS)
def test_tile_adds_its_k_blocks_in_order(isa):
    """out = ((s0 + s1) + s2) + ..., each s_j the tile of K block j alone; with `accumulate`,
    out = ((out + s0) + s1) + ... The contract that makes every table give the same bits."""
    rows, U = TABLES[isa]
    for K in (K_CHUNK + 1, 2 * K_CHUNK, 3 * K_CHUNK - 5):
        for M in (4, 1):
            w, x = random_tile((K, M, "order"), M, U, K, rows)
            prev = rng_for(K, M).standard_normal((rows, M, U)).astype(np.float32)
            parts = [tile(isa, w[:, :, k0:k0 + K_CHUNK], np.ascontiguousarray(x[:, k0:]))
                     for k0 in range(0, K, K_CHUNK)]
            plain, added = parts[0], prev + parts[0]
            for s in parts[1:]:
                plain, added = plain + s, added + s
            assert plain.dtype == np.float32
            assert np.array_equal(tile(isa, w, x), plain)
            got = tile(isa, w, x, accumulate=True, prev=prev)
            assert np.array_equal(got, added)
            assert_sums_close(got, w, x, prev=prev.astype(np.float64))


@pytest.mark.parametrize("isa", ISAS)
def test_tile_rows_do_not_depend_on_their_neighbours(isa):
    """A row's sums have the same bits in a tile of any row count, and in batches larger than
    a tile cut into row groups as the time loop cuts them (group g: rows [g*B/n, (g+1)*B/n))."""
    rows, U = TABLES[isa]
    for K in (3, K_CHUNK + 7):
        w, x = random_tile((K, "rows"), 4, U, K, 20)
        alone = np.concatenate([tile(isa, w, x[r:r + 1]) for r in range(20)])
        for nb in range(1, rows + 1):
            assert np.array_equal(tile(isa, w, x[:nb]), alone[:nb])
        for batch in (rows + 1, 11, 13, 20):
            groups = -(-batch // rows)
            cuts = [g * batch // groups for g in range(groups + 1)]
            got = np.concatenate([tile(isa, w, x[a:b]) for a, b in zip(cuts, cuts[1:])])
            assert np.array_equal(got, alone[:batch])
        assert_sums_close(alone, w, x)


@pytest.mark.parametrize("isa", ISAS)
def test_tile_l2_asks_change_no_result(isa):
    rows, U = TABLES[isa]
    K = 2 * K_CHUNK + 9
    w, x = random_tile(("ask",), 4, U, K, rows)
    lines = K * 4 * U // _core._kernel_constants_for_test()["FL_LINE_FLOATS"]
    plain = tile(isa, w, x)
    for ask in (1, 3, K, lines // 2 + 1, lines):
        assert np.array_equal(tile(isa, w, x, ask_lines=ask), plain)


def test_tiles_give_the_same_bits_on_every_instruction_set():
    """The same FMA chains everywhere (one table on a CPU without AVX2: trivially)."""
    for K in (1, K_CHUNK + 1, 300):
        for width in (1, 5, 8):
            w, x = random_tile((K, width, "isa"), 4, width, K, 3)
            results = [tile(isa, w, x) for isa in ISAS]
            for got in results[1:]:
                assert np.array_equal(got, results[0])


@pytest.mark.parametrize("isa", ISAS)
def test_pair_is_two_one_row_tiles(isa):
    """The one-row pair kernel: two blocks of four gates, the same bits as two tiles."""
    U = units_of(isa)
    for K in KS:
        for width0, width1 in ((U, U), (U, 1), (U, U - 1), (3, 5)):
            rng = rng_for(K, width0, width1, "pair")
            w0 = rng.standard_normal((4, width0, K)).astype(np.float32)
            w1 = rng.standard_normal((4, width1, K)).astype(np.float32)
            x = rng.standard_normal(K).astype(np.float32)
            m_stride = max(width0, width1) + 2
            out0 = np.full(4 * m_stride, SENTINEL, np.float32)
            out1 = out0.copy()
            _core._pair_for_test(isa, pack(w0.reshape(-1, K), 4, U), pack(w1.reshape(-1, K), 4, U),
                                 K, x, out0, out1, m_stride, width0, width1)
            for out, w, width in ((out0, w0, width0), (out1, w1, width1)):
                view = out.reshape(4, m_stride)
                assert np.all(view[:, width:] == SENTINEL)
                assert np.array_equal(view[:, :width][None], tile(isa, w, x[None]))
                assert_sums_close(view[:, :width][None], w, x[None])


ACTIVATION_GRID = np.concatenate([
    np.linspace(-20, 20, 40001),
    np.linspace(-0.6, 0.6, 4001),          # around tanh's switch between its two formulas
    [0.0, -0.0, 1e-30, -1e-30, 1e-8, 88.0, -88.0, 100.0, -100.0, 1e30, -1e30],
]).astype(np.float32)


@pytest.mark.parametrize("name,bound", [("sigmoid", 1.5e-7), ("tanh", 2.5e-7)])
@pytest.mark.parametrize("isa", ISAS)
def test_activations_match_float64(isa, name, bound):
    values = ACTIVATION_GRID.copy()
    _core._activation_for_test(isa, name, values)
    exact = activations.apply(activations.resolve(name), ACTIVATION_GRID.astype(np.float64))
    assert np.abs(values - exact).max() < bound
    assert np.all(np.abs(values) <= 1.0)
    special = np.array([np.nan, np.inf, -np.inf, 0.0], np.float32)
    _core._activation_for_test(isa, name, special)
    assert np.isnan(special[0]) and special[1] == 1.0
    assert abs(special[2] - (0.0 if name == "sigmoid" else -1.0)) < 1e-30
    assert special[3] == (0.5 if name == "sigmoid" else 0.0)


@pytest.mark.parametrize("name", ["sigmoid", "tanh"])
@pytest.mark.parametrize("isa", ISAS)
def test_activation_tails(isa, name):
    """Any length: the floats past n keep their values, those before it match a long call."""
    v = np.random.default_rng(3).uniform(-5, 5, 40).astype(np.float32)
    full = v.copy()
    _core._activation_for_test(isa, name, full)
    for n in range(0, 34):
        buf = np.concatenate([v[:n], np.full(8, SENTINEL, np.float32)])
        _core._activation_for_test(isa, name, buf[:n])
        assert np.array_equal(buf[:n], full[:n]) and np.all(buf[n:] == SENTINEL)


def test_simd_activations_give_the_same_bits():
    simd = [isa for isa in ISAS if isa != "portable"]   # the portable ones are libm's
    for name in ("sigmoid", "tanh"):
        results = []
        for isa in simd:
            values = ACTIVATION_GRID.copy()
            _core._activation_for_test(isa, name, values)
            results.append(values)
        for got in results[1:]:
            assert np.array_equal(got, results[0])


def sigmoid64(v):
    return 0.5 * (1.0 + np.tanh(0.5 * v))


def cell64(gx, bias, pre, c):
    """The standard cell in float64: gates i, f, g, o of z = pre + (gx + bias); (c', h')."""
    H = c.shape[1]
    z = pre.astype(np.float64) + gx.astype(np.float64) + bias.astype(np.float64)
    i, f, g, o = (z[:, k * H:(k + 1) * H] for k in range(4))
    c_new = sigmoid64(f) * c + sigmoid64(i) * np.tanh(g)
    return c_new, sigmoid64(o) * np.tanh(c_new)


def cell_inputs(key, nb, H):
    rng = rng_for(*key)
    gx = rng.standard_normal((nb, 4 * H)).astype(np.float32)
    pre = rng.standard_normal((nb, 4 * H)).astype(np.float32)
    bias = (0.5 * rng.standard_normal(4 * H)).astype(np.float32)
    c = rng.standard_normal((nb, H)).astype(np.float32)
    return gx, bias, pre, c


def standard_cell(isa, gx, bias, pre, c, j0, j1):
    c = c.copy()
    h = np.full(c.shape, SENTINEL, np.float32)
    has = _core._standard_cell_for_test(isa, gx, bias, pre, c, h, j0, j1)
    return has, c, h


@pytest.mark.parametrize("isa", ISAS)
def test_standard_cell_matches_float64(isa):
    """Units [j0, j1) of 1..FL_TILE_ROWS_MAX rows, full vectors and tails; the portable table
    has none (the generic cell of fl_cell.c serves it, tested through the API)."""
    for nb in range(1, 7):
        for H in (1, 5, 8, 16, 33, 64, 100):
            gx, bias, pre, c = cell_inputs(("cell", nb, H), nb, H)
            c_ref, h_ref = cell64(gx, bias, pre, c)
            for j0, j1 in ((0, H), (0, H // 2), (H // 3, H)):
                has, c_got, h_got = standard_cell(isa, gx, bias, pre, c, j0, j1)
                assert has == (isa != "portable")
                if not has:
                    continue
                outside = np.r_[0:j0, j1:H]
                assert np.all(h_got[:, outside] == SENTINEL)
                assert np.array_equal(c_got[:, outside], c[:, outside])
                np.testing.assert_allclose(c_got[:, j0:j1], c_ref[:, j0:j1], rtol=0, atol=1e-6)
                np.testing.assert_allclose(h_got[:, j0:j1], h_ref[:, j0:j1], rtol=0, atol=1e-6)


def test_simd_standard_cells_give_the_same_bits():
    simd = [isa for isa in ISAS if isa != "portable"]
    for nb in (1, 4, 6):
        for H in (5, 33, 100):
            gx, bias, pre, c = cell_inputs(("same", nb, H), nb, H)
            results = [standard_cell(isa, gx, bias, pre, c, 0, H)[1:] for isa in simd]
            for c_got, h_got in results[1:]:
                assert np.array_equal(c_got, results[0][0]) and np.array_equal(h_got, results[0][1])


@pytest.mark.parametrize("isa", ISAS)
def test_fused_last_block_is_tile_then_cell(isa):
    """gates_cell: the last K block of the four-gate tile and the standard cell in one kernel,
    the same bits as the tile (added to the earlier blocks' sums in pre) then the standard
    cell; only AVX-512 has one."""
    rows, U = TABLES[isa]
    for nb in range(1, rows + 1):
        for width in widths(isa):
            for K in (1, 17, K_CHUNK):
                for earlier in (False, True):
                    H = width + 2
                    rng = rng_for("fused", nb, width, K, earlier)
                    w = rng.standard_normal((4, width, K)).astype(np.float32)
                    x = rng.standard_normal((nb, K + 1)).astype(np.float32)
                    gx, bias, pre, c = cell_inputs(("fused", nb, width, K), nb, H)
                    h = np.full((nb, width + 1), SENTINEL, np.float32)
                    y = np.full((nb, width), SENTINEL, np.float32)
                    c_got = c.copy()
                    has = _core._gates_cell_for_test(
                        isa, pack(w.reshape(-1, K), 4, U), K, x, pre if earlier else None, gx,
                        bias, c_got, h, y, H, width)
                    assert has == (isa == "avx512")
                    if not has:
                        continue
                    sums = tile(isa, w, x)                       # (nb, 4, width)
                    total = np.zeros((nb, 4 * H), np.float32)    # pre as the tile leaves it
                    for g in range(4):
                        cols = slice(g * H, g * H + width)
                        total[:, cols] = pre[:, cols] + sums[:, g] if earlier else sums[:, g]
                    _, c_want, h_want = standard_cell(isa, gx, bias, total, c, 0, width)
                    assert np.array_equal(c_got[:, :width], c_want[:, :width])
                    assert np.array_equal(c_got[:, width:], c[:, width:])
                    assert np.array_equal(h[:, :width], h_want[:, :width])
                    assert np.all(h[:, width:] == SENTINEL)
                    assert np.array_equal(y, h[:, :width])
