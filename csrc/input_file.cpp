#include "input_file.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <string>
#include <unistd.h>

#include "checked.h"
#include "errors.h"
#include "parallel.h"

namespace pyloader {

void InputFile::read(std::uint64_t offset, void* dst, std::size_t length) const {
    if (!range_inside(offset, length, size_))
        throw FormatError("read of bytes " + std::to_string(offset) + "+" + std::to_string(length) + " past its " +
                          std::to_string(size_) + " bytes");
    auto* out = static_cast<char*>(dst);
    while (length > 0) {
        const std::size_t want = std::min<std::size_t>(length, std::size_t(1) << 30);
        const ssize_t got = ::pread(fd_, out, want, off_t(offset));
        if (got < 0) {
            if (errno == EINTR) continue;
            throw FormatError(std::string("cannot read: ") + + std::strerror(errno));
        }
        if (got == 0)
            throw FormatError("changed while reading (it ends at byte " + std::to_string(offset) + ", it had " +
                              std::to_string(size_) + " bytes when opened)");
        out += got;
        offset += std::uint64_t(got);
        length -= std::size_t(got);
    }
}

std::unique_ptr<Arena> InputFile::read_all(unsigned threads) const {
    constexpr std::uint64_t piece = std::uint64_t(4) << 20;
    auto arena = std::make_unique<Arena>();
    arena->reserve(size_);
    arena->allocate();
    parallel_for(std::size_t((size_ + piece - 1) / piece), threads, [&](std::size_t k) {
        const std::uint64_t at = std::uint64_t(k) * piece;
        read(at, arena->at(std::size_t(at)), std::size_t(std::min(piece, size_ - at)));
    });
    return arena;
}

}  // namespace pyloader
