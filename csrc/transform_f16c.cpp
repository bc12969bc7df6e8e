// The float16 transpose with F16C (vcvtph2ps: halves widened in one instruction) and AVX2 (eight channels a
// register); compiled with -mf16c -mavx2 on x86 only, called only where the CPU has both (transform.cpp checks
// once). Nothing here may be an inline function or template with external linkage: the linker could pick this
// copy for other callers.
#include <immintrin.h>

#include "transpose_tiles.h"

namespace pyloader {
namespace {

// Exactly as half_to_float: vcvtph2ps is exact for every half but quiets a signalling NaN (sets the float's quiet
// bit) where numpy's widening keeps its bits, so a register holding a NaN takes the NaNs' bits from the halves
// (sign, all-ones exponent, the payload).
__m256 widen8(__m128i h) {
    const __m256 f = _mm256_cvtph_ps(h);
    const __m256 nan = _mm256_cmp_ps(f, f, _CMP_UNORD_Q);
    if (__builtin_expect(_mm256_movemask_ps(nan) == 0, 1)) return f;
    const __m256i w = _mm256_cvtepu16_epi32(h);
    const __m256i bits =
        _mm256_or_si256(_mm256_slli_epi32(_mm256_and_si256(w, _mm256_set1_epi32(0x8000)), 16),
                        _mm256_or_si256(_mm256_slli_epi32(_mm256_and_si256(w, _mm256_set1_epi32(0x3ff)), 13),
                                        _mm256_set1_epi32(0x7f800000)));
    return _mm256_blendv_ps(f, _mm256_castsi256_ps(bits), nan);
}

// Four halves of a row from element j (any alignment) in the low 64 bits.
__m128i halves4(const std::uint16_t* row, std::size_t j) {
    return _mm_loadl_epi64(reinterpret_cast<const __m128i*>(reinterpret_cast<const unsigned char*>(row) + j * 2));
}

struct F16cLoad {  // the tiles' edges: four halves through the eight-wide widening
    static __m128 load4(const std::uint16_t* row, std::size_t j) {
        return _mm256_castps256_ps128(widen8(halves4(row, j)));
    }
};

// Eight channels x four positions: rows k and k + 4 widened together (one register, a row a 128-bit lane), then
// the two lanes' 4x4 transposes at once: r[m] = channels 0..3 | 4..7 at position j + m.
struct Rows8 {
    using V = __m256;
    static constexpr std::size_t C = 8;
    static void block(const std::uint16_t* row, std::size_t J, std::size_t j, V (&r)[4]) {
        for (std::size_t k = 0; k < 4; ++k)
            r[k] = widen8(_mm_unpacklo_epi64(halves4(row + k * J, j), halves4(row + (k + 4) * J, j)));
        const __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
        const __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
        r[0] = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(1, 0, 1, 0));
        r[1] = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(3, 2, 3, 2));
        r[2] = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(1, 0, 1, 0));
        r[3] = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(3, 2, 3, 2));
    }
    static V scaled(V v, const float* s) { return _mm256_mul_ps(v, _mm256_loadu_ps(s)); }
    template <bool kStream>
    static void put(float* out, V v) {
        if constexpr (kStream) _mm256_stream_ps(out, v);
        else _mm256_storeu_ps(out, v);
    }
};

}  // namespace

TiledPart transpose_blocks_f16c(const std::uint16_t* in, float* out, std::size_t O, std::size_t I, std::size_t HW,
                                const float* scale, std::size_t o_begin, std::size_t o_end) {
    return transpose_blocks<Rows8, Rows4<F16cLoad>, 32>(in, out, O, I, HW, scale, o_begin, o_end);
}

}  // namespace pyloader
