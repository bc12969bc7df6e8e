// All of pybind11 lives here: conversions between the pure C++ core and numpy, GIL handling, errors.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <memory>
#include <string>
#include <vector>

#include "crc32c.h"
#include "darknet.h"
#include "errors.h"
#include "parallel.h"
#include "transform.h"
#include "zip_archive.h"  // PyTorch zip section

namespace py = pybind11;
using namespace pyloader;

namespace {

// Keeps the memory behind returned arrays alive: the file map and the arena of transformed arrays.
struct Owner {
    std::shared_ptr<MappedFile> file;
    std::unique_ptr<Arena> arena;
};

// Bytes from a file (zip entry names) or messages quoting them as str, lossless: undecodable bytes become
// surrogates (os.fsdecode's convention), so a non-UTF-8 name is neither refused nor altered.
py::str text(const std::string& s) {
    PyObject* o = PyUnicode_DecodeUTF8(s.data(), py::ssize_t(s.size()), "surrogateescape");
    if (o == nullptr) throw py::error_already_set();
    return py::reinterpret_steal<py::str>(o);
}

py::capsule make_owner(Owner* owner) {
    return py::capsule(owner, [](void* p) { delete static_cast<Owner*>(p); });
}

// A float32 C-order array over `data`, not copied; `base` keeps the memory alive.
py::array float_view(const float* data, const std::vector<std::size_t>& shape, const py::handle& base,
                     bool writeable) {
    std::vector<py::ssize_t> strides(shape.size());
    py::ssize_t stride = sizeof(float);
    for (std::size_t k = shape.size(); k-- > 0;) {
        strides[k] = stride;
        stride *= py::ssize_t(shape[k]);
    }
    std::vector<py::ssize_t> dims(shape.begin(), shape.end());
    py::array a(py::dtype::of<float>(), dims, strides, data, base);
    if (!writeable) py::detail::array_proxy(a.ptr())->flags &= ~py::detail::npy_api::NPY_ARRAY_WRITEABLE_;
    return a;
}

DarknetLayerPlan plan_from_tuple(const py::tuple& t) {
    DarknetLayerPlan L;
    const auto kind = t[0].cast<std::string>();
    L.label = t[1].cast<std::string>();
    if (kind == "convolutional") {
        if (t.size() != 7) throw FormatError(L.label + ": convolutional plan needs 7 fields");
        L.kind = DarknetLayerPlan::Kind::Convolutional;
        L.filters = t[2].cast<std::uint64_t>();
        L.channels_per_group = t[3].cast<std::uint64_t>();
        L.kh = t[4].cast<std::uint64_t>();
        L.kw = t[5].cast<std::uint64_t>();
        L.batch_normalize = t[6].cast<bool>();
    } else if (kind == "floats") {
        if (t.size() != 3) throw FormatError(L.label + ": floats plan needs 3 fields");
        L.kind = DarknetLayerPlan::Kind::Floats;
        L.count = t[2].cast<std::uint64_t>();
    } else {
        throw FormatError(L.label + ": unknown plan kind '" + kind + "'");
    }
    return L;
}

py::dict header_dict(const DarknetHeader& h) {
    py::dict d;
    d["major"] = h.major;
    d["minor"] = h.minor;
    d["revision"] = h.revision;
    d["seen"] = h.seen;
    d["header_bytes"] = h.bytes;
    return d;
}

DType dtype_of(const py::array& a) {
    if (a.dtype().is(py::dtype::of<float>())) return DType::F32;
    if (a.dtype().kind() == 'f' && a.dtype().itemsize() == 2) return DType::F16;
    throw FormatError("expected a float32 or float16 array, got dtype " + py::str(a.dtype()).cast<std::string>());
}

}  // namespace

