// One 64-byte aligned allocation that holds many output arrays, each starting on a 64-byte boundary.
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <mutex>
#include <utility>
#include <vector>
#include <new>
#include <sys/mman.h>
#include <unistd.h>

#include "checked.h"

namespace pyloader {

// The whole pages inside [p, p + n): (begin, end) addresses, begin >= end when there are none.
inline std::pair<std::uintptr_t, std::uintptr_t> whole_pages(const void* p, std::size_t n) {
    const std::uintptr_t page = std::uintptr_t(::sysconf(_SC_PAGESIZE));
    return {(std::uintptr_t(p) + page - 1) / page * page, (std::uintptr_t(p) + n) / page * page};
}

// Return the pages wholly inside [p, p + n) to the system. Anonymous memory reads back as zeros afterwards,
// a private file map re-reads the file: only for memory whose contents are no longer needed.
inline void discard_pages(const void* p, std::size_t n) {
    const auto [begin, end] = whole_pages(p, n);
    if (end > begin) ::madvise(reinterpret_cast<void*>(begin), end - begin, MADV_DONTNEED);
}

// Make the anonymous memory [p, p + n) zero: its whole pages given back to the system (they read back as
// zeros), the partial pages at either end cleared.
inline void zero_pages(std::byte* p, std::size_t n) {
    const auto [begin, end] = whole_pages(p, n);
    if (end <= begin) {
        std::memset(p, 0, n);
        return;
    }
    discard_pages(p, n);
    std::memset(p, 0, begin - std::uintptr_t(p));
    std::memset(reinterpret_cast<std::byte*>(end), 0, std::uintptr_t(p) + n - end);
}

// Freed arenas kept for the next reads: a read into memory that is already faulted in skips the page faults, and
// with transparent huge pages the kernel's direct compaction for fresh 2 MiB pages, which made the first read
// after another one 3-10x slower than the next (fresh memory is expensive on a VM that hands freed pages back
// to its host). Kept: the most recently freed mappings, at most kBudget bytes together (or the one newest
// mapping when it alone is larger) and kMaxKept of them; the oldest go first. A read takes the smallest kept
// mapping that fits (not more than about twice its size), so a read of the same checkpoint, or the many
// output arrays of a .pt read, find theirs. PYLOADER_ARENA_POOL=0 turns it off; arena_pool_clear() unmaps
// what is kept.
class ArenaPool {
public:
    static constexpr std::size_t kBudget = std::size_t(512) << 20;
    static constexpr std::size_t kMaxKept = 1024;

    static ArenaPool& instance() {
        static ArenaPool pool;
        return pool;
    }
    // A kept mapping of at least `bytes` (and not much larger), or {nullptr, 0}.
    std::pair<void*, std::size_t> take(std::size_t bytes) {
        std::lock_guard<std::mutex> lock(mutex_);
        const std::size_t most = 2 * bytes + (std::size_t(2) << 20);
        std::size_t best = kept_.size();
        for (std::size_t k = 0; k < kept_.size(); ++k)
            if (kept_[k].second >= bytes && kept_[k].second <= most &&
                (best == kept_.size() || kept_[k].second < kept_[best].second))
                best = k;
        if (best == kept_.size()) return {nullptr, 0};
        const auto out = kept_[best];
        kept_.erase(kept_.begin() + std::ptrdiff_t(best));
        kept_bytes_ -= out.second;
        return out;
    }
    void give(void* p, std::size_t size) {
        if (!enabled_) {
            ::munmap(p, size);
            return;
        }
        std::vector<std::pair<void*, std::size_t>> drop;  // unmapped outside the lock
        {
            std::lock_guard<std::mutex> lock(mutex_);
            kept_.emplace_back(p, size);
            kept_bytes_ += size;
            while (kept_.size() > 1 && (kept_bytes_ > kBudget || kept_.size() > kMaxKept)) {
                drop.push_back(kept_.front());
                kept_bytes_ -= kept_.front().second;
                kept_.pop_front();
            }
        }
        for (const auto& [q, n] : drop) ::munmap(q, n);
    }
    void clear() {
        std::deque<std::pair<void*, std::size_t>> drop;
        {
            std::lock_guard<std::mutex> lock(mutex_);
            drop.swap(kept_);
            kept_bytes_ = 0;
        }
        for (const auto& [q, n] : drop) ::munmap(q, n);
    }
    std::size_t kept_bytes() {
        std::lock_guard<std::mutex> lock(mutex_);
        return kept_bytes_;
    }

private:
    ArenaPool() {
        const char* e = std::getenv("PYLOADER_ARENA_POOL");
        enabled_ = !(e != nullptr && e[0] == '0');
    }
    std::mutex mutex_;
    std::deque<std::pair<void*, std::size_t>> kept_;  // oldest first
    std::size_t kept_bytes_ = 0;
    bool enabled_ = true;
};

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
    // A kept arena (ArenaPool) is reused when one fits: its pages are usually faulted in already.
    void allocate() {
        if (size_ == 0) return;
        auto kept = ArenaPool::instance().take(size_);
        if (kept.first != nullptr) {
            base_ = static_cast<std::byte*>(kept.first);
            mapped_ = kept.second;
            return;
        }
        void* p = ::mmap(nullptr, size_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED) throw std::bad_alloc();
#ifdef MADV_HUGEPAGE
        ::madvise(p, size_, MADV_HUGEPAGE);
#endif
        base_ = static_cast<std::byte*>(p);
        mapped_ = size_;
    }
    std::byte* at(std::size_t offset) const { return base_ + offset; }
    std::size_t size() const { return size_; }

    Arena() = default;
    ~Arena() {
        if (base_ != nullptr) ArenaPool::instance().give(base_, mapped_);
    }
    Arena(const Arena&) = delete;
    Arena& operator=(const Arena&) = delete;

private:
    std::byte* base_ = nullptr;
    std::size_t size_ = 0;
    std::size_t mapped_ = 0;
};

}  // namespace pyloader
