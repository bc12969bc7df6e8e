// Overflow-checked size arithmetic. Every size derived from file contents or a cfg goes through these.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

#include "errors.h"

namespace pyloader {

inline std::uint64_t checked_mul(std::uint64_t a, std::uint64_t b, const char* what) {
    std::uint64_t r;
    if (__builtin_mul_overflow(a, b, &r))
        throw FormatError(std::string("size overflow computing ") + what);
    return r;
}

inline std::uint64_t checked_add(std::uint64_t a, std::uint64_t b, const char* what) {
    std::uint64_t r;
    if (__builtin_add_overflow(a, b, &r))
        throw FormatError(std::string("size overflow computing ") + what);
    return r;
}

// True when [offset, offset + length) lies inside a buffer of `size` bytes (no overflow possible).
inline bool range_inside(std::uint64_t offset, std::uint64_t length, std::uint64_t size) {
    return offset <= size && length <= size - offset;
}

}  // namespace pyloader
