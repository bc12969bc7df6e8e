// The .weights layout this reads (header, blocks, checks): docs/FORMATS.md, section 1 (Darknet .weights).
#include "darknet.h"

#include <algorithm>
#include <cstring>
#include <sstream>

#include "checked.h"
#include "errors.h"
#include "parallel.h"
#include "transform.h"

namespace pyloader {

namespace {

static_assert(sizeof(float) == 4, "float must be IEEE binary32");

bool little_endian() {
    const std::uint16_t one = 1;
    std::uint8_t first;
    std::memcpy(&first, &one, 1);
    return first == 1;
}

std::int32_t read_i32(const std::byte* p) {
    std::int32_t v;
    std::memcpy(&v, p, 4);
    return v;
}

// Floats a layer occupies in the file (checked).
std::uint64_t layer_floats(const DarknetLayerPlan& L) {
    if (L.kind == DarknetLayerPlan::Kind::Floats) return L.count;
    std::uint64_t k = checked_mul(L.filters, L.channels_per_group, "kernel size");
    k = checked_mul(k, L.kh, "kernel size");
    k = checked_mul(k, L.kw, "kernel size");
    const std::uint64_t vectors = checked_mul(L.filters, L.batch_normalize ? 4 : 1, "bias size");
    return checked_add(k, vectors, "layer size");
}

// A unit of parallel work: output channels [o_begin, o_end) of one convolutional layer.
struct Chunk {
    std::size_t layer;
    std::size_t o_begin, o_end;
};

}  // namespace

DarknetHeader parse_darknet_header(const std::byte* data, std::size_t size) {
    if (size < 16) {
        std::ostringstream m;
        m << "file is " << size << " bytes, too short for a darknet header (expected 16 or 20 bytes)";
        throw FormatError(m.str());
    }
    DarknetHeader h;
    h.major = read_i32(data);
    h.minor = read_i32(data + 4);
    h.revision = read_i32(data + 8);
    auto bad = [](std::int32_t v) { return v < 0 || v >= 1000; };
    if (bad(h.major) || bad(h.minor) || bad(h.revision)) {
        std::ostringstream m;
        m << "bad darknet header: version " << h.major << "." << h.minor << "." << h.revision
          << " (expected each part in 0..999, e.g. 0.2.5)";
        if (std::memcmp(data, "PK\x03\x04", 4) == 0) m << "; the file is a zip archive (a PyTorch .pt?)";
        throw FormatError(m.str());
    }
    if (h.major * 10 + h.minor >= 2) {
        if (size < 20) {
            std::ostringstream m;
            m << "file is " << size << " bytes, too short for a darknet " << h.major << "." << h.minor
              << " header (expected 20 bytes)";
            throw FormatError(m.str());
        }
        std::memcpy(&h.seen, data + 12, 8);
        h.bytes = 20;
    } else {
        std::uint32_t seen32;
        std::memcpy(&seen32, data + 12, 4);
        h.seen = seen32;
        h.bytes = 16;
    }
    return h;
}

DarknetResult read_darknet(const ByteSource& src, const std::vector<DarknetLayerPlan>& plan, bool fold_bn,
                           double eps, unsigned threads) {
    if (!little_endian()) throw FormatError("darknet weights are little-endian; big-endian hosts are not supported");
    DarknetResult result;
    const std::uint64_t size = src.size();
    std::byte head[20];
    const std::size_t head_size = std::size_t(std::min<std::uint64_t>(size, sizeof head));
    src.read(0, head, head_size);
    result.header = parse_darknet_header(head, head_size);

    // 1. Offsets of every layer, and the total the cfg requires, before touching any tensor.
    std::vector<std::uint64_t> offsets(plan.size());
    std::uint64_t pos = result.header.bytes;
    for (std::size_t i = 0; i < plan.size(); ++i) {
        const auto& L = plan[i];
        if (L.kind == DarknetLayerPlan::Kind::Convolutional &&
            (L.filters == 0 || L.channels_per_group == 0 || L.kh == 0 || L.kw == 0))
            throw FormatError(L.label + ": zero-sized convolution in the layer plan");
        offsets[i] = pos;
        pos = checked_add(pos, checked_mul(layer_floats(L), 4, "layer bytes"), "file size");
    }
    const std::uint64_t expected = pos;
    if (expected != size) {
        std::ostringstream m;
        m << "file is " << size << " bytes but the cfg's " << plan.size() << " weighted layers need " << expected
          << " (header " << result.header.bytes << " + " << (expected - result.header.bytes) << " bytes of float32)";
        if (size < expected) {
            for (std::size_t i = 0; i < plan.size(); ++i) {
                const std::uint64_t end = offsets[i] + layer_floats(plan[i]) * 4;
                if (end > size) {
                    m << "; the file ends inside " << plan[i].label << ", which needs bytes " << offsets[i] << ".."
                      << end << " (" << (end - size) << " bytes missing in that layer)";
                    break;
                }
            }
        } else {
            m << "; " << (size - expected) << " bytes (" << (size - expected) / 4.0
              << " floats) are left after the last weighted layer"
              << (plan.empty() ? std::string() : ", " + plan.back().label)
              << " (weights of a different cfg?)";
        }
        throw FormatError(m.str());
    }

    // 2. The outputs, all in one arena: each layer's vectors as the file stores them (biases; with BN also
    // scales, rolling mean, rolling variance: the arrays without fold_bn, what folding reads with it), the HWIO
    // kernel, and with fold_bn the folded scale and bias.
    auto arena = std::make_unique<Arena>();
    struct Out {
        std::size_t vectors = 0, kernel = 0, scale = 0, bias = 0;
        std::uint64_t vector_floats = 0;
        bool fold = false;
    };
    std::vector<Out> outs(plan.size());
    for (std::size_t i = 0; i < plan.size(); ++i) {
        const auto& L = plan[i];
        Out& o = outs[i];
        if (L.kind == DarknetLayerPlan::Kind::Floats) {
            o.vector_floats = L.count;
            o.vectors = arena->reserve(L.count * 4);
            continue;
        }
        const std::uint64_t n = L.filters;
        o.vector_floats = n * (L.batch_normalize ? 4 : 1);
        o.vectors = arena->reserve(o.vector_floats * 4);
        o.kernel = arena->reserve(checked_mul(layer_floats(L) - o.vector_floats, 4, "kernel"));
        o.fold = fold_bn && L.batch_normalize;
        if (o.fold) {
            o.scale = arena->reserve(n * 4);
            o.bias = arena->reserve(n * 4);
        }
    }
    arena->allocate();
    auto floats = [&](std::size_t offset) { return reinterpret_cast<float*>(arena->at(offset)); };
    for (std::size_t i = 0; i < plan.size(); ++i)
        src.read(offsets[i], floats(outs[i].vectors), std::size_t(outs[i].vector_floats * 4));

    // 3. Work items of about kernel_chunk_rows' size each (large layers split by output channel blocks). Each
    // reads its OIHW rows into this thread's buffer (it stays in cache) and writes them transposed into the arena.
    std::vector<Chunk> chunks;
    for (std::size_t i = 0; i < plan.size(); ++i) {
        const auto& L = plan[i];
        if (L.kind != DarknetLayerPlan::Kind::Convolutional) continue;
        const std::uint64_t step = kernel_chunk_rows(L.channels_per_group * L.kh * L.kw * 4);
        for (std::uint64_t o = 0; o < L.filters; o += step)
            chunks.push_back({i, std::size_t(o), std::size_t(std::min<std::uint64_t>(o + step, L.filters))});
    }
    parallel_for(chunks.size(), threads, [&](std::size_t c) {
        thread_local std::vector<float> rows;
        const Chunk& ch = chunks[c];
        const auto& L = plan[ch.layer];
        const Out& o = outs[ch.layer];
        const std::size_t n = std::size_t(L.filters), row = std::size_t(L.channels_per_group * L.kh * L.kw);
        rows.resize((ch.o_end - ch.o_begin) * row);
        src.read(offsets[ch.layer] + (o.vector_floats + ch.o_begin * row) * 4, rows.data(), rows.size() * 4);
        const float* scale = nullptr;
        if (o.fold) {
            const float* v = floats(o.vectors);  // biases, scales, rolling mean, rolling variance
            fold_batchnorm(DType::F32, v + n, v, v + 2 * n, v + 3 * n, nullptr, eps, floats(o.scale), floats(o.bias),
                           ch.o_begin, ch.o_end);
            scale = floats(o.scale) + ch.o_begin;
        }
        // rows holds output channels [o_begin, o_end): transposed as channels [0, o_end - o_begin) of a kernel
        // that starts at output column o_begin
        oihw_to_hwio(rows.data(), DType::F32, floats(o.kernel) + ch.o_begin, n, L.channels_per_group, L.kh, L.kw,
                     scale, 0, ch.o_end - ch.o_begin);
    });

    // 4. Describe the arrays.
    result.layers.resize(plan.size());
    for (std::size_t i = 0; i < plan.size(); ++i) {
        const auto& L = plan[i];
        auto& arrays = result.layers[i];
        const float* v = floats(outs[i].vectors);
        if (L.kind == DarknetLayerPlan::Kind::Floats) {
            arrays.push_back({"weights", {std::size_t(L.count)}, v});
            continue;
        }
        const std::size_t n = std::size_t(L.filters);
        arrays.push_back(
            {"kernel", {std::size_t(L.kh), std::size_t(L.kw), std::size_t(L.channels_per_group), n},
             floats(outs[i].kernel)});
        if (!L.batch_normalize) {
            arrays.push_back({"bias", {n}, v});
        } else if (outs[i].fold) {
            arrays.push_back({"bias", {n}, floats(outs[i].bias)});
        } else {
            arrays.push_back({"gamma", {n}, v + n});
            arrays.push_back({"beta", {n}, v});
            arrays.push_back({"moving_mean", {n}, v + 2 * n});
            arrays.push_back({"moving_variance", {n}, v + 3 * n});
        }
    }
    result.arena = std::move(arena);
    return result;
}

}  // namespace pyloader
