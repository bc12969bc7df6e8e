// CRC-32C (Castagnoli), as TensorFlow's tensor bundles and table files checksum their data.
// SSE4.2's crc32 instruction where the CPU has it (chosen at run time), else a slicing-by-8 table.
#pragma once
#include <cstddef>
#include <cstdint>

namespace pyloader {

// The CRC-32C of [data, data + n), continuing from `crc` (0 to start).
std::uint32_t crc32c_extend(std::uint32_t crc, const std::byte* data, std::size_t n);

// TensorFlow's (and LevelDB's) masked form of a CRC stored next to the data it covers.
inline std::uint32_t crc32c_mask(std::uint32_t crc) { return ((crc >> 15) | (crc << 17)) + 0xa282ead8u; }

}  // namespace pyloader
