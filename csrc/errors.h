// The one error type of the native core. The binding turns it into pyloader.FormatError.
#pragma once
#include <stdexcept>
#include <string>

namespace pyloader {

struct FormatError : std::runtime_error {
    explicit FormatError(const std::string& what) : std::runtime_error(what) {}
};

}  // namespace pyloader
