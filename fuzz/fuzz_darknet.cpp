// libFuzzer: the Darknet .weights reader. The first bytes of the input make a layer plan (as the cfg parser
// would), the rest is the .weights file.
#include <cstddef>
#include <cstdint>
#include <vector>

#include "../csrc/darknet.h"
#include "../csrc/errors.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (size < 1) return 0;
    const unsigned layers = data[0] % 5;
    std::size_t at = 1;
    std::vector<pyloader::DarknetLayerPlan> plan;
    for (unsigned k = 0; k < layers && at + 4 <= size; ++k, at += 4) {
        pyloader::DarknetLayerPlan L;
        L.label = "layer";
        if (data[at] & 1) {
            L.kind = pyloader::DarknetLayerPlan::Kind::Convolutional;
            L.filters = 1 + data[at + 1] % 16;
            L.channels_per_group = 1 + data[at + 2] % 8;
            L.kh = L.kw = 1 + (data[at + 3] % 3) * 2;
            L.batch_normalize = data[at] & 2;
        } else {
            L.kind = pyloader::DarknetLayerPlan::Kind::Floats;
            L.count = data[at + 1] * 256u + data[at + 2];
        }
        plan.push_back(L);
    }
    const auto* p = reinterpret_cast<const std::byte*>(data + at);
    try {
        pyloader::parse_darknet_header(p, size - at);
    } catch (const pyloader::FormatError&) {
    }
    try {
        pyloader::read_darknet(pyloader::MemorySource(p, size - at), plan, data[0] & 0x80, 1e-5, 1);
    } catch (const pyloader::FormatError&) {
    }
    return 0;
}
