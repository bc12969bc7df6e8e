// libFuzzer: the zip reader (torch zip index, central directory) and the legacy storage locator.
#include <cstddef>
#include <cstdint>
#include <vector>

#include "../csrc/errors.h"
#include "../csrc/zip_archive.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const auto* p = reinterpret_cast<const std::byte*>(data);
    try {
        pyloader::read_zip_directory(p, size);
    } catch (const pyloader::FormatError&) {
    }
    try {
        pyloader::index_torch_zip(p, size);
    } catch (const pyloader::FormatError&) {
    }
    if (size > 2) {
        // The first byte picks a start, the second the element sizes of up to 8 storages.
        const std::uint64_t start = data[0] % (size + 1);
        std::vector<std::uint64_t> sizes;
        for (unsigned k = 0; k < (data[1] & 7u); ++k) sizes.push_back(std::uint64_t(1) << ((data[1] >> 3) % 4));
        try {
            pyloader::locate_legacy_storages(p, size, start, sizes);
        } catch (const pyloader::FormatError&) {
        }
    }
    return 0;
}
