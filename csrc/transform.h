// The two transforms every converter needs: OIHW -> HWIO kernel layout, and batch-norm folding.
// Pure functions over raw buffers; the callers validate every size first.
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

namespace pyloader {

enum class DType { F32, F16 };

// Convert one IEEE half (bit pattern) to float.
float half_to_float(std::uint16_t h);

// out[h][w][i][o] = in[o][i][h][w] * (scale ? scale[o] : 1), writing only output channels
// [o_begin, o_end). `in` holds O*I*H*W elements of `in_type` (fp16 is widened to fp32);
// `out` holds H*W*I*O floats. `scale` has O floats or is null.
void oihw_to_hwio(const void* in, DType in_type, float* out, std::size_t O, std::size_t I, std::size_t H,
                  std::size_t W, const float* scale, std::size_t o_begin, std::size_t o_end);

// How oihw_to_hwio widens float16: "f16c" (x86 builds, where the CPU has F16C and AVX2: checked once at load),
// else "sse2" (x86) or "scalar"; every one gives the same bits (numpy's astype(float32), NaN payloads kept).
const char* half_widening();
// Turn the F16C widening off for the process (on: back on where the CPU has it), for tests and benchmarks of the
// other; returns half_widening() after.
const char* use_f16c(bool on);

// How many output channels (a multiple of 16, at least 16) one unit of parallel work of oihw_to_hwio takes when
// each channel's input row has `row_bytes` bytes: about 1 MiB of input, which stays in a core's cache while it
// is transposed; the output rows are written in runs of that many channels.
inline std::uint64_t kernel_chunk_rows(std::uint64_t row_bytes) {
    const std::uint64_t rows = (std::uint64_t(1) << 20) / (row_bytes ? row_bytes : 1);
    return rows < 16 ? 16 : rows / 16 * 16;
}

// Batch-norm folding for channels [o_begin, o_end):
// scale[o] = gamma[o] / sqrt(var[o] + eps); bias[o] = beta[o] + (conv_bias ? conv_bias[o] : 0) * scale[o]
//            - mean[o] * scale[o].
// Parameters are `in_type` arrays of at least o_end elements; conv_bias may be null.
void fold_batchnorm(DType in_type, const void* gamma, const void* beta, const void* mean, const void* var,
                    const void* conv_bias, double eps, float* scale, float* bias, std::size_t o_begin,
                    std::size_t o_end);

// Widen (or copy) `n` elements to float32.
void to_float(const void* in, DType in_type, float* out, std::size_t n);

// One convolution of a checkpoint: its OIHW kernel, the batch norm folded into it (gamma null: none) and its own
// bias (null: none); written: the HWIO kernel, scaled by the norm, and the bias (folded, or the conv's widened)
// when there is a norm or a conv bias. The norm's four arrays and the conv bias are `param_type`, O elements each.
struct ConvJob {
    const void* kernel = nullptr;
    DType kernel_type = DType::F32;
    std::size_t O = 0, I = 0, H = 0, W = 0;
    DType param_type = DType::F32;
    const void *gamma = nullptr, *beta = nullptr, *mean = nullptr, *var = nullptr, *conv_bias = nullptr;
    double eps = 0;
    float* out_kernel = nullptr;  // H*W*I*O floats
    float* out_bias = nullptr;    // O floats; null only when there is neither norm nor conv bias
};

// Every job of a checkpoint in one pass over up to `threads` threads (0: one per core): the work is the jobs' runs
// of output channels (kernel_chunk_rows), each folded, widened and transposed by whichever thread takes it, so a
// checkpoint's hundreds of small kernels cost one thread start, not one each.
void convs_to_hwio(const std::vector<ConvJob>& jobs, unsigned threads);

}  // namespace pyloader
