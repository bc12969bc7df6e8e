#include "input_file.h"

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <string>
#include <unistd.h>

#include "checked.h"
#include "errors.h"
#include "parallel.h"

namespace pyloader {

void InputFile::read(std::uint64_t offset, void* dst, std::size_t length) const {
    check_read_inside(offset, length, size_);
    auto* out = static_cast<char*>(dst);
    while (length > 0) {
        const std::size_t want = std::min<std::size_t>(length, std::size_t(1) << 30);
        const ssize_t got = ::pread(fd_, out, want, off_t(offset));
        if (got < 0) {
            if (errno == EINTR) continue;
            throw FormatError(std::string("cannot read: ") + std::strerror(errno));
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
    auto arena = std::make_unique<Arena>();
    arena->reserve(size_);
    arena->allocate();
    read_ranges({{0, size_}}, *arena, threads);
    return arena;
}

namespace {

// The ranges cut into pieces of at most `piece` bytes, each checked inside a file of `size` bytes.
std::vector<std::pair<std::uint64_t, std::uint64_t>> pieces_of(
    const std::vector<std::pair<std::uint64_t, std::uint64_t>>& ranges, std::uint64_t size, std::uint64_t piece) {
    std::vector<std::pair<std::uint64_t, std::uint64_t>> pieces;  // (offset, length)
    for (const auto& [offset, length] : ranges) {
        check_read_inside(offset, length, size);
        for (std::uint64_t at = 0; at < length; at += piece) pieces.emplace_back(offset + at, std::min(piece, length - at));
    }
    return pieces;
}

}  // namespace

void InputFile::read_ranges(const std::vector<std::pair<std::uint64_t, std::uint64_t>>& ranges, Arena& image,
                            unsigned threads) const {
    if (image.size() < size_)
        throw FormatError("an image of " + std::to_string(image.size()) + " bytes for a file of " +
                          std::to_string(size_));
    const auto pieces = pieces_of(ranges, size_, std::uint64_t(4) << 20);
    parallel_for(pieces.size(), threads, [&](std::size_t k) {
        read(pieces[k].first, image.at(std::size_t(pieces[k].first)), std::size_t(pieces[k].second));
    });
}

FileImage::FileImage(std::uint64_t size) : size_(size) {
    arena_.reserve(size);
    arena_.allocate();
}

void FileImage::read(const InputFile& file, const std::vector<std::pair<std::uint64_t, std::uint64_t>>& ranges,
                     unsigned threads) {
    if (file.size() != size_)
        throw FormatError("an image of " + std::to_string(size_) + " bytes for a file of " +
                          std::to_string(file.size()));
    file.read_ranges(ranges, arena_, threads);
    read_.insert(read_.end(), ranges.begin(), ranges.end());
}

void FileImage::clear_rest() {
    std::sort(read_.begin(), read_.end());
    std::uint64_t from = 0;  // the first byte not known to be read
    auto clear = [&](std::uint64_t to) {  // [from, to): zeros
        if (to > from) zero_pages(arena_.at(std::size_t(from)), std::size_t(to - from));
    };
    for (const auto& [offset, length] : read_) {
        clear(offset);
        from = std::max(from, offset + length);
    }
    clear(size_);
}

bool FileImage::matches(const InputFile& file, const std::vector<std::pair<std::uint64_t, std::uint64_t>>& ranges,
                        unsigned threads) const {
    if (file.size() != size_) return false;
    constexpr std::uint64_t piece = std::uint64_t(1) << 20;  // stays in a core's cache between read and compare
    const auto pieces = pieces_of(ranges, size_, piece);
    std::atomic<bool> same{true};
    parallel_for(pieces.size(), threads, [&](std::size_t k) {
        if (!same.load(std::memory_order_relaxed)) return;
        thread_local std::vector<std::byte> buffer(piece);
        const auto [offset, length] = pieces[k];
        file.read(offset, buffer.data(), std::size_t(length));
        if (std::memcmp(buffer.data(), arena_.at(std::size_t(offset)), std::size_t(length)) != 0)
            same.store(false, std::memory_order_relaxed);
    });
    return same.load();
}

std::vector<std::pair<std::uint64_t, std::uint64_t>> FileImage::kept() const {
    std::vector<std::pair<std::uint64_t, std::uint64_t>> spans(read_), out;  // (offset, end), then (offset, length)
    for (auto& [offset, length] : spans) length += offset;
    std::sort(spans.begin(), spans.end());
    for (const auto& [lo, hi] : spans) {
        if (!out.empty() && lo <= out.back().second) out.back().second = std::max(out.back().second, hi);
        else if (hi > lo) out.emplace_back(lo, hi);
    }
    for (auto& [lo, hi] : out) hi -= lo;
    return out;
}

void FileImage::forget(const std::vector<std::pair<std::uint64_t, std::uint64_t>>& holes) {
    std::vector<std::pair<std::uint64_t, std::uint64_t>> cuts;  // (offset, end), sorted
    for (const auto& [offset, length] : holes)
        if (length && range_inside(offset, length, size_)) cuts.emplace_back(offset, offset + length);
    std::sort(cuts.begin(), cuts.end());
    std::vector<std::pair<std::uint64_t, std::uint64_t>> out;
    std::size_t k = 0;
    for (auto [lo, length] : kept()) {  // sorted by offset: the cuts ending before it stay behind
        const std::uint64_t hi = lo + length;
        while (k < cuts.size() && cuts[k].second <= lo) ++k;
        for (std::size_t j = k; j < cuts.size() && cuts[j].first < hi && lo < hi; ++j) {
            if (cuts[j].first > lo) out.emplace_back(lo, cuts[j].first - lo);
            const std::uint64_t from = std::max(lo, cuts[j].first), to = std::min(hi, cuts[j].second);
            if (to > from) std::memset(arena_.at(std::size_t(from)), 0, std::size_t(to - from));  // as never read
            lo = std::max(lo, cuts[j].second);
        }
        if (lo < hi) out.emplace_back(lo, hi - lo);
    }
    read_ = std::move(out);
}

}  // namespace pyloader
