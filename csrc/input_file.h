// An open regular file read with pread, never memory-mapped: the bytes a read copies out are memory of their
// own, so a file truncated, rewritten or deleted afterwards cannot take them away (the pages of a map past a
// truncation raise SIGBUS in whoever touches them), and a file that ends before the size it had when opened is
// a FormatError, not a crash. The caller opens the file, takes its size and checks afterwards that it did not
// change meanwhile (pyloader/boundary.py, unchanged_file).
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <utility>
#include <vector>

#include "arena.h"
#include "byte_source.h"

namespace pyloader {

class InputFile final : public ByteSource {
public:
    // `fd`: open for reading, not owned; `size`: its size when opened.
    InputFile(int fd, std::uint64_t size) : fd_(fd), size_(size) {}

    std::uint64_t size() const override { return size_; }

    // Copy bytes [offset, offset + length) into `dst`. FormatError "changed while reading" when the file ends
    // before them, "cannot read" on an I/O error (callers put the path in front). Safe from several threads.
    void read(std::uint64_t offset, void* dst, std::size_t length) const override;

    // The whole file in an arena of its own, read in pieces over up to `threads` threads (0: one per core).
    std::unique_ptr<Arena> read_all(unsigned threads) const;

    // Bytes [offset, offset + length) of each range into `image` at the same offsets (an arena of at least
    // size() bytes standing for the file), in pieces over up to `threads` threads.
    void read_ranges(const std::vector<std::pair<std::uint64_t, std::uint64_t>>& ranges, Arena& image,
                     unsigned threads) const;

private:
    int fd_;
    std::uint64_t size_;
};

}  // namespace pyloader
