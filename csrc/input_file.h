// An open regular file read with pread, never memory-mapped: the bytes a read copies out are memory of their
// own, so a file truncated, rewritten or deleted afterwards cannot take them away (the pages of a map past a
// truncation raise SIGBUS in whoever touches them), and a file that ends before the size it had when opened is
// a FormatError, not a crash. The caller opens the file, takes its size and checks afterwards that it did not
// change meanwhile (pyloader/boundary.py, unchanged_file).
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstring>
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

// An image of a file of which only some ranges are read: an arena of the file's size (from the arena pool, so
// until clear_rest it may hold an earlier read's bytes where nothing was read), the ranges read into it at their
// own offsets, and clear_rest, which makes every other byte zero (whole pages given back to the system).
class FileImage {
public:
    explicit FileImage(std::uint64_t size);
    std::uint64_t size() const { return size_; }
    const std::byte* data() const { return arena_.at(0); }
    // InputFile::read_ranges, the ranges kept as read.
    void read(const InputFile& file, const std::vector<std::pair<std::uint64_t, std::uint64_t>>& ranges,
              unsigned threads);
    void clear_rest();
    // The bytes read so far less the holes' ((offset, length) each): those are made zero again, as never read.
    void forget(const std::vector<std::pair<std::uint64_t, std::uint64_t>>& holes);
    // The (offset, length) ranges read and kept, sorted and merged.
    std::vector<std::pair<std::uint64_t, std::uint64_t>> kept() const;
    // A ByteSource over `file` that keeps in this image every byte read through it (the zip directory's reads).
    class Keeping final : public ByteSource {
    public:
        Keeping(FileImage& image, const InputFile& file) : image_(image), file_(file) {}
        std::uint64_t size() const override { return file_.size(); }
        void read(std::uint64_t offset, void* dst, std::size_t length) const override {
            file_.read(offset, image_.arena_.at(std::size_t(offset)), length);
            std::memcpy(dst, image_.arena_.at(std::size_t(offset)), length);
            image_.read_.emplace_back(offset, length);
        }

    private:
        FileImage& image_;
        const InputFile& file_;
    };
    // Whether the file's bytes of every range equal the image's (read in pieces over up to `threads` threads into
    // buffers of their own, compared as they come; the image is not written).
    bool matches(const InputFile& file, const std::vector<std::pair<std::uint64_t, std::uint64_t>>& ranges,
                 unsigned threads) const;

private:
    Arena arena_;
    std::uint64_t size_;
    std::vector<std::pair<std::uint64_t, std::uint64_t>> read_;
};

}  // namespace pyloader
