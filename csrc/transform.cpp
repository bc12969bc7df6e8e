#include "transform.h"

#include <cmath>
#include <cstring>

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

// Blocked over output channels: for each block of kBlock output channels, walk the input rows of those
// channels in step (kBlock sequential read streams) and write kBlock contiguous floats per (h, w, i):
// one cache line per write when the block is aligned.
template <typename T>
void transpose_impl(const T* in, float* out, std::size_t O, std::size_t I, std::size_t HW, const float* scale,
                    std::size_t o_begin, std::size_t o_end) {
    constexpr std::size_t kBlock = 16;
    const std::size_t IHW = I * HW;
    for (std::size_t ob = o_begin; ob < o_end; ob += kBlock) {
        const std::size_t n = (o_end - ob < kBlock) ? (o_end - ob) : kBlock;
        float s[kBlock];
        for (std::size_t k = 0; k < n; ++k) s[k] = scale ? scale[ob + k] : 1.0f;
        const T* rows = in + ob * IHW;
        if (n == kBlock) {
            for (std::size_t i = 0; i < I; ++i) {
                for (std::size_t hw = 0; hw < HW; ++hw) {
                    const std::size_t src = i * HW + hw;
                    float* dst = out + (hw * I + i) * O + ob;
                    for (std::size_t k = 0; k < kBlock; ++k) dst[k] = load(rows, k * IHW + src) * s[k];
                }
            }
        } else {
            for (std::size_t i = 0; i < I; ++i) {
                for (std::size_t hw = 0; hw < HW; ++hw) {
                    const std::size_t src = i * HW + hw;
                    float* dst = out + (hw * I + i) * O + ob;
                    for (std::size_t k = 0; k < n; ++k) dst[k] = load(rows, k * IHW + src) * s[k];
                }
            }
        }
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

}  // namespace pyloader
