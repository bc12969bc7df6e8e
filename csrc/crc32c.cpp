#include "crc32c.h"

#include <cstring>

namespace pyloader {
namespace {

struct Tables {
    std::uint32_t t[8][256];
    Tables() {
        for (std::uint32_t i = 0; i < 256; ++i) {
            std::uint32_t c = i;
            for (int k = 0; k < 8; ++k) c = (c >> 1) ^ (0x82f63b78u & (0u - (c & 1u)));
            t[0][i] = c;
        }
        for (std::uint32_t i = 0; i < 256; ++i)
            for (int s = 1; s < 8; ++s) t[s][i] = (t[s - 1][i] >> 8) ^ t[0][t[s - 1][i] & 0xff];
    }
};

std::uint32_t software(std::uint32_t c, const unsigned char* p, std::size_t n) {
    static const Tables tables;
    const auto& t = tables.t;
    while (n >= 8) {
        std::uint32_t lo, hi;
        std::memcpy(&lo, p, 4);
        std::memcpy(&hi, p + 4, 4);
        lo ^= c;  // little-endian hosts (checked by the build's other readers)
        c = t[7][lo & 0xff] ^ t[6][(lo >> 8) & 0xff] ^ t[5][(lo >> 16) & 0xff] ^ t[4][lo >> 24] ^
            t[3][hi & 0xff] ^ t[2][(hi >> 8) & 0xff] ^ t[1][(hi >> 16) & 0xff] ^ t[0][hi >> 24];
        p += 8;
        n -= 8;
    }
    while (n--) c = (c >> 8) ^ t[0][(c ^ *p++) & 0xff];
    return c;
}

#if defined(__x86_64__)
__attribute__((target("sse4.2"))) std::uint32_t hardware(std::uint32_t c, const unsigned char* p, std::size_t n) {
    std::uint64_t c64 = c;
    while (n >= 8) {
        std::uint64_t v;
        std::memcpy(&v, p, 8);
        c64 = __builtin_ia32_crc32di(c64, v);
        p += 8;
        n -= 8;
    }
    c = std::uint32_t(c64);
    while (n--) c = __builtin_ia32_crc32qi(c, *p++);
    return c;
}
#endif

}  // namespace

std::uint32_t crc32c_extend(std::uint32_t crc, const std::byte* data, std::size_t n) {
    const auto* p = reinterpret_cast<const unsigned char*>(data);
    std::uint32_t c = ~crc;
#if defined(__x86_64__)
    static const bool sse42 = __builtin_cpu_supports("sse4.2");
    c = sse42 ? hardware(c, p, n) : software(c, p, n);
#else
    c = software(c, p, n);
#endif
    return ~c;
}

}  // namespace pyloader
