// libFuzzer: the pickle opcode machine on arbitrary bytes. It must never crash, read outside the input or
// overflow (ASan+UBSan build), and its program must be well formed: every reference points to an earlier node.
// The same bytes, read as numbers, also check strided_view_fits (the binding's tensor-view fast path) against
// the same conditions computed exactly in 128-bit arithmetic.
#include <cstddef>
#include <cstdint>
#include <cstdlib>

#include "../csrc/pickle_vm.h"

namespace {

using u128 = unsigned __int128;
constexpr u128 kCap = u128(1) << 120;  // saturate: every threshold below is at most 2^64
u128 mul(u128 a, u128 b) { return (a && b > kCap / a) ? kCap : a * b; }
u128 add(u128 a, u128 b) { return a + b > kCap ? kCap : a + b; }

// A number from the input: the first byte picks the width (1, 2, 4 or 8 bytes), so small values are common.
std::uint64_t number(const std::uint8_t*& p, const std::uint8_t* end) {
    if (p == end) return 0;
    const unsigned width = 1u << (*p++ & 3);
    std::uint64_t v = 0;
    for (unsigned k = 0; k < width && p != end; ++k) v |= std::uint64_t(*p++) << (8 * k);
    return v;
}

void check_strided_view(const std::uint8_t* p, const std::uint8_t* end) {
    const std::size_t ndim = std::size_t(number(p, end) % 6);
    const std::uint64_t numel = number(p, end), itemsize = number(p, end) % 9, offset = number(p, end);
    std::uint64_t size[8], stride[8];
    for (std::size_t k = 0; k < ndim; ++k) {
        size[k] = number(p, end);
        stride[k] = number(p, end);
    }
    const u128 limit = u128(1) << 63;
    bool want = itemsize > 0 && offset < limit && numel < limit;
    u128 count = 1, distinct = 1, last = offset;
    for (std::size_t k = 0; k < ndim; ++k) {
        want = want && size[k] > 0 && size[k] < limit && stride[k] < limit && mul(stride[k], itemsize) < limit;
        count = mul(count, size[k]);
        if (stride[k]) distinct = mul(distinct, size[k]);
        last = add(last, mul(size[k] ? size[k] - 1 : 0, stride[k]));
    }
    want = want && last < numel && distinct <= u128(numel) - offset && mul(count, itemsize) < limit &&
           mul(add(last, 1), itemsize) < limit;
    if (pyloader::strided_view_fits(offset, size, stride, ndim, numel, itemsize) != want) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    check_strided_view(data, data + size);
    pyloader::PickleLimits limits;
    limits.max_depth = 200;
    const auto P = pyloader::run_pickle(reinterpret_cast<const std::byte*>(data), size, limits);
    for (std::size_t i = 4; i < P.events.size(); ++i) {
        const auto& e = P.events[i];
        if (e.pos >= size) std::abort();
        if (e.kind >= pyloader::PickleKind::Tuple) {
            if (e.x + e.n > P.refs.size()) std::abort();
            for (std::uint32_t k = 0; k < e.n; ++k)
                if (P.refs[e.x + k] >= i) std::abort();
        } else if (e.kind >= pyloader::PickleKind::BigInt && e.kind <= pyloader::PickleKind::TextLine) {
            if (e.x > size || e.n > size - e.x) std::abort();
        }
    }
    if (!P.failed && (P.root >= P.events.size() || P.end > size || P.end == 0)) std::abort();
    if (P.events.size() > 2 * size + 16) std::abort();
    return 0;
}
