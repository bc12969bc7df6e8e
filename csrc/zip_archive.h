// A read-only ZIP reader for PyTorch checkpoints (torch >= 1.6 zip format) and the storage table of the
// legacy (pre-1.6) format. Pure C++: takes raw bytes or a ByteSource (a file read with pread: only the end
// record, the central directory and the local headers are read), knows nothing of Python.
//
// Only what a torch archive needs: the central directory (ZIP64 included), stored entries (method 0).
// Sizes and offsets come from the central directory (local headers of data-descriptor archives say 0);
// the data start comes from the local header's own name/extra lengths (torch pads the local extra field
// to align records to 64 bytes). Every offset and size is validated against the buffer, overflow-checked.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

#include "byte_source.h"

namespace pyloader {

struct ZipEntry {
    std::string name;
    std::uint16_t method = 0;          // 0 = stored
    std::uint64_t compressed_size = 0;
    std::uint64_t size = 0;            // uncompressed
    std::uint64_t local_header_offset = 0;
    std::uint64_t data_offset = 0;     // valid only for stored entries (resolved and validated)
};

// Parse the central directory. Throws FormatError (message names the entry and expected vs actual)
// for a truncated archive, a lying directory, or an entry whose data lies outside the buffer.
// Compressed entries are listed (method != 0) with data_offset 0; callers refuse them when they use them.
std::vector<ZipEntry> read_zip_directory(const ByteSource& src);
std::vector<ZipEntry> read_zip_directory(const std::byte* data, std::size_t size);

// The records of a torch archive: `<prefix>/data.pkl` and `<prefix>/data/<key>`.
struct TorchZipIndex {
    std::string prefix;
    std::uint64_t pickle_offset = 0, pickle_size = 0;
    // key -> (offset, size) of `<prefix>/data/<key>`
    std::unordered_map<std::string, std::pair<std::uint64_t, std::uint64_t>> records;
    std::vector<ZipEntry> entries;
};

// Finds exactly one `*/data.pkl` at the top folder, requires it and every `<prefix>/data/*` record to be
// stored (a compressed one is a FormatError naming it).
TorchZipIndex index_torch_zip(const ByteSource& src);
TorchZipIndex index_torch_zip(const std::byte* data, std::size_t size);

// Legacy format: after the pickles, for each storage key in order, an int64 element count then
// count * element_size raw bytes. Returns (offset, numel) per storage; validates every size.
struct LegacyStorage {
    std::uint64_t offset = 0, numel = 0;
};
std::vector<LegacyStorage> locate_legacy_storages(const std::byte* data, std::size_t size, std::uint64_t start,
                                                  const std::vector<std::uint64_t>& element_sizes);

}  // namespace pyloader
