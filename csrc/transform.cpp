#include "transform.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "parallel.h"
#include "transpose_tiles.h"
#ifdef PYLOADER_F16C
#include <cpuid.h>

#include <atomic>
#endif

namespace pyloader {

float half_to_float(std::uint16_t h) {
    std::uint32_t sign = std::uint32_t(h & 0x8000u) << 16;
    std::uint32_t exp = (h >> 10) & 0x1fu;
    std::uint32_t mant = h & 0x3ffu;
    std::uint32_t bits;
    if (exp == 0) {
        if (mant == 0) {
            bits = sign;
        } else {  // subnormal half: normalise
            int e = -1;
            do {
                ++e;
                mant <<= 1;
            } while ((mant & 0x400u) == 0);
            bits = sign | (std::uint32_t(127 - 15 - e) << 23) | ((mant & 0x3ffu) << 13);
        }
    } else if (exp == 31) {
        bits = sign | 0x7f800000u | (mant << 13);
    } else {
        bits = sign | ((exp + 127 - 15) << 23) | (mant << 13);
    }
    float f;
    std::memcpy(&f, &bits, sizeof f);
    return f;
}

namespace {

template <typename T>
inline float load(const T* p, std::size_t i);

// Loads through memcpy: legacy-format storages start at any byte offset of the file, so the input need not be
// aligned for its type (a plain p[i] would be undefined behaviour; memcpy compiles to the same unaligned load).
template <>
inline float load<float>(const float* p, std::size_t i) {
    float f;
    std::memcpy(&f, reinterpret_cast<const unsigned char*>(p) + i * sizeof(float), sizeof f);
    return f;
}

template <>
inline float load<std::uint16_t>(const std::uint16_t* p, std::size_t i) {
    std::uint16_t h;
    std::memcpy(&h, reinterpret_cast<const unsigned char*>(p) + i * sizeof(std::uint16_t), sizeof h);
    return half_to_float(h);
}

#ifdef __SSE2__
struct Sse2Load {
    static __m128 load4(const float* row, std::size_t j) {
        return _mm_loadu_ps(reinterpret_cast<const float*>(reinterpret_cast<const unsigned char*>(row) + j * 4));
    }
    // Halves widened branch-free, exactly as half_to_float (normal, subnormal, zero, infinity, NaN with its payload).
    static __m128 load4(const std::uint16_t* row, std::size_t j) {
        const __m128i h = _mm_unpacklo_epi16(
            _mm_loadl_epi64(reinterpret_cast<const __m128i*>(reinterpret_cast<const unsigned char*>(row) + j * 2)),
            _mm_setzero_si128());
        const __m128i exp_mask = _mm_set1_epi32(0x1f << 23);
        __m128i o = _mm_slli_epi32(_mm_and_si128(h, _mm_set1_epi32(0x7fff)), 13);
        const __m128i exp = _mm_and_si128(o, exp_mask);
        o = _mm_add_epi32(o, _mm_set1_epi32((127 - 15) << 23));
        o = _mm_add_epi32(o, _mm_and_si128(_mm_cmpeq_epi32(exp, exp_mask), _mm_set1_epi32((128 - 16) << 23)));
        const __m128i tiny = _mm_cmpeq_epi32(exp, _mm_setzero_si128());  // zero or subnormal: renormalise
        const __m128 renorm = _mm_sub_ps(_mm_castsi128_ps(_mm_add_epi32(o, _mm_set1_epi32(1 << 23))),
                                         _mm_castsi128_ps(_mm_set1_epi32(113 << 23)));
        o = _mm_or_si128(_mm_andnot_si128(tiny, o), _mm_and_si128(tiny, _mm_castps_si128(renorm)));
        return _mm_castsi128_ps(_mm_or_si128(o, _mm_slli_epi32(_mm_and_si128(h, _mm_set1_epi32(0x8000)), 16)));
    }
};

#ifdef PYLOADER_F16C
bool cpu_has_f16c() {  // AVX2 (its check includes the OS's saving of the AVX registers), F16C from cpuid
    __builtin_cpu_init();
    unsigned eax, ebx, ecx, edx;
    return __builtin_cpu_supports("avx2") && __get_cpuid(1, &eax, &ebx, &ecx, &edx) && (ecx & bit_F16C);
}
const bool f16c_cpu = cpu_has_f16c();
std::atomic<bool> f16c_on{f16c_cpu};  // use_f16c turns it off and on
#endif

TiledPart blocks(const float* in, float* out, std::size_t O, std::size_t I, std::size_t HW, const float* scale,
                 std::size_t o_begin, std::size_t o_end) {
    return transpose_blocks<Rows4<Sse2Load>, Rows4<Sse2Load>, 16>(in, out, O, I, HW, scale, o_begin, o_end);
}
TiledPart blocks(const std::uint16_t* in, float* out, std::size_t O, std::size_t I, std::size_t HW,
                 const float* scale, std::size_t o_begin, std::size_t o_end) {
#ifdef PYLOADER_F16C
    if (f16c_on.load(std::memory_order_relaxed)) return transpose_blocks_f16c(in, out, O, I, HW, scale, o_begin, o_end);
#endif
    return transpose_blocks<Rows4<Sse2Load>, Rows4<Sse2Load>, 32>(in, out, O, I, HW, scale, o_begin, o_end);
}
#endif

template <typename T>
void transpose_impl(const T* in, float* out, std::size_t O, std::size_t I, std::size_t HW, const float* scale,
                    std::size_t o_begin, std::size_t o_end) {
    const std::size_t J = I * HW;
    if (J == 0) return;  // an empty kernel (HW may be 0)
    auto put = [&](float* row, std::size_t o, std::size_t j) {
        const float v = load(in + o * J, j);
        row[o] = scale ? v * scale[o] : v;
    };
    TiledPart done{o_begin, 0};  // channels [o_begin, o4) of positions [0, j4) done in blocks
#ifdef __SSE2__
    done = blocks(in, out, O, I, HW, scale, o_begin, o_end);
#endif
    OutputRows rest{out, I, HW, O};
    for (std::size_t j = 0; j < J; ++j) {
        float* row = rest.next();
        for (std::size_t o = j < done.j4 ? done.o4 : o_begin; o < o_end; ++o) put(row, o, j);
    }
}

template <typename T>
void fold_impl(const T* gamma, const T* beta, const T* mean, const T* var, const T* conv_bias, double eps,
               float* scale, float* bias, std::size_t o_begin, std::size_t o_end) {
    for (std::size_t o = o_begin; o < o_end; ++o) {
        const double s = double(load(gamma, o)) / std::sqrt(double(load(var, o)) + eps);
        const double b0 = conv_bias ? double(load(conv_bias, o)) : 0.0;
        scale[o] = float(s);
        bias[o] = float(double(load(beta, o)) + (b0 - double(load(mean, o))) * s);
    }
}

}  // namespace

const char* half_widening() {
#ifdef PYLOADER_F16C
    if (f16c_on.load(std::memory_order_relaxed)) return "f16c";
#endif
#ifdef __SSE2__
    return "sse2";
#else
    return "scalar";
#endif
}

const char* use_f16c(bool on) {
#ifdef PYLOADER_F16C
    f16c_on.store(on && f16c_cpu, std::memory_order_relaxed);
#else
    (void)on;
#endif
    return half_widening();
}

void oihw_to_hwio(const void* in, DType in_type, float* out, std::size_t O, std::size_t I, std::size_t H,
                  std::size_t W, const float* scale, std::size_t o_begin, std::size_t o_end) {
    if (in_type == DType::F32)
        transpose_impl(static_cast<const float*>(in), out, O, I, H * W, scale, o_begin, o_end);
    else
        transpose_impl(static_cast<const std::uint16_t*>(in), out, O, I, H * W, scale, o_begin, o_end);
}

void fold_batchnorm(DType in_type, const void* gamma, const void* beta, const void* mean, const void* var,
                    const void* conv_bias, double eps, float* scale, float* bias, std::size_t o_begin,
                    std::size_t o_end) {
    if (in_type == DType::F32) {
        using T = float;
        fold_impl(static_cast<const T*>(gamma), static_cast<const T*>(beta), static_cast<const T*>(mean),
                  static_cast<const T*>(var), static_cast<const T*>(conv_bias), eps, scale, bias, o_begin, o_end);
    } else {
        using T = std::uint16_t;
        fold_impl(static_cast<const T*>(gamma), static_cast<const T*>(beta), static_cast<const T*>(mean),
                  static_cast<const T*>(var), static_cast<const T*>(conv_bias), eps, scale, bias, o_begin, o_end);
    }
}

void to_float(const void* in, DType in_type, float* out, std::size_t n) {
    if (in_type == DType::F32) {
        std::memcpy(out, in, n * sizeof(float));
    } else {
        const auto* p = static_cast<const std::uint16_t*>(in);
        for (std::size_t i = 0; i < n; ++i) out[i] = load(p, i);
    }
}

void convs_to_hwio(const std::vector<ConvJob>& jobs, unsigned threads) {
    struct Item {
        std::size_t job, o_begin, o_end;
    };
    std::vector<Item> items;
    std::vector<std::size_t> scale_at(jobs.size());  // each normed job's O scales in `scales`
    std::size_t n_scales = 0;
    for (std::size_t k = 0; k < jobs.size(); ++k) {
        const ConvJob& j = jobs[k];
        if (j.gamma) scale_at[k] = n_scales, n_scales += j.O;
        const std::size_t step =
            std::size_t(kernel_chunk_rows(j.I * j.H * j.W * (j.kernel_type == DType::F16 ? 2 : 4)));
        for (std::size_t o = 0; o < j.O; o += step) items.push_back({k, o, std::min(j.O, o + step)});
    }
    std::vector<float> scales(n_scales);
    parallel_for(items.size(), threads, [&](std::size_t n) {
        const Item& it = items[n];
        const ConvJob& j = jobs[it.job];
        float* scale = nullptr;
        if (j.gamma) {
            scale = scales.data() + scale_at[it.job];
            fold_batchnorm(j.param_type, j.gamma, j.beta, j.mean, j.var, j.conv_bias, j.eps, scale, j.out_bias,
                           it.o_begin, it.o_end);
        } else if (j.conv_bias) {
            const std::size_t size = j.param_type == DType::F16 ? 2 : 4;
            to_float(static_cast<const unsigned char*>(j.conv_bias) + it.o_begin * size, j.param_type,
                     j.out_bias + it.o_begin, it.o_end - it.o_begin);
        }
        oihw_to_hwio(j.kernel, j.kernel_type, j.out_kernel, j.O, j.I, j.H, j.W, scale, it.o_begin, it.o_end);
    });
}

}  // namespace pyloader
