// libFuzzer: the pickle opcode machine on arbitrary bytes. It must never crash, read outside the input or
// overflow (ASan+UBSan build), and its program must be well formed: every reference points to an earlier node.
#include <cstddef>
#include <cstdint>
#include <cstdlib>

#include "../csrc/pickle_vm.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
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
