// One 64-byte aligned allocation that holds many output arrays, each starting on a 64-byte boundary.
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <new>
#include <sys/mman.h>
#include <unistd.h>

#include "checked.h"

namespace pyloader {

// Return the pages wholly inside [p, p + n) to the system. Anonymous memory reads back as zeros afterwards,
// a private file map re-reads the file: only for memory whose contents are no longer needed.
inline void discard_pages(const void* p, std::size_t n) {
    const std::uintptr_t page = std::uintptr_t(::sysconf(_SC_PAGESIZE));
    const std::uintptr_t begin = (std::uintptr_t(p) + page - 1) / page * page;
    const std::uintptr_t end = (std::uintptr_t(p) + n) / page * page;
    if (end > begin) ::madvise(reinterpret_cast<void*>(begin), end - begin, MADV_DONTNEED);
}

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
    // Allocate once all reservations are made: anonymous pages, transparent huge pages where the kernel
    // offers them (512x fewer page faults than 4 KiB pages; faults cost more than the transform). Pages
    // are not touched here: the worker that writes a region takes its faults, spread over the threads.
    void allocate() {
        if (size_ == 0) return;
        void* p = ::mmap(nullptr, size_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED) throw std::bad_alloc();
#ifdef MADV_HUGEPAGE
        ::madvise(p, size_, MADV_HUGEPAGE);
#endif
        base_ = static_cast<std::byte*>(p);
    }
    std::byte* at(std::size_t offset) const { return base_ + offset; }
    std::size_t size() const { return size_; }

    Arena() = default;
    ~Arena() {
        if (base_ != nullptr) ::munmap(base_, size_);
    }
    Arena(const Arena&) = delete;
    Arena& operator=(const Arena&) = delete;

private:
    std::byte* base_ = nullptr;
    std::size_t size_ = 0;
};

}  // namespace pyloader
