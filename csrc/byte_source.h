// Where a reader takes its bytes from, piece by piece: a file read with pread (InputFile, input_file.h) or bytes
// already in memory (MemorySource). A reader that needs only some of a file (the zip directory, then the records
// it uses) reads just those.
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>

#include "checked.h"
#include "errors.h"

namespace pyloader {

// FormatError unless bytes [offset, offset + length) lie inside a source of `size` bytes.
inline void check_read_inside(std::uint64_t offset, std::uint64_t length, std::uint64_t size) {
    if (!range_inside(offset, length, size))
        throw FormatError("read of bytes " + std::to_string(offset) + "+" + std::to_string(length) + " past its " +
                          std::to_string(size) + " bytes");
}

class ByteSource {
public:
    virtual ~ByteSource() = default;
    virtual std::uint64_t size() const = 0;
    // Copy bytes [offset, offset + length) into `dst`; FormatError when they are not all there.
    virtual void read(std::uint64_t offset, void* dst, std::size_t length) const = 0;
};

class MemorySource final : public ByteSource {
public:
    MemorySource(const std::byte* data, std::size_t size) : data_(data), size_(size) {}
    std::uint64_t size() const override { return size_; }
    void read(std::uint64_t offset, void* dst, std::size_t length) const override {
        check_read_inside(offset, length, size_);
        if (length) std::memcpy(dst, data_ + offset, length);
    }

private:
    const std::byte* data_;
    std::size_t size_;
};

}  // namespace pyloader
