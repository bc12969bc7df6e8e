// Darknet .weights reader: header, size validation against the cfg's layer plan, and per-layer arrays in
// Keras layout. Takes raw bytes; knows nothing of Python. The format: docs/FORMATS.md, section 1 (Darknet .weights).
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "arena.h"
#include "byte_source.h"

namespace pyloader {

struct DarknetHeader {
    std::int32_t major = 0, minor = 0, revision = 0;
    std::uint64_t seen = 0;
    std::size_t bytes = 0;  // 16 or 20
};

// What the cfg says one layer stores, in file order. Layers that store nothing are not listed.
struct DarknetLayerPlan {
    enum class Kind { Convolutional, Floats };
    Kind kind = Kind::Convolutional;
    std::string label;  // "layer 12 [convolutional] (yolov4.cfg line 145)", used in messages
    // Convolutional: filters, input channels per group, kernel height/width, batch_normalize.
    std::uint64_t filters = 0, channels_per_group = 0, kh = 0, kw = 0;
    bool batch_normalize = false;
    // Floats: a plain float array (shortcut weights), returned as is.
    std::uint64_t count = 0;
};

// One output array: float32, C order, in the result's arena.
struct DarknetArray {
    std::string role;  // kernel, bias, gamma, beta, moving_mean, moving_variance, weights
    std::vector<std::size_t> shape;
    const float* data = nullptr;
};

struct DarknetResult {
    DarknetHeader header;
    std::unique_ptr<Arena> arena;
    std::vector<std::vector<DarknetArray>> layers;  // parallel to the plan
};

DarknetHeader parse_darknet_header(const std::byte* data, std::size_t size);

// Validates the whole source (a file read with pread, or bytes in memory) against the plan before reading any
// tensor, then reads and transforms in parallel over up to `threads` threads (0: one per core): each piece of
// about 1 MiB of kernel rows is copied once from `src` into a per-thread buffer and written transposed from
// there into the arena, one pass over the output. Convolutional kernels come out HWIO (kh, kw,
// channels_per_group, filters). With fold_bn, batch-normalized layers give the folded kernel and bias;
// otherwise kernel, bias (conv bias or BN beta) and, with BN, gamma, beta, moving_mean, moving_variance. Every
// array lies in the result's arena.
DarknetResult read_darknet(const ByteSource& src, const std::vector<DarknetLayerPlan>& plan, bool fold_bn,
                           double eps, unsigned threads);

}  // namespace pyloader
