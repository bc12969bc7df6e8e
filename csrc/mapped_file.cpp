#include "mapped_file.h"

#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "arena.h"
#include "errors.h"

namespace pyloader {

MappedFile::MappedFile(const std::string& path) : path_(path) {
    // Regular files only, checked without blocking: stat before opening (opening a device can act on it),
    // O_NONBLOCK so a FIFO swapped in between cannot block open(), then fstat of what was opened.
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0)
        throw FormatError(path + ": cannot open: " + std::strerror(errno));
    if (!S_ISREG(st.st_mode))
        throw FormatError(path + ": not a regular file");
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0)
        throw FormatError(path + ": cannot open: " + std::strerror(errno));
    if (::fstat(fd, &st) != 0) {
        int e = errno;
        ::close(fd);
        throw FormatError(path + ": cannot stat: " + std::strerror(e));
    }
    if (!S_ISREG(st.st_mode)) {
        ::close(fd);
        throw FormatError(path + ": not a regular file");
    }
    size_ = static_cast<std::size_t>(st.st_size);
    if (size_ > 0) {
        void* p = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
        if (p == MAP_FAILED) {
            int e = errno;
            ::close(fd);
            throw FormatError(path + ": cannot memory-map: " + std::strerror(e));
        }
        ::madvise(p, size_, MADV_SEQUENTIAL | MADV_WILLNEED);
        data_ = static_cast<const std::byte*>(p);
    }
    ::close(fd);
}

void MappedFile::release(std::size_t offset, std::size_t length) const {
    if (data_ == nullptr || offset >= size_) return;
    if (length > size_ - offset) length = size_ - offset;
    discard_pages(data_ + offset, length);
}

MappedFile::~MappedFile() {
    if (data_ != nullptr)
        ::munmap(const_cast<std::byte*>(data_), size_);
}

}  // namespace pyloader
