#!/usr/bin/env bash
# Builds the libFuzzer harnesses over the pure C++ core with AddressSanitizer and UndefinedBehaviorSanitizer
# into fuzz/build/ (clang with libFuzzer: apt-get install clang libclang-rt-14-dev).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="$here/build"
mkdir -p "$out"
CXX="${CXX:-clang++}"
flags=(-std=c++17 -g -O1 -fno-omit-frame-pointer -fsanitize=fuzzer,address,undefined
       -fno-sanitize-recover=undefined -I"$here/../csrc" -pthread)
core="$here/../csrc"
"$CXX" "${flags[@]}" "$here/fuzz_pickle_vm.cpp" "$core/pickle_vm.cpp" -o "$out/fuzz_pickle_vm"
"$CXX" "${flags[@]}" "$here/fuzz_zip.cpp" "$core/zip_archive.cpp" -o "$out/fuzz_zip"
"$CXX" "${flags[@]}" "$here/fuzz_darknet.cpp" "$core/darknet.cpp" "$core/transform.cpp" "$core/input_file.cpp" \
    -o "$out/fuzz_darknet"
echo "built: $out/fuzz_pickle_vm $out/fuzz_zip $out/fuzz_darknet"
