// The tiled OIHW -> HWIO transpose, compiled once per instruction set: transform.cpp (SSE2) and
// transform_f16c.cpp (F16C + AVX2) each instantiate it with their own blocks. Unnamed namespace: each translation
// unit keeps its own copy, so the linker never merges the AVX2 one into the SSE2 path. The tiles need SSE2; the
// output rows serve the scalar path too.
#pragma once
#include <cstddef>
#include <cstdint>
#ifdef __SSE2__
#include <emmintrin.h>
#endif

namespace pyloader {

// The part of oihw_to_hwio's channels [o_begin, o_end) that transpose_blocks did: channels [o_begin, o4) of input
// positions [0, j4).
struct TiledPart {
    std::size_t o4, j4;
};

// transpose_blocks of a float16 kernel with F16C and AVX2 (transform_f16c.cpp): only where the CPU has both.
TiledPart transpose_blocks_f16c(const std::uint16_t* in, float* out, std::size_t O, std::size_t I, std::size_t HW,
                                const float* scale, std::size_t o_begin, std::size_t o_end);

namespace {

// The transpose of the kernel as a matrix: in[o][j] -> out[j'][o], j = i * HW + hw the input position (OIHW),
// j' = hw * I + i its output row (HWIO). Output rows in the order of j, stepped without division.
struct OutputRows {
    float* out;
    std::size_t I, HW, O, i = 0, hw = 0;
    float* next() {
        float* r = out + (hw * I + i) * O;
        if (++hw == HW) hw = 0, ++i;
        return r;
    }
};

#ifdef __SSE2__
// A block of the transpose, `C` input rows (channels) x 4 positions: block(row, J, j, r) widens rows row, row + J,
// ... at positions j..j+3 and transposes them, r[m] the C channels at position j + m; scaled(v, s) multiplies by
// the C scales s[0..C); put<kStream>(out, v) writes C floats (non-temporal: aligned to a register). Rows4: C = 4
// in SSE registers, each row's four elements from `Load::load4(row, j)` (as floats, any alignment).
template <class Load>
struct Rows4 {
    using V = __m128;
    static constexpr std::size_t C = 4;
    template <typename T>
    static void block(const T* row, std::size_t J, std::size_t j, V (&r)[4]) {
        for (std::size_t k = 0; k < 4; ++k) r[k] = Load::load4(row + k * J, j);
        _MM_TRANSPOSE4_PS(r[0], r[1], r[2], r[3]);
    }
    static V scaled(V v, const float* s) { return _mm_mul_ps(v, _mm_loadu_ps(s)); }
    template <bool kStream>
    static void put(float* out, V v) {
        if constexpr (kStream) _mm_stream_ps(out, v);
        else _mm_storeu_ps(out, v);
    }
};

// Output rows [j_begin, j_end) x channels [o_begin, o_end) (spans multiples of NJ and NO: 16 or 32 x 16, or 4 x 4)
// in NJ x NO tiles of `Block`s: a tile reads NO input rows NJ elements each (whole cache lines of 16 floats or 32
// halves, read once, whatever the rows' stride does to the L1 sets) and writes NJ output rows NO floats each (16:
// whole lines, each written in one go: a row's blocks follow one another), each row's run continuing along o.
// kStream: non-temporal stores, which write the output without first reading it into the cache.
template <class Block, std::size_t NJ, std::size_t NO, bool kStream, typename T>
void transpose_tiles(const T* in, OutputRows rows, std::size_t J, const float* scale, std::size_t j_begin,
                     std::size_t j_end, std::size_t o_begin, std::size_t o_end) {
    for (std::size_t j = j_begin; j < j_end; j += NJ) {
        float* dst[NJ];
        for (auto& d : dst) d = rows.next();
        for (std::size_t o = o_begin; o < o_end; o += NO)
            for (std::size_t p = 0; p < NJ; p += 4) {
                typename Block::V r[NO / Block::C][4];  // r[b][m]: channels o + b * C.., position j + p + m
                for (std::size_t b = 0; b < NO / Block::C; ++b) {
                    Block::block(in + (o + b * Block::C) * J, J, j + p, r[b]);
                    if (scale)  // x * 1 would quiet a NaN: no multiply without a scale
                        for (auto& v : r[b]) v = Block::scaled(v, scale + o + b * Block::C);
                }
                for (std::size_t m = 0; m < 4; ++m)
                    for (std::size_t b = 0; b < NO / Block::C; ++b)
                        Block::template put<kStream>(dst[p + m] + o + b * Block::C, r[b][m]);
            }
    }
    if (kStream) _mm_sfence();  // visible to whoever waits for this transpose before it reads them
}

// Non-temporal stores where every block's place is aligned to a register: the output rows (O floats each) and
// channel o_begin of the first (the blocks start at o_begin + a multiple of C).
template <class Block, std::size_t NJ, std::size_t NO, typename T>
void tiles(const T* in, const OutputRows& rows, std::size_t J, const float* scale, std::size_t j_begin,
           std::size_t j_end, std::size_t o_begin, std::size_t o_end) {
    const std::size_t align = sizeof(typename Block::V);
    if (rows.O * sizeof(float) % align == 0 && reinterpret_cast<std::uintptr_t>(rows.out + o_begin) % align == 0)
        transpose_tiles<Block, NJ, NO, true>(in, rows, J, scale, j_begin, j_end, o_begin, o_end);
    else transpose_tiles<Block, NJ, NO, false>(in, rows, J, scale, j_begin, j_end, o_begin, o_end);
}

// oihw_to_hwio's channels [o_begin, o_end) as far as whole 4x4 blocks reach, the kernel not empty: NJ x 16 tiles
// of Wide blocks where they fit (NJ positions: a cache line of input elements), 4x4 tiles of Narrow ones (C = 4)
// at the edges; the caller writes the rest.
template <class Wide, class Narrow, std::size_t NJ, typename T>
TiledPart transpose_blocks(const T* in, float* out, std::size_t O, std::size_t I, std::size_t HW, const float* scale,
                           std::size_t o_begin, std::size_t o_end) {
    const std::size_t J = I * HW;
    const std::size_t o16 = o_begin + (o_end - o_begin) / 16 * 16, jn = J / NJ * NJ;
    const TiledPart done{o_begin + (o_end - o_begin) / 4 * 4, J / 4 * 4};
    const OutputRows first{out, I, HW, O};
    const OutputRows from_jn{out, I, HW, O, jn / HW, jn % HW};
    tiles<Wide, NJ, 16>(in, first, J, scale, 0, jn, o_begin, o16);
    tiles<Narrow, 4, 4>(in, first, J, scale, 0, done.j4, o16, done.o4);
    tiles<Narrow, 4, 4>(in, from_jn, J, scale, jn, done.j4, o_begin, o16);
    return done;
}
#endif
}  // namespace
}  // namespace pyloader
