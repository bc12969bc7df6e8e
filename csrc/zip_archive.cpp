#include "zip_archive.h"

#include <algorithm>
#include <cstring>

#include "checked.h"
#include "errors.h"

namespace pyloader {
namespace {

constexpr std::uint32_t kLocalSig = 0x04034b50;
constexpr std::uint32_t kCentralSig = 0x02014b50;
constexpr std::uint32_t kEocdSig = 0x06054b50;
constexpr std::uint32_t kZip64LocatorSig = 0x07064b50;
constexpr std::uint32_t kZip64EocdSig = 0x06064b50;
constexpr std::size_t kEocdSize = 22;
constexpr std::size_t kCentralSize = 46;
constexpr std::size_t kLocalSize = 30;

// Little-endian reads of a region already validated by the caller.
std::uint16_t u16(const std::byte* p) {
    return std::uint16_t(std::uint16_t(p[0]) | (std::uint16_t(p[1]) << 8));
}
std::uint32_t u32(const std::byte* p) {
    return std::uint32_t(p[0]) | (std::uint32_t(p[1]) << 8) | (std::uint32_t(p[2]) << 16) |
           (std::uint32_t(p[3]) << 24);
}
std::uint64_t u64(const std::byte* p) { return std::uint64_t(u32(p)) | (std::uint64_t(u32(p + 4)) << 32); }

std::string hex(std::uint64_t v) {
    static const char* digits = "0123456789abcdef";
    std::string s;
    do {
        s.insert(s.begin(), digits[v & 15]);
        v >>= 4;
    } while (v);
    return "0x" + s;
}

void need(std::uint64_t offset, std::uint64_t length, std::uint64_t size, const std::string& what) {
    if (!range_inside(offset, length, size))
        throw FormatError(what + ": expected " + std::to_string(length) + " bytes at offset " +
                          std::to_string(offset) + ", but the file has " + std::to_string(size) + " bytes");
}

// Bytes [offset, offset + length) of the source, checked to lie inside it first.
std::vector<std::byte> read_block(const ByteSource& src, std::uint64_t offset, std::uint64_t length,
                                  const std::string& what) {
    need(offset, length, src.size(), what);
    std::vector<std::byte> out(static_cast<std::size_t>(length));
    src.read(offset, out.data(), out.size());
    return out;
}

}  // namespace

std::vector<ZipEntry> read_zip_directory(const std::byte* data, std::size_t size) {
    return read_zip_directory(MemorySource(data, size));
}

std::vector<ZipEntry> read_zip_directory(const ByteSource& src) {
    const std::uint64_t size = src.size();
    if (size < kEocdSize)
        throw FormatError("zip: file of " + std::to_string(size) +
                          " bytes is too short for an end-of-central-directory record (22 bytes)");
    // Find the end-of-central-directory record: the last signature within the comment window.
    // The end record and, before it, the ZIP64 locator's place: the file's last 20 + 22 bytes when the archive
    // has no comment (torch writes none), else up to 0xFFFF bytes more.
    auto tail_from = [&](std::uint64_t comment) {
        return size > 20 + kEocdSize + comment ? size - 20 - kEocdSize - comment : 0;
    };
    std::uint64_t tail_start = tail_from(0);
    std::vector<std::byte> tail = read_block(src, tail_start, size - tail_start, "zip: end of the archive");
    if (u32(tail.data() + tail.size() - kEocdSize) != kEocdSig || u16(tail.data() + tail.size() - 2) != 0) {
        tail_start = tail_from(0xFFFF);
        tail = read_block(src, tail_start, size - tail_start, "zip: end of the archive");
    }
    const std::byte* data = tail.data();  // offsets below are in the tail
    const std::size_t tsize = tail.size();
    const std::size_t lowest = tsize > kEocdSize + 0xFFFF ? tsize - kEocdSize - 0xFFFF : 0;
    std::size_t eocd = tsize;  // none
    for (std::size_t pos = tsize - kEocdSize + 1; pos-- > lowest;) {
        if (u32(data + pos) == kEocdSig && pos + kEocdSize + u16(data + pos + 20) == tsize) {
            eocd = pos;
            break;
        }
    }
    if (eocd == tsize)
        throw FormatError("zip: no end-of-central-directory record (truncated or not a zip archive)");

    std::uint64_t count = u16(data + eocd + 10);
    std::uint64_t cd_size = u32(data + eocd + 12);
    std::uint64_t cd_offset = u32(data + eocd + 16);
    const bool zip64 = count == 0xFFFF || cd_size == 0xFFFFFFFFu || cd_offset == 0xFFFFFFFFu ||
                       (tail_start + eocd >= 20 && u32(data + eocd - 20) == kZip64LocatorSig);
    if (zip64) {
        if (tail_start + eocd < 20 || u32(data + eocd - 20) != kZip64LocatorSig)
            throw FormatError("zip: the end record says ZIP64 but there is no ZIP64 locator before it");
        const std::uint64_t z64 = u64(data + eocd - 20 + 8);
        const std::vector<std::byte> r = read_block(src, z64, 56, "zip: ZIP64 end-of-central-directory record");
        if (u32(r.data()) != kZip64EocdSig)
            throw FormatError("zip: ZIP64 end record at offset " + std::to_string(z64) + ": expected signature " +
                              hex(kZip64EocdSig) + ", found " + hex(u32(r.data())));
        count = u64(r.data() + 32);
        cd_size = u64(r.data() + 40);
        cd_offset = u64(r.data() + 48);
    }
    // Each central record is at least 46 bytes: bound the count before reserving memory.
    if (count > cd_size / kCentralSize)
        throw FormatError("zip: the end record claims " + std::to_string(count) + " entries, but a central " +
                          "directory of " + std::to_string(cd_size) + " bytes holds at most " +
                          std::to_string(cd_size / kCentralSize));

    const std::vector<std::byte> cd = read_block(src, cd_offset, cd_size, "zip: central directory");
    std::vector<ZipEntry> entries;
    entries.reserve(count);
    std::uint64_t pos = 0;  // in the central directory
    const std::uint64_t cd_end = cd_size;
    for (std::uint64_t k = 0; k < count; ++k) {
        const std::string where = "zip: central directory record " + std::to_string(k);
        if (!range_inside(pos, kCentralSize, cd_end))
            throw FormatError(where + ": runs past the central directory (offset " + std::to_string(cd_offset + pos) +
                              ")");
        const std::byte* c = cd.data() + pos;
        if (u32(c) != kCentralSig)
            throw FormatError(where + " at offset " + std::to_string(cd_offset + pos) + ": expected signature " +
                              hex(kCentralSig) + ", found " + hex(u32(c)));
        ZipEntry e;
        const std::uint16_t flags = u16(c + 8);
        e.method = u16(c + 10);
        e.compressed_size = u32(c + 20);
        e.size = u32(c + 24);
        const std::uint64_t name_len = u16(c + 28), extra_len = u16(c + 30), comment_len = u16(c + 32);
        e.local_header_offset = u32(c + 42);
        const std::uint64_t record_len = kCentralSize + name_len + extra_len + comment_len;
        if (!range_inside(pos, record_len, cd_end))
            throw FormatError(where + ": name/extra/comment run past the central directory");
        e.name.assign(reinterpret_cast<const char*>(c + kCentralSize), name_len);
        const std::string ewhere = "zip entry '" + e.name + "'";
        if (flags & 1u) throw FormatError(ewhere + ": encrypted entries are not supported");
        // ZIP64 extended information: the 0xFFFFFFFF fields, in order.
        const std::byte* x = c + kCentralSize + name_len;
        const std::byte* xend = x + extra_len;
        while (xend - x >= 4) {
            const std::uint16_t id = u16(x), len = u16(x + 2);
            if (std::uint64_t(xend - x - 4) < len) throw FormatError(ewhere + ": extra field runs past its record");
            if (id == 0x0001) {
                const std::byte* f = x + 4;
                const std::byte* fend = f + len;
                auto take = [&](std::uint64_t& field, const char* what) {
                    if (fend - f < 8)
                        throw FormatError(ewhere + ": ZIP64 extra field lacks the " + what);
                    field = u64(f);
                    f += 8;
                };
                if (e.size == 0xFFFFFFFFu) take(e.size, "uncompressed size");
                if (e.compressed_size == 0xFFFFFFFFu) take(e.compressed_size, "compressed size");
                if (e.local_header_offset == 0xFFFFFFFFu) take(e.local_header_offset, "local header offset");
            }
            x += 4 + len;
        }
        // Local header: signature, then its own name and extra lengths give the data start.
        std::byte l[kLocalSize];
        need(e.local_header_offset, kLocalSize, size, ewhere + ": local header");
        src.read(e.local_header_offset, l, kLocalSize);
        if (u32(l) != kLocalSig)
            throw FormatError(ewhere + ": local header at offset " + std::to_string(e.local_header_offset) +
                              ": expected signature " + hex(kLocalSig) + ", found " + hex(u32(l)));
        const std::uint64_t data_offset =
            checked_add(e.local_header_offset, kLocalSize + std::uint64_t(u16(l + 26)) + u16(l + 28),
                        "zip entry data offset");
        need(e.local_header_offset, data_offset - e.local_header_offset, size, ewhere + ": local header name/extra");
        need(data_offset, e.compressed_size, size, ewhere + ": data");
        if (e.method == 0) {
            if (e.compressed_size != e.size)
                throw FormatError(ewhere + ": stored entry with compressed size " + std::to_string(e.compressed_size) +
                                  " != size " + std::to_string(e.size));
            e.data_offset = data_offset;
        }
        entries.push_back(std::move(e));
        pos += record_len;
    }
    return entries;
}

TorchZipIndex index_torch_zip(const std::byte* data, std::size_t size) {
    return index_torch_zip(MemorySource(data, size));
}

TorchZipIndex index_torch_zip(const ByteSource& src) {
    TorchZipIndex index;
    index.entries = read_zip_directory(src);
    const ZipEntry* pkl = nullptr;
    for (const auto& e : index.entries) {
        const auto slash = e.name.find('/');
        if (slash != std::string::npos && e.name.compare(slash, std::string::npos, "/data.pkl") == 0) {
            if (pkl != nullptr)
                throw FormatError("zip: two pickles, '" + pkl->name + "' and '" + e.name + "'");
            pkl = &e;
        }
    }
    if (pkl == nullptr) throw FormatError("zip: no '<prefix>/data.pkl' entry: not a PyTorch checkpoint");
    index.prefix = pkl->name.substr(0, pkl->name.find('/'));
    if (pkl->method != 0)
        throw FormatError("zip entry '" + pkl->name + "': compression method " + std::to_string(pkl->method) +
                          ", expected 0 (stored): torch writes uncompressed archives");
    index.pickle_offset = pkl->data_offset;
    index.pickle_size = pkl->size;
    const std::string data_prefix = index.prefix + "/data/";
    for (const auto& e : index.entries) {
        if (e.name.size() <= data_prefix.size() || e.name.compare(0, data_prefix.size(), data_prefix) != 0)
            continue;
        if (e.method != 0)
            throw FormatError("zip entry '" + e.name + "': compression method " + std::to_string(e.method) +
                              ", expected 0 (stored): torch writes uncompressed archives");
        const std::string key = e.name.substr(data_prefix.size());
        if (!index.records.emplace(key, std::make_pair(e.data_offset, e.size)).second)
            throw FormatError("zip entry '" + e.name + "': appears twice");
    }
    return index;
}

std::vector<LegacyStorage> locate_legacy_storages(const std::byte* data, std::size_t size, std::uint64_t start,
                                                  const std::vector<std::uint64_t>& element_sizes) {
    std::vector<LegacyStorage> out;
    out.reserve(element_sizes.size());
    std::uint64_t pos = start;
    for (std::size_t k = 0; k < element_sizes.size(); ++k) {
        const std::string where = "legacy storage " + std::to_string(k);
        need(pos, 8, size, where + ": element count");
        std::int64_t numel;
        std::memcpy(&numel, data + pos, 8);  // little-endian hosts only (checked at build time below)
        if (numel < 0) throw FormatError(where + ": negative element count " + std::to_string(numel));
        const std::uint64_t bytes = checked_mul(std::uint64_t(numel), element_sizes[k], "legacy storage bytes");
        need(pos + 8, bytes, size, where + " (" + std::to_string(numel) + " elements)");
        out.push_back({pos + 8, std::uint64_t(numel)});
        pos += 8 + bytes;
    }
    return out;
}

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "pyloader reads little-endian files on little-endian hosts");

}  // namespace pyloader
