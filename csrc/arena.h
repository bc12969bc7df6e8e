// One 64-byte aligned allocation that holds many output arrays, each starting on a 64-byte boundary.
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <new>

#include "checked.h"

namespace pyloader {

class Arena {
public:
    static constexpr std::size_t kAlign = 64;

    // Reserve `bytes` (rounded up to kAlign) and return the offset of the reservation.
    std::size_t reserve(std::uint64_t bytes) {
        std::uint64_t rounded = checked_add(bytes, kAlign - 1, "arena size") & ~std::uint64_t(kAlign - 1);
        std::size_t at = size_;
        size_ = checked_add(size_, rounded, "arena size");
        return at;
    }
    // Allocate once all reservations are made. Pages are not touched here: the worker that writes a
    // region takes its page faults, so faulting is spread over the threads.
    void allocate() {
        if (size_ == 0) return;
        base_ = static_cast<std::byte*>(std::aligned_alloc(kAlign, size_));
        if (base_ == nullptr) throw std::bad_alloc();
    }
    std::byte* at(std::size_t offset) const { return base_ + offset; }
    std::size_t size() const { return size_; }

    Arena() = default;
    ~Arena() { std::free(base_); }
    Arena(const Arena&) = delete;
    Arena& operator=(const Arena&) = delete;

private:
    std::byte* base_ = nullptr;
    std::size_t size_ = 0;
};

}  // namespace pyloader
