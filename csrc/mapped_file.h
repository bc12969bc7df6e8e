// A read-only memory map of a whole file (POSIX). Empty files map to an empty span.
#pragma once
#include <cstddef>
#include <string>

namespace pyloader {

class MappedFile {
public:
    explicit MappedFile(const std::string& path);
    ~MappedFile();
    MappedFile(const MappedFile&) = delete;
    MappedFile& operator=(const MappedFile&) = delete;

    const std::byte* data() const { return data_; }
    std::size_t size() const { return size_; }
    const std::string& path() const { return path_; }

    // Drop the resident pages that lie wholly inside [offset, offset + length): they leave the process's
    // memory but stay valid (a later read faults them in from the file again).
    void release(std::size_t offset, std::size_t length) const;

private:
    std::string path_;
    const std::byte* data_ = nullptr;
    std::size_t size_ = 0;
};

}  // namespace pyloader