PYBIND11_MODULE(_core, m) {
    m.doc() = "pyloader's native core: memory-mapped readers and layout transforms.";

    py::register_exception_translator([](std::exception_ptr p) {
        try {
            if (p) std::rethrow_exception(p);
        } catch (const FormatError& e) {
            // Messages carry file and zip entry names, which need not be UTF-8: decoded without loss
            // (undecodable bytes as surrogates, as Python decodes file names), never a UnicodeDecodeError.
            py::object cls = py::module_::import("pyloader.errors").attr("FormatError");
            py::str msg = text(e.what());
            PyErr_SetObject(cls.ptr(), msg.ptr());
        }
    });

    m.def("default_threads", &default_threads);

    m.def(
        "crc32c",
        [](const py::buffer& data, std::uint32_t crc) {
            py::buffer_info info = data.request();
            if (!PyBuffer_IsContiguous(info.view(), 'C'))
                throw std::invalid_argument("crc32c needs a C-contiguous buffer");
            const auto* p = static_cast<const std::byte*>(info.ptr);
            const std::size_t n = std::size_t(info.size) * std::size_t(info.itemsize);
            py::gil_scoped_release nogil;
            return crc32c_extend(crc, p, n);
        },
        py::arg("data"), py::arg("crc") = 0,
        "CRC-32C (Castagnoli) of a contiguous buffer, continuing from `crc`; as TensorFlow checksums bundles.");

    m.def(
        "arena_pool_clear", [] { ArenaPool::instance().clear(); },
        "Unmap the arena kept for the next read (reads reuse the last freed one; PYLOADER_ARENA_POOL=0: none).");
    m.def("arena_pool_bytes", [] { return ArenaPool::instance().kept_bytes(); },
          "Bytes of the arena kept for the next read.");

    m.def(
        "discard_memory",
        [](const py::array& a) { discard_pages(a.data(), std::size_t(a.nbytes())); },
        py::arg("array"),
        "Give the memory pages wholly inside `array` back to the system. Its values become undefined (zeros):\n"
        "only for arrays whose contents have been copied elsewhere and that nothing reads again.");

    m.def(
        "darknet_header",
        [](const std::string& path) {
            MappedFile f(path);
            try {
                return header_dict(parse_darknet_header(f.data(), f.size()));
            } catch (const FormatError& e) {
                throw FormatError(path + ": " + e.what());
            }
        },
        py::arg("path"), "Parse the header of a darknet .weights file.");

    m.def(
        "read_darknet",
        [](const std::string& path, const py::list& plan_list, bool fold_bn, double eps, unsigned threads) {
            std::vector<DarknetLayerPlan> plan;
            plan.reserve(plan_list.size());
            for (const auto& item : plan_list) plan.push_back(plan_from_tuple(item.cast<py::tuple>()));
            DarknetFileResult r;
            {
                py::gil_scoped_release release;
                r = read_darknet_file(path, plan, fold_bn, eps, threads);
            }
            auto* owner = new Owner{r.file, std::move(r.result.arena)};
            py::capsule base = make_owner(owner);
            py::list layers;
            for (const auto& arrays : r.result.layers) {
                py::list items;
                for (const auto& a : arrays)
                    items.append(py::make_tuple(a.role, float_view(a.data, a.shape, base, !a.from_input)));
                layers.append(items);
            }
            return py::make_tuple(header_dict(r.result.header), layers);
        },
        py::arg("path"), py::arg("plan"), py::arg("fold_bn") = true, py::arg("eps") = 1e-5,
        py::arg("threads") = 0,
        "Read a darknet .weights file against a layer plan: [(kind, label, ...)] in file order.\n"
        "Returns (header, [[(role, array), ...] per plan entry]).");

    m.def(
        "oihw_to_hwio",
        [](const py::array& in, py::object scale_obj, unsigned threads) {
            if (in.ndim() != 4) throw FormatError("oihw_to_hwio: expected a 4-d array");
            const DType t = dtype_of(in);
            py::array contiguous = py::array::ensure(in, py::array::c_style);
            const auto O = std::size_t(in.shape(0)), I = std::size_t(in.shape(1)), H = std::size_t(in.shape(2)),
                       W = std::size_t(in.shape(3));
            py::array_t<float, py::array::c_style> scale;
            if (!scale_obj.is_none()) {
                scale = py::array_t<float, py::array::c_style | py::array::forcecast>::ensure(scale_obj);
                if (!scale || scale.ndim() != 1 || std::size_t(scale.shape(0)) != O)
                    throw FormatError("oihw_to_hwio: scale must have one float per output channel");
            }
            py::array_t<float> out({H, W, I, O});
            const void* src = contiguous.data();
            float* dst = out.mutable_data();
            const float* s = scale_obj.is_none() ? nullptr : scale.data();
            {
                py::gil_scoped_release release;
                const std::size_t step = 16;
                const std::size_t chunks = (O + step - 1) / step;
                parallel_for(chunks, threads, [&](std::size_t c) {
                    oihw_to_hwio(src, t, dst, O, I, H, W, s, c * step, std::min(O, (c + 1) * step));
                });
            }
            return out;
        },
        py::arg("kernel"), py::arg("scale") = py::none(), py::arg("threads") = 0,
        "Transpose an OIHW float32/float16 kernel to HWIO float32, scaling output channel o by scale[o].");

    m.def(
        "fold_batchnorm",
        [](const py::array& gamma, const py::array& beta, const py::array& mean, const py::array& var, double eps,
           py::object conv_bias) {
            const DType t = dtype_of(gamma);
            const std::size_t n = std::size_t(gamma.size());
            std::vector<py::array> parts = {gamma, beta, mean, var};
            if (!conv_bias.is_none()) parts.push_back(conv_bias.cast<py::array>());
            for (auto& p : parts) {
                if (dtype_of(p) != t || std::size_t(p.size()) != n || p.ndim() != 1)
                    throw FormatError("fold_batchnorm: all inputs must be 1-d arrays of one dtype and length");
                p = py::array::ensure(p, py::array::c_style);
            }
            py::array_t<float> scale(n), bias(n);
            fold_batchnorm(t, parts[0].data(), parts[1].data(), parts[2].data(), parts[3].data(),
                           parts.size() > 4 ? parts[4].data() : nullptr, eps, scale.mutable_data(),
                           bias.mutable_data(), 0, n);
            return py::make_tuple(scale, bias);
        },
        py::arg("gamma"), py::arg("beta"), py::arg("mean"), py::arg("var"), py::arg("eps"),
        py::arg("conv_bias") = py::none(), "Batch-norm folding: returns (scale, bias) as float32.");

    // ---- PyTorch zip ----
    // The map is handed to Python as a read-only uint8 array whose base owns the MappedFile, so numpy views
    // of checkpoint records (np.frombuffer / slicing) are zero-copy and keep the file mapped.
    m.def(
        "map_file",
        [](const std::string& path) {
            auto file = std::make_shared<MappedFile>(path);
            auto* owner = new Owner{file, nullptr};
            py::capsule base = make_owner(owner);
            static const std::byte empty{};
            const std::byte* p = file->size() ? file->data() : &empty;
            py::array a(py::dtype::of<std::uint8_t>(), {py::ssize_t(file->size())}, {py::ssize_t(1)}, p, base);
            py::detail::array_proxy(a.ptr())->flags &= ~py::detail::npy_api::NPY_ARRAY_WRITEABLE_;
            return a;
        },
        py::arg("path"), "Memory-map a file read-only; returns a read-only uint8 array over the map.");

    m.def(
        "torch_zip_index",
        [](const py::buffer& buf) {
            py::buffer_info info = buf.request();
            if (info.ndim != 1 || info.itemsize != 1) throw FormatError("torch_zip_index: expected a 1-d byte buffer");
            TorchZipIndex idx;
            {
                py::gil_scoped_release release;
                idx = index_torch_zip(static_cast<const std::byte*>(info.ptr), std::size_t(info.size));
            }
            py::dict records;
            for (const auto& [key, r] : idx.records) records[text(key)] = py::make_tuple(r.first, r.second);
            py::list entries;
            for (const auto& e : idx.entries)
                entries.append(py::make_tuple(text(e.name), e.method, e.size, e.data_offset));
            py::dict d;
            d["prefix"] = text(idx.prefix);
            d["pickle"] = py::make_tuple(idx.pickle_offset, idx.pickle_size);
            d["records"] = records;
            d["entries"] = entries;
            return d;
        },
        py::arg("buffer"),
        "Index a PyTorch zip checkpoint: {'prefix', 'pickle': (offset, size), 'records': {key: (offset, size)},\n"
        "'entries': [(name, method, size, data_offset)]}. Every range is validated against the buffer.");

    m.def(
        "zip_directory",
        [](const py::buffer& buf) {
            py::buffer_info info = buf.request();
            if (info.ndim != 1 || info.itemsize != 1) throw FormatError("zip_directory: expected a 1-d byte buffer");
            auto entries = read_zip_directory(static_cast<const std::byte*>(info.ptr), std::size_t(info.size));
            py::list out;
            for (const auto& e : entries) out.append(py::make_tuple(text(e.name), e.method, e.size, e.data_offset));
            return out;
        },
        py::arg("buffer"), "The central directory of a zip archive: [(name, method, size, data_offset)].");

    m.def(
        "legacy_storages",
        [](const py::buffer& buf, std::uint64_t start, const std::vector<std::uint64_t>& element_sizes) {
            py::buffer_info info = buf.request();
            if (info.ndim != 1 || info.itemsize != 1) throw FormatError("legacy_storages: expected a 1-d byte buffer");
            auto st = locate_legacy_storages(static_cast<const std::byte*>(info.ptr), std::size_t(info.size), start,
                                             element_sizes);
            py::list out;
            for (const auto& s : st) out.append(py::make_tuple(s.offset, s.numel));
            return out;
        },
        py::arg("buffer"), py::arg("start"), py::arg("element_sizes"),
        "Legacy torch format: (offset, numel) of each raw storage after `start` (int64 numel + bytes each).");
    // ---- end PyTorch zip ----
}
