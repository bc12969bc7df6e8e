// All of pybind11 lives here: conversions between the pure C++ core and numpy, GIL handling, errors.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <unordered_set>
#include <vector>

#include "crc32c.h"
#include "darknet.h"
#include "errors.h"
#include "input_file.h"
#include "parallel.h"
#include "pickle_vm.h"
#include "transform.h"
#include "zip_archive.h"  // PyTorch zip section

namespace py = pybind11;
using namespace pyloader;

namespace {

// Bytes from a file (zip entry names) or messages quoting them as str, lossless: undecodable bytes become
// surrogates (os.fsdecode's convention), so a non-UTF-8 name is neither refused nor altered.
py::str text(const std::string& s) {
    PyObject* o = PyUnicode_DecodeUTF8(s.data(), py::ssize_t(s.size()), "surrogateescape");
    if (o == nullptr) throw py::error_already_set();
    return py::reinterpret_steal<py::str>(o);
}

// The owner of the memory behind returned arrays, given as their base.
py::capsule make_owner(std::unique_ptr<Arena> arena) {
    return py::capsule(arena.release(), [](void* p) { delete static_cast<Arena*>(p); });
}

// A read-only uint8 array of `size` bytes at `p`, whose memory `owner` keeps alive.
py::array read_only_bytes(const std::byte* p, std::uint64_t size, const py::capsule& owner) {
    static const std::byte empty{};
    py::array a(py::dtype::of<std::uint8_t>(), {py::ssize_t(size)}, {py::ssize_t(1)}, size ? p : &empty, owner);
    py::detail::array_proxy(a.ptr())->flags &= ~py::detail::npy_api::NPY_ARRAY_WRITEABLE_;
    return a;
}

// checkpoint.viewed_ranges: the (offset, length) ranges of `image` that the numpy arrays reachable from `root`
// view, sorted, overlaps merged. Followed: dict keys and values, list, tuple, set and frozenset items, and for an
// object whose exact type is a key of `follow`, the attributes it names; arrays (exact ndarrays) over other memory
// are skipped. Each container is visited once (shared references, cycles).
std::vector<std::pair<std::uint64_t, std::uint64_t>> viewed_ranges(const py::handle& root, const py::array& image,
                                                                   const py::dict& follow) {
    auto& api = py::detail::npy_api::get();
    const auto start = reinterpret_cast<std::uintptr_t>(image.data());
    const auto end = start + std::uintptr_t(image.nbytes());
    std::vector<std::pair<std::uint64_t, std::uint64_t>> spans;
    std::vector<py::object> held;  // attribute values, alive until the walk ends
    std::unordered_set<PyObject*> seen;
    std::vector<PyObject*> stack{root.ptr()};
    while (!stack.empty()) {
        PyObject* o = stack.back();
        stack.pop_back();
        PyTypeObject* t = Py_TYPE(o);
        if (t == &PyUnicode_Type || t == &PyLong_Type || t == &PyBool_Type || o == Py_None) continue;
        if (t == api.PyArray_Type_) {
            const auto a = py::reinterpret_borrow<py::array>(o);
            if (a.size() == 0) continue;
            auto lo = reinterpret_cast<std::uintptr_t>(a.data()), hi = lo;
            for (py::ssize_t k = 0; k < a.ndim(); ++k) {
                const auto reach = std::uintptr_t(a.shape(k) - 1) * std::uintptr_t(std::abs(a.strides(k)));
                if (a.strides(k) < 0) lo -= reach; else hi += reach;
            }
            hi += std::uintptr_t(a.itemsize());
            if (start <= lo && hi <= end) spans.emplace_back(lo - start, hi - start);
            continue;
        }
        PyObject* names = nullptr;
        const bool container = t == &PyDict_Type || t == &PyList_Type || t == &PyTuple_Type || t == &PySet_Type ||
                               t == &PyFrozenSet_Type;
        if (!container && !(names = PyDict_GetItemWithError(follow.ptr(), reinterpret_cast<PyObject*>(t)))) {
            if (PyErr_Occurred()) throw py::error_already_set();
            continue;
        }
        if (!seen.insert(o).second) continue;
        if (t == &PyDict_Type) {
            Py_ssize_t pos = 0;
            PyObject *key, *value;
            while (PyDict_Next(o, &pos, &key, &value)) {
                stack.push_back(key);
                stack.push_back(value);
            }
        } else if (t == &PyList_Type || t == &PyTuple_Type) {
            for (py::handle item : py::reinterpret_borrow<py::sequence>(o)) stack.push_back(item.ptr());
        } else if (container) {
            for (py::handle item : py::reinterpret_borrow<py::iterable>(o)) stack.push_back(item.ptr());
        } else {
            for (py::handle name : py::reinterpret_borrow<py::tuple>(names)) {
                held.push_back(py::reinterpret_borrow<py::object>(o).attr(name));
                stack.push_back(held.back().ptr());
            }
        }
    }
    std::sort(spans.begin(), spans.end());
    std::vector<std::pair<std::uint64_t, std::uint64_t>> merged;  // (offset, end), then (offset, length)
    for (const auto& [lo, hi] : spans) {
        if (!merged.empty() && lo <= merged.back().second) merged.back().second = std::max(merged.back().second, hi);
        else merged.emplace_back(lo, hi);
    }
    for (auto& [lo, hi] : merged) hi -= lo;
    return merged;
}

// The capsule that owns a FileImage (torch_zip_open) and that read_into_image recognises.
constexpr const char* kImageCapsule = "pyloader.file_image";

// The FileImage behind an image array made by torch_zip_open (the whole of it), for a file of `size` bytes.
FileImage* file_image_of(const py::array& image, std::uint64_t size) {
    const py::object base = image.base();
    const char* name = py::isinstance<py::capsule>(base) ? py::reinterpret_borrow<py::capsule>(base).name() : nullptr;
    if (name == nullptr || std::strcmp(name, kImageCapsule) != 0)
        throw std::invalid_argument("`image` must be an image made by torch_zip_open");
    auto* file_image = py::reinterpret_borrow<py::capsule>(base).get_pointer<FileImage>();
    if (image.ndim() != 1 || std::uint64_t(image.shape(0)) != file_image->size() ||
        (size && image.data() != file_image->data()))
        throw std::invalid_argument("`image` is not the whole image");
    return file_image;
}

py::dict index_dict(const TorchZipIndex& idx) {
    py::dict records;
    for (const auto& [key, r] : idx.records) records[text(key)] = py::make_tuple(r.first, r.second);
    py::list entries;
    for (const auto& e : idx.entries) entries.append(py::make_tuple(text(e.name), e.method, e.size, e.data_offset));
    py::dict d;
    d["prefix"] = text(idx.prefix);
    d["pickle"] = py::make_tuple(idx.pickle_offset, idx.pickle_size);
    d["records"] = records;
    d["entries"] = entries;
    return d;
}

// Run `fn` without the GIL; a FormatError leaves with the file's path in front.
template <typename Fn>
void reading(const std::string& path, Fn&& fn) {
    try {
        py::gil_scoped_release release;
        fn();
    } catch (const FormatError& e) {
        throw FormatError(path + ": " + e.what());
    }
}

// A float32 C-order array over `data`, not copied; `base` keeps the memory alive.
py::array float_view(const float* data, const std::vector<std::size_t>& shape, const py::handle& base) {
    std::vector<py::ssize_t> strides(shape.size());
    py::ssize_t stride = sizeof(float);
    for (std::size_t k = shape.size(); k-- > 0;) {
        strides[k] = stride;
        stride *= py::ssize_t(shape[k]);
    }
    std::vector<py::ssize_t> dims(shape.begin(), shape.end());
    return py::array(py::dtype::of<float>(), dims, strides, data, base);
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


// ---- pickle: replays the program of pickle_vm as Python objects, calling the Python policy at effects ----

// Owned references to the values of a pickle program, released together.
struct PyValues {
    std::vector<PyObject*> v;
    explicit PyValues(std::size_t n) : v(n, nullptr) {}
    ~PyValues() {
        for (PyObject* o : v) Py_XDECREF(o);
    }
};

std::string type_name(PyObject* o) {
    PyObject* n = PyObject_GetAttrString(reinterpret_cast<PyObject*>(Py_TYPE(o)), "__name__");
    if (!n) {
        PyErr_Clear();
        return Py_TYPE(o)->tp_name;
    }
    const char* u = PyUnicode_Check(n) ? PyUnicode_AsUTF8(n) : nullptr;
    std::string out = u ? u : Py_TYPE(o)->tp_name;
    if (!u) PyErr_Clear();
    Py_DECREF(n);
    return out;
}

// The Python policy of one pickle: the named attributes of a pyloader.torch_reader.policy.Hooks object (its
// docstring says what each is and what the fast paths below may read), read once and held for the replay.
// Nothing else of Python is read by name here but the fields of the values the fast paths make or check
// (Storage: numel, array; StorageType: dtype).
#define PYLOADER_PICKLE_HOOKS(X)                                                                                \
    X(resolve_global) X(reduce) X(record_new) X(newobj_ex) X(build) X(persistent_load) X(check_key) X(text_value) \
    X(finish_value) X(numpy_array_type) X(format_error) X(allowed_calls) X(rebuild_tensor) X(rebuild_parameter)  \
    X(ordered_dict) X(make_set) X(storage_class) X(storage_type_class) X(storage_buf) X(storage_records)          \
    X(storage_cache) X(storage_entry_where)

struct PickleHooks {
    std::vector<py::object> held;
#define PYLOADER_DECLARE(name) PyObject* name;
    PYLOADER_PICKLE_HOOKS(PYLOADER_DECLARE)
#undef PYLOADER_DECLARE

    explicit PickleHooks(const py::handle& hooks) {
#define PYLOADER_GET(name)             \
    held.push_back(hooks.attr(#name)); \
    name = held.back().ptr();
        PYLOADER_PICKLE_HOOKS(PYLOADER_GET)
#undef PYLOADER_GET
        if (!PyTuple_Check(allowed_calls)) throw std::invalid_argument("run_pickle: hooks.allowed_calls: a tuple");
        // RecordStorages' plain case (fast_zip_storage) only for the plain kinds; else (None) storage_buf is null
        // and RecordStorages.__call__ decides.
        bool plain = Py_TYPE(storage_buf) == py::detail::npy_api::get().PyArray_Type_ &&
                     PyDict_CheckExact(storage_records) && PyDict_CheckExact(storage_cache) &&
                     PyUnicode_CheckExact(storage_entry_where);
        if (plain) {
            const auto a = py::reinterpret_borrow<py::array>(storage_buf);
            plain = a.ndim() == 1 && a.itemsize() == 1 && (a.flags() & py::detail::npy_api::NPY_ARRAY_C_CONTIGUOUS_);
        }
        if (!plain) storage_buf = nullptr;
    }
};
#undef PYLOADER_PICKLE_HOOKS

// A non-negative int below 2^63 (an exact int, not a bool or a subclass), else false with no error set.
bool small_index(PyObject* o, std::uint64_t* out) {
    if (!PyLong_CheckExact(o)) return false;
    int overflow = 0;
    const long long v = PyLong_AsLongLongAndOverflow(o, &overflow);
    if (v == -1 && PyErr_Occurred()) {
        PyErr_Clear();
        return false;
    }
    if (overflow || v < 0) return false;
    *out = std::uint64_t(v);
    return true;
}

// allowlist.rebuild_tensor(storage, offset, size, stride, ...) in the case every checkpoint tensor takes,
// without calling Python: a read-only numpy view of storage.array (its base), bounds-checked by
// strided_view_fits. Returns nullptr with no error set when the case is anything else (the Python function then
// decides and words any refusal), nullptr with an error set when Python itself fails (memory).
PyObject* fast_tensor_view(const PickleHooks& h, PyObject* args) {
    if (PyTuple_GET_SIZE(args) < 4) return nullptr;
    PyObject *storage = PyTuple_GET_ITEM(args, 0), *size = PyTuple_GET_ITEM(args, 2),
             *stride = PyTuple_GET_ITEM(args, 3);
    if (reinterpret_cast<PyObject*>(Py_TYPE(storage)) != h.storage_class || !PyTuple_CheckExact(size) ||
        !PyTuple_CheckExact(stride))
        return nullptr;
    constexpr Py_ssize_t max_dims = 32;  // numpy 1.x's limit; checkpoints use at most 5
    const Py_ssize_t nd = PyTuple_GET_SIZE(size);
    if (nd != PyTuple_GET_SIZE(stride) || nd > max_dims) return nullptr;
    std::uint64_t offset = 0, numel = 0, sz[max_dims], st[max_dims];
    if (!small_index(PyTuple_GET_ITEM(args, 1), &offset)) return nullptr;
    for (Py_ssize_t k = 0; k < nd; ++k)
        if (!small_index(PyTuple_GET_ITEM(size, k), &sz[k]) || !small_index(PyTuple_GET_ITEM(stride, k), &st[k]))
            return nullptr;
    static PyObject* numel_name = PyUnicode_InternFromString("numel");
    static PyObject* array_name = PyUnicode_InternFromString("array");
    if (!numel_name || !array_name) return nullptr;
    PyObject* numel_obj = PyObject_GetAttr(storage, numel_name);
    if (!numel_obj) {
        PyErr_Clear();
        return nullptr;
    }
    const bool numel_ok = small_index(numel_obj, &numel);
    Py_DECREF(numel_obj);
    if (!numel_ok) return nullptr;
    PyObject* base = PyObject_GetAttr(storage, array_name);
    if (!base) {
        PyErr_Clear();
        return nullptr;
    }
    auto& api = py::detail::npy_api::get();
    py::object hold = py::reinterpret_steal<py::object>(base);
    if (Py_TYPE(base) != api.PyArray_Type_) return nullptr;
    const auto arr = py::reinterpret_borrow<py::array>(base);
    if (arr.ndim() != 1 || !(arr.flags() & py::detail::npy_api::NPY_ARRAY_C_CONTIGUOUS_) ||
        std::uint64_t(arr.shape(0)) < numel)
        return nullptr;
    const auto itemsize = std::uint64_t(arr.itemsize());
    if (!strided_view_fits(offset, sz, st, std::size_t(nd), numel, itemsize)) return nullptr;
    Py_intptr_t dims[max_dims], strides[max_dims];
    for (Py_ssize_t k = 0; k < nd; ++k) {
        dims[k] = Py_intptr_t(sz[k]);
        strides[k] = Py_intptr_t(st[k] * itemsize);  // below 2^63: checked
    }
    const char* data = static_cast<const char*>(arr.data()) + offset * itemsize;
    py::dtype dt = arr.dtype();
    // flags 0: read-only, as every tensor; numpy works out contiguity and alignment itself
    PyObject* out = api.PyArray_NewFromDescr_(api.PyArray_Type_, dt.release().ptr(), int(nd), dims, strides,
                                              const_cast<char*>(data), 0, nullptr);
    if (!out) return nullptr;
    Py_INCREF(base);
    if (api.PyArray_SetBaseObject_(out, base) < 0) {
        Py_DECREF(out);
        return nullptr;
    }
    return out;
}

// policy.RecordStorages(pid) in its plain case, without calling Python, from the hooks' storage_buf,
// storage_records, storage_cache and storage_entry_where: ('storage', StorageType, key, location, numel) for a key
// not seen before whose record holds the storage; the Storage made is the one __call__ makes (a read-only view of
// the record, the same `where`) and goes in the cache. nullptr with no error set: call it (also for an empty
// storage).
PyObject* fast_zip_storage(const PickleHooks& h, PyObject* pid) {
    if (!h.storage_buf || !PyTuple_CheckExact(pid) || PyTuple_GET_SIZE(pid) != 5) return nullptr;
    PyObject *tag = PyTuple_GET_ITEM(pid, 0), *stype = PyTuple_GET_ITEM(pid, 1), *key = PyTuple_GET_ITEM(pid, 2);
    std::uint64_t numel = 0, offset = 0, size = 0;
    if (!PyUnicode_CheckExact(tag) || PyUnicode_CompareWithASCIIString(tag, "storage") != 0 ||
        reinterpret_cast<PyObject*>(Py_TYPE(stype)) != h.storage_type_class || !PyUnicode_CheckExact(key) ||
        !small_index(PyTuple_GET_ITEM(pid, 4), &numel))
        return nullptr;
    const int cached = PyDict_Contains(h.storage_cache, key);
    if (cached != 0) {
        if (cached < 0) PyErr_Clear();
        return nullptr;
    }
    PyObject* rec = PyDict_GetItemWithError(h.storage_records, key);  // borrowed
    if (!rec) {
        PyErr_Clear();
        return nullptr;
    }
    if (!PyTuple_CheckExact(rec) || PyTuple_GET_SIZE(rec) != 2 || !small_index(PyTuple_GET_ITEM(rec, 0), &offset) ||
        !small_index(PyTuple_GET_ITEM(rec, 1), &size))
        return nullptr;
    static PyObject* dtype_name = PyUnicode_InternFromString("dtype");
    if (!dtype_name) return nullptr;
    py::object dt = py::reinterpret_steal<py::object>(PyObject_GetAttr(stype, dtype_name));
    if (!dt) {
        PyErr_Clear();
        return nullptr;
    }
    auto& api = py::detail::npy_api::get();
    if (!api.PyArrayDescr_Check_(dt.ptr())) return nullptr;
    const auto itemsize = std::uint64_t(py::reinterpret_borrow<py::dtype>(dt).itemsize());
    std::uint64_t need = 0;
    // (an empty storage takes the Python path: numpy places an empty slice at the start of the buffer)
    if (numel == 0 || itemsize == 0 || __builtin_mul_overflow(numel, itemsize, &need) || size < need) return nullptr;
    const auto buf = py::reinterpret_borrow<py::array>(h.storage_buf);
    if (!range_inside(offset, need, std::uint64_t(buf.shape(0)))) return nullptr;
    Py_intptr_t dims[1] = {Py_intptr_t(numel)};
    Py_intptr_t strides[1] = {Py_intptr_t(itemsize)};
    const char* data = static_cast<const char*>(buf.data()) + offset;
    PyObject* arr = api.PyArray_NewFromDescr_(api.PyArray_Type_, dt.inc_ref().ptr(), 1, dims, strides,
                                              const_cast<char*>(data), 0, nullptr);  // read-only
    if (!arr) return nullptr;
    Py_INCREF(h.storage_buf);
    if (api.PyArray_SetBaseObject_(arr, h.storage_buf) < 0) {
        Py_DECREF(arr);
        return nullptr;
    }
    py::object view = py::reinterpret_steal<py::object>(arr);
    py::object where = py::reinterpret_steal<py::object>(PyUnicode_Concat(h.storage_entry_where, key));
    if (!where) return nullptr;
    py::object quote = py::reinterpret_steal<py::object>(PyUnicode_FromString("'"));
    if (!quote) return nullptr;
    where = py::reinterpret_steal<py::object>(PyUnicode_Concat(where.ptr(), quote.ptr()));
    if (!where) return nullptr;
    py::object n = py::reinterpret_steal<py::object>(PyLong_FromUnsignedLongLong(numel));
    if (!n) return nullptr;
    PyObject* argv[5] = {dt.ptr(), key, n.ptr(), view.ptr(), where.ptr()};
    PyObject* storage = PyObject_Vectorcall(h.storage_class, argv, 5, nullptr);
    if (storage && PyDict_SetItem(h.storage_cache, key, storage) < 0) Py_CLEAR(storage);
    return storage;
}

// The allow-listed calls that checkpoints make thousands of times, done here when the arguments are the plain
// case: nullptr with no error set means "call the Python function" (which also words any refusal).
PyObject* fast_call(const PickleHooks& h, PyObject* fn, PyObject* args) {
    const Py_ssize_t n = PyTuple_GET_SIZE(args);
    if (fn == h.rebuild_tensor) return fast_tensor_view(h, args);
    if (fn == h.rebuild_parameter && n >= 1 &&
        Py_TYPE(PyTuple_GET_ITEM(args, 0)) == py::detail::npy_api::get().PyArray_Type_) {
        PyObject* data = PyTuple_GET_ITEM(args, 0);
        Py_INCREF(data);
        return data;
    }
    if (fn == h.ordered_dict && n == 0) return PyDict_New();  // OrderedDict(): an empty dict, nothing copied
    if (fn == h.make_set && n == 1) {  // set([]): nothing to copy or check
        PyObject* items = PyTuple_GET_ITEM(args, 0);
        if ((PyList_CheckExact(items) && PyList_GET_SIZE(items) == 0) ||
            (PyTuple_CheckExact(items) && PyTuple_GET_SIZE(items) == 0))
            return PySet_New(nullptr);
    }
    return nullptr;
}

PyObject* call(PyObject* fn, std::initializer_list<PyObject*> args) {
    PyObject* argv[4];
    std::size_t k = 0;
    for (PyObject* a : args) argv[k++] = a;
    return PyObject_Vectorcall(fn, argv, k, nullptr);
}

// The value a container or STOP receives: a numpy array built by _reconstruct + BUILD is unwrapped (by the
// hooks' finish_value).
PyObject* finish_value(const PickleHooks& h, PyObject* v) {
    if (reinterpret_cast<PyObject*>(Py_TYPE(v)) != h.numpy_array_type) {
        Py_INCREF(v);
        return v;
    }
    return call(h.finish_value, {v});
}

// budget.check_key(k, what) for a dict key or set member; str and ints within 2^61 pass here directly.
bool key_ok(const PickleHooks& h, PyObject* k, const char* what) {
    if (PyUnicode_CheckExact(k)) return true;
    if (PyLong_CheckExact(k)) {
        int overflow = 0;
        const long long v = PyLong_AsLongLongAndOverflow(k, &overflow);
        if (!overflow && v > -(1LL << 61) && v < (1LL << 61)) return true;
        PyErr_Clear();
    }
    PyObject* w = PyUnicode_FromString(what);
    if (!w) return false;
    PyObject* r = call(h.check_key, {k, w});
    Py_DECREF(w);
    Py_XDECREF(r);
    return r != nullptr;
}

// Returns the Python result of a program: ("ok", value, end), ("error", pos, op, exception) for a failure at an
// effect, or ("vm", pos, op, unsafe, message) for a malformed pickle whose earlier effects all succeeded.
py::tuple replay_pickle(const PickleProgram& P, const std::byte* data, const PickleHooks& h) {
    PyValues val(P.events.size());
    PyObject** V = val.v.data();
    V[0] = Py_None;
    V[1] = Py_True;
    V[2] = Py_False;
    Py_INCREF(Py_None);
    Py_INCREF(Py_True);
    Py_INCREF(Py_False);
    V[3] = PyTuple_New(0);
    const char* base = reinterpret_cast<const char*>(data);
    std::size_t i = 4;
    auto format_error = [&](const std::string& msg) { PyErr_SetString(h.format_error, msg.c_str()); };
    auto fetch = [&]() -> py::tuple {
        PyObject *t, *v, *tb;
        PyErr_Fetch(&t, &v, &tb);
        PyErr_NormalizeException(&t, &v, &tb);
        if (tb) PyException_SetTraceback(v, tb);
        Py_XDECREF(t);
        Py_XDECREF(tb);
        const PickleEvent& e = P.events[i];
        return py::make_tuple("error", e.pos, int(e.op), py::reinterpret_steal<py::object>(v));
    };
    for (; i < P.events.size(); ++i) {
        const PickleEvent& e = P.events[i];
        const std::uint32_t* R = P.refs.data() + e.x;
        PyObject* r = nullptr;
        bool ok = true;  // for effects
        switch (e.kind) {
            case PickleKind::None: case PickleKind::True: case PickleKind::False: case PickleKind::EmptyTuple:
                format_error("pickle program: a constant after the start");
                return fetch();
            case PickleKind::Int: r = PyLong_FromLongLong(static_cast<long long>(e.x)); break;
            case PickleKind::Float: {
                double d;
                std::memcpy(&d, &e.x, sizeof d);
                r = PyFloat_FromDouble(d);
                break;
            }
            case PickleKind::BigInt:
                r = _PyLong_FromByteArray(reinterpret_cast<const unsigned char*>(base + e.x), e.n, 1, 1);
                break;
            case PickleKind::Utf8: r = PyUnicode_DecodeUTF8(base + e.x, e.n, "surrogatepass"); break;
            case PickleKind::Latin1: r = PyUnicode_DecodeLatin1(base + e.x, e.n, nullptr); break;
            case PickleKind::Bytes: r = PyBytes_FromStringAndSize(base + e.x, e.n); break;
            case PickleKind::ByteArray: r = PyByteArray_FromStringAndSize(base + e.x, e.n); break;
            case PickleKind::Utf8Replace: r = PyUnicode_DecodeUTF8(base + e.x, e.n, "replace"); break;
            case PickleKind::AsciiReplace: r = PyUnicode_DecodeASCII(base + e.x, e.n, "replace"); break;
            case PickleKind::TextLine: {
                PyObject* line = PyBytes_FromStringAndSize(base + e.x, e.n);
                PyObject* op = line ? PyLong_FromLong(e.op) : nullptr;
                if (op) r = call(h.text_value, {op, line});
                Py_XDECREF(op);
                Py_XDECREF(line);
                break;
            }
            case PickleKind::Tuple:
                r = PyTuple_New(e.n);
                if (r)
                    for (std::uint32_t k = 0; k < e.n; ++k) {
                        Py_INCREF(V[R[k]]);
                        PyTuple_SET_ITEM(r, k, V[R[k]]);
                    }
                break;
            case PickleKind::List:
                r = PyList_New(e.n);
                if (r)
                    for (std::uint32_t k = 0; k < e.n; ++k) {
                        Py_INCREF(V[R[k]]);
                        PyList_SET_ITEM(r, k, V[R[k]]);
                    }
                break;
            case PickleKind::Dict:
                for (std::uint32_t k = 0; k < e.n; k += 2)
                    if (!key_ok(h, V[R[k]], "dict key")) goto failed;
                r = PyDict_New();
                for (std::uint32_t k = 0; r && k < e.n; k += 2)
                    if (PyDict_SetItem(r, V[R[k]], V[R[k + 1]]) < 0) Py_CLEAR(r);
                break;
            case PickleKind::EmptySet: r = PySet_New(nullptr); break;
            case PickleKind::FrozenSet: {
                for (std::uint32_t k = 0; k < e.n; ++k)
                    if (!key_ok(h, V[R[k]], "frozenset member")) goto failed;
                PyObject* items = PyTuple_New(e.n);
                if (!items) break;
                for (std::uint32_t k = 0; k < e.n; ++k) {
                    Py_INCREF(V[R[k]]);
                    PyTuple_SET_ITEM(items, k, V[R[k]]);
                }
                r = PyFrozenSet_New(items);
                Py_DECREF(items);
                break;
            }
            case PickleKind::Global:
                if (e.op == 0x93 && !(PyUnicode_Check(V[R[0]]) && PyUnicode_Check(V[R[1]]))) {
                    format_error("STACK_GLOBAL needs two strings");
                    break;
                }
                r = call(h.resolve_global, {V[R[0]], V[R[1]]});
                break;
            case PickleKind::Reduce: {
                // An allow-listed function on a plain tuple is called here directly; anything else goes to the
                // reduce hook, which checks and words the refusal.
                PyObject *fn = V[R[0]], *args = V[R[1]];
                bool direct = PyTuple_CheckExact(args);
                if (direct) {
                    direct = false;
                    for (Py_ssize_t k = 0; k < PyTuple_GET_SIZE(h.allowed_calls); ++k)
                        if (PyTuple_GET_ITEM(h.allowed_calls, k) == fn) direct = true;
                    for (Py_ssize_t k = 0; direct && k < PyTuple_GET_SIZE(args); ++k)
                        if (reinterpret_cast<PyObject*>(Py_TYPE(PyTuple_GET_ITEM(args, k))) == h.numpy_array_type)
                            direct = false;
                }
                if (direct) {
                    r = fast_call(h, fn, args);
                    if (!r && !PyErr_Occurred()) r = PyObject_Call(fn, args, nullptr);
                } else {
                    r = call(h.reduce, {fn, args});
                }
                break;
            }
            case PickleKind::NewObj: {
                PyObject* name = PyUnicode_FromString("NEWOBJ");
                if (name) r = call(h.record_new, {V[R[0]], V[R[1]], name});
                Py_XDECREF(name);
                break;
            }
            case PickleKind::NewObjEx: r = call(h.newobj_ex, {V[R[0]], V[R[1]], V[R[2]]}); break;
            case PickleKind::Obj: case PickleKind::Inst: {
                PyObject* args = PyTuple_New(e.n - 1);
                PyObject* name = PyUnicode_FromString(e.kind == PickleKind::Obj ? "OBJ" : "INST");
                if (args && name) {
                    for (std::uint32_t k = 1; k < e.n; ++k) {
                        Py_INCREF(V[R[k]]);
                        PyTuple_SET_ITEM(args, k - 1, V[R[k]]);
                    }
                    r = call(h.record_new, {V[R[0]], args, name});
                }
                Py_XDECREF(args);
                Py_XDECREF(name);
                break;
            }
            case PickleKind::PersId:
                r = fast_zip_storage(h, V[R[0]]);
                if (!r && !PyErr_Occurred()) r = call(h.persistent_load, {V[R[0]]});
                break;
            case PickleKind::Build: {
                PyObject* res = call(h.build, {V[R[0]], V[R[1]]});
                ok = res != nullptr;
                Py_XDECREF(res);
                break;
            }
            case PickleKind::Append: case PickleKind::Appends: {
                PyObject* lst = V[R[0]];
                if (!PyList_Check(lst)) {
                    format_error(std::string(e.kind == PickleKind::Append ? "APPEND" : "APPENDS") + " to a " +
                                 type_name(lst));
                    ok = false;
                    break;
                }
                for (std::uint32_t k = 1; ok && k < e.n; ++k) {
                    PyObject* v = finish_value(h, V[R[k]]);
                    ok = v && PyList_Append(lst, v) == 0;
                    Py_XDECREF(v);
                }
                break;
            }
            case PickleKind::SetItem: case PickleKind::SetItems: {
                PyObject* d = V[R[0]];
                if (e.kind == PickleKind::SetItem && !PyDict_Check(d)) {
                    format_error("SETITEM on a " + type_name(d));
                    ok = false;
                    break;
                }
                if (e.kind == PickleKind::SetItems && (!PyDict_Check(d) || (e.n - 1) % 2)) {
                    format_error("SETITEMS on a " + type_name(d) + " with " + std::to_string(e.n - 1) + " items");
                    ok = false;
                    break;
                }
                for (std::uint32_t k = 1; ok && k + 1 < e.n; k += 2) {
                    if (!key_ok(h, V[R[k]], "dict key")) goto failed;
                    PyObject* v = finish_value(h, V[R[k + 1]]);
                    ok = v && PyDict_SetItem(d, V[R[k]], v) == 0;
                    Py_XDECREF(v);
                }
                break;
            }
            case PickleKind::AddItems: {
                PyObject* st = V[R[0]];
                if (!PySet_Check(st)) {
                    format_error("ADDITEMS on a " + type_name(st));
                    ok = false;
                    break;
                }
                for (std::uint32_t k = 1; ok && k < e.n; ++k)
                    ok = key_ok(h, V[R[k]], "set member") && PySet_Add(st, V[R[k]]) == 0;
                break;
            }
        }
        if (false) {
        failed:
            ok = false;
            r = nullptr;
        }
        const bool is_effect = e.kind >= PickleKind::Build;
        if (is_effect ? !ok : r == nullptr) {
            if (!PyErr_Occurred()) format_error("pickle program: a value could not be made");
            return fetch();
        }
        V[i] = r;
    }
    if (P.failed)
        return py::make_tuple("vm", P.error_pos, P.error_op, P.unsafe,
                              py::reinterpret_steal<py::object>(
                                  PyUnicode_DecodeUTF8(P.error.data(), py::ssize_t(P.error.size()), "replace")));
    PyObject* root = finish_value(h, V[P.root]);
    if (!root) {
        i = P.events.size() - 1;  // never used as a position: STOP's own position is below
        PyObject *t, *v, *tb;
        PyErr_Fetch(&t, &v, &tb);
        PyErr_NormalizeException(&t, &v, &tb);
        Py_XDECREF(t);
        Py_XDECREF(tb);
        return py::make_tuple("error", P.end - 1, int('.'), py::reinterpret_steal<py::object>(v));
    }
    return py::make_tuple("ok", py::reinterpret_steal<py::object>(root), P.end);
}

}  // namespace

PYBIND11_MODULE(_core, m) {
    m.doc() = "pyloader's native core: file readers (pread) and layout transforms.";

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
        [](const py::array& a) {
            if (a.writeable()) discard_pages(a.data(), std::size_t(a.nbytes()));
        },
        py::arg("array"),
        "Give the memory pages wholly inside `array` back to the system. Its values become undefined (zeros):\n"
        "only for arrays whose contents have been copied elsewhere and that nothing reads again. A read-only\n"
        "array is left as it is: it views a checkpoint's bytes (read_file), which other arrays may share.");

    m.def(
        "darknet_header", [](const py::bytes& head) {
            const std::string h = head;
            return header_dict(parse_darknet_header(reinterpret_cast<const std::byte*>(h.data()), h.size()));
        },
        py::arg("head"), "Parse the header of a darknet .weights file from its first (up to 20) bytes.");

    m.def(
        "read_darknet",
        [](int fd, std::uint64_t size, const std::string& path, const py::list& plan_list, bool fold_bn, double eps,
           unsigned threads) {
            std::vector<DarknetLayerPlan> plan;
            plan.reserve(plan_list.size());
            for (const auto& item : plan_list) plan.push_back(plan_from_tuple(item.cast<py::tuple>()));
            DarknetResult r;
            reading(path, [&] { r = read_darknet(InputFile(fd, size), plan, fold_bn, eps, threads); });
            py::capsule base = make_owner(std::move(r.arena));
            py::list layers;
            for (const auto& arrays : r.layers) {
                py::list items;
                for (const auto& a : arrays) items.append(py::make_tuple(a.role, float_view(a.data, a.shape, base)));
                layers.append(items);
            }
            return py::make_tuple(header_dict(r.header), layers);
        },
        py::arg("fd"), py::arg("size"), py::arg("path"), py::arg("plan"), py::arg("fold_bn") = true,
        py::arg("eps") = 1e-5, py::arg("threads") = 0,
        "Read a darknet .weights file, open as `fd` with `size` bytes (pread; `path` for messages), against a\n"
        "layer plan: [(kind, label, ...)] in file order. Returns (header, [[(role, array), ...] per plan entry]),\n"
        "the arrays in memory of their own.");

    m.def(
        "half_widening", [](std::optional<bool> f16c) { return f16c ? use_f16c(*f16c) : half_widening(); },
        py::arg("f16c") = py::none(),
        "The float16 widening in use: 'f16c', 'sse2' or 'scalar'; f16c=False turns F16C off for the process (the\n"
        "portable path, for tests and benchmarks), True back on where the CPU has it.");

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
            // The output in an arena of its own: from the arena pool, so repeated reads write into warm pages
            // instead of faulting in fresh ones (which cost more than the transpose).
            auto arena = std::make_unique<Arena>();
            arena->reserve(checked_mul(checked_mul(checked_mul(checked_mul(O, I, "kernel"), H, "kernel"), W, "kernel"),
                                       sizeof(float), "kernel bytes"));
            arena->allocate();
            float* dst = reinterpret_cast<float*>(arena->at(0));
            py::array out = float_view(dst, {H, W, I, O}, make_owner(std::move(arena)));
            const void* src = contiguous.data();
            const float* s = scale_obj.is_none() ? nullptr : scale.data();
            {
                py::gil_scoped_release release;
                const std::size_t step = std::size_t(kernel_chunk_rows(I * H * W * in.itemsize()));
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
        "convs_to_hwio",
        [](const py::list& jobs, unsigned threads) {
            std::vector<ConvJob> plan(jobs.size());
            std::vector<py::array> held;  // the inputs, C-contiguous, alive until the transforms end
            std::vector<std::pair<std::size_t, std::size_t>> at(jobs.size());  // (kernel, bias) arena offsets
            auto arena = std::make_unique<Arena>();
            auto input = [&](py::handle h) {
                held.push_back(py::array::ensure(h.cast<py::array>(), py::array::c_style));
                return held.back();
            };
            for (std::size_t k = 0; k < plan.size(); ++k) {
                const auto job = jobs[k].cast<py::tuple>();
                if (job.size() != 3) throw FormatError("convs_to_hwio: a job is (kernel, norm or None, bias or None)");
                ConvJob& j = plan[k];
                const py::array kernel = input(job[0]);
                if (kernel.ndim() != 4) throw FormatError("convs_to_hwio: expected a 4-d kernel");
                j.kernel_type = dtype_of(kernel);
                j.kernel = kernel.data();
                j.O = std::size_t(kernel.shape(0)), j.I = std::size_t(kernel.shape(1));
                j.H = std::size_t(kernel.shape(2)), j.W = std::size_t(kernel.shape(3));
                std::vector<py::array> params;  // gamma, beta, mean, var, then the conv bias
                if (!job[1].is_none()) {
                    const auto norm = job[1].cast<py::tuple>();
                    if (norm.size() != 5) throw FormatError("convs_to_hwio: a norm is (gamma, beta, mean, var, eps)");
                    for (std::size_t p = 0; p < 4; ++p) params.push_back(input(norm[p]));
                    j.eps = norm[4].cast<double>();
                }
                if (!job[2].is_none()) params.push_back(input(job[2]));
                for (const auto& p : params)
                    if (dtype_of(p) != dtype_of(params[0]) || p.ndim() != 1 || std::size_t(p.size()) != j.O)
                        throw FormatError("convs_to_hwio: the norm and bias must be 1-d arrays of one dtype and of "
                                          "one element per output channel");
                if (!params.empty()) j.param_type = dtype_of(params[0]);
                if (!job[1].is_none()) {
                    j.gamma = params[0].data(), j.beta = params[1].data(), j.mean = params[2].data();
                    j.var = params[3].data();
                }
                if (!job[2].is_none()) j.conv_bias = params.back().data();
                const std::uint64_t n = checked_mul(checked_mul(checked_mul(j.O, j.I, "kernel"), j.H, "kernel"), j.W,
                                                    "kernel");
                at[k].first = arena->reserve(checked_mul(n, sizeof(float), "kernel bytes"));
                at[k].second = params.empty() ? SIZE_MAX : arena->reserve(checked_mul(j.O, sizeof(float), "bias"));
            }
            // All outputs in one arena (from the arena pool: repeated reads write into warm pages), one owner.
            arena->allocate();
            py::list out;
            const py::capsule base = make_owner(std::move(arena));
            const auto* owner = static_cast<const Arena*>(base.get_pointer());
            for (std::size_t k = 0; k < plan.size(); ++k) {
                ConvJob& j = plan[k];
                j.out_kernel = reinterpret_cast<float*>(owner->at(at[k].first));
                j.out_bias = at[k].second == SIZE_MAX ? nullptr : reinterpret_cast<float*>(owner->at(at[k].second));
                py::object bias = j.out_bias ? py::object(float_view(j.out_bias, {j.O}, base)) : py::none();
                out.append(py::make_tuple(float_view(j.out_kernel, {j.H, j.W, j.I, j.O}, base), bias));
            }
            {
                py::gil_scoped_release release;
                convs_to_hwio(plan, threads);
            }
            return out;
        },
        py::arg("jobs"), py::arg("threads") = 0,
        "Convolutions to Keras layout in one pass: jobs [(OIHW kernel, (gamma, beta, mean, var, eps) or None,\n"
        "conv bias or None)], float32 or float16 (the norm's arrays and the bias of one dtype). Returns\n"
        "[(HWIO float32 kernel scaled by gamma / sqrt(var + eps), float32 bias or None)]: the bias folded\n"
        "(beta + (conv bias - mean) * scale) with a norm, the conv bias widened without one; all in one arena.");

    // ---- PyTorch zip ----
    // The file's bytes are handed to Python as a read-only uint8 array whose base owns them, so numpy views of
    // checkpoint records (np.frombuffer / slicing) are zero-copy and keep them alive.
    m.def(
        "read_file",
        [](int fd, std::uint64_t size, const std::string& path, unsigned threads) {
            std::unique_ptr<Arena> bytes;
            reading(path, [&] { bytes = InputFile(fd, size).read_all(threads); });
            const std::byte* p = size ? bytes->at(0) : nullptr;
            return read_only_bytes(p, size, make_owner(std::move(bytes)));
        },
        py::arg("fd"), py::arg("size"), py::arg("path"), py::arg("threads") = 0,
        "Read a whole file, open as `fd` with `size` bytes (pread; `path` for messages), into memory of its own;\n"
        "returns a read-only uint8 array over it.");

    m.def(
        "torch_zip_open",
        [](int fd, std::uint64_t size, const std::string& path) {
            TorchZipIndex idx;
            std::unique_ptr<FileImage> image;
            reading(path, [&] {
                const InputFile file(fd, size);
                image = std::make_unique<FileImage>(size);
                idx = index_torch_zip(FileImage::Keeping(*image, file));  // the directory's bytes kept in the image
                std::vector<std::pair<std::uint64_t, std::uint64_t>> storages;  // not kept: read if used
                for (const auto& [key, r] : idx.records) storages.push_back(r);
                image->forget(storages);
                image->read(file, {{idx.pickle_offset, idx.pickle_size}}, 1);
            });
            const std::byte* p = image->data();
            py::capsule owner(image.release(), kImageCapsule, [](void* q) { delete static_cast<FileImage*>(q); });
            return py::make_tuple(read_only_bytes(p, size, owner), index_dict(idx));
        },
        py::arg("fd"), py::arg("size"), py::arg("path"),
        "Open a PyTorch zip checkpoint, open as `fd` with `size` bytes (`path` for messages), reading only its\n"
        "directory (end record, central directory, local headers) and its pickle. Returns (image, index): image, a\n"
        "read-only uint8 array of `size` bytes standing for the file, holds the pickle's bytes and the directory's\n"
        "bytes that were read (no storage's) at their offsets\n"
        "(what else it holds is undefined until read_into_image); index as torch_zip_index gives it.");

    m.def(
        "read_into_image",
        [](int fd, std::uint64_t size, const std::string& path, const py::array& image,
           const std::vector<std::pair<std::uint64_t, std::uint64_t>>& ranges, unsigned threads) {
            FileImage* file_image = file_image_of(image, size);
            reading(path, [&] {
                file_image->read(InputFile(fd, size), ranges, threads);
                file_image->clear_rest();
            });
            return file_image->kept();
        },
        py::arg("fd"), py::arg("size"), py::arg("path"), py::arg("image"), py::arg("ranges"), py::arg("threads") = 0,
        "Read the bytes [offset, offset + length) of each (offset, length) range of the file (open as `fd`, `size`\n"
        "bytes; pread over up to `threads` threads) into the torch_zip_open image at the same offsets; every byte\n"
        "of the image read neither here nor by torch_zip_open is zero afterwards. Returns the (offset, length)\n"
        "ranges the image holds as read, sorted and merged: these, torch_zip_open's (the directory's bytes it\n"
        "read, the pickle) but no storage's bytes that were not asked for.");

    m.def(
        "image_matches",
        [](int fd, std::uint64_t size, const std::string& path, const py::array& image,
           const std::vector<std::pair<std::uint64_t, std::uint64_t>>& ranges, unsigned threads) {
            const FileImage* file_image = file_image_of(image, size);
            bool same = false;
            reading(path, [&] { same = file_image->matches(InputFile(fd, size), ranges, threads); });
            return same;
        },
        py::arg("fd"), py::arg("size"), py::arg("path"), py::arg("image"), py::arg("ranges"), py::arg("threads") = 0,
        "Whether the file's bytes [offset, offset + length) of each (offset, length) range (open as `fd`, `size`\n"
        "bytes; pread over up to `threads` threads) equal the torch_zip_open image's at the same offsets; the image\n"
        "is not written.");

    m.def("viewed_ranges", &viewed_ranges, py::arg("root"), py::arg("image"), py::arg("follow"),
          "[(offset, length)] of `image` (a 1-d byte array) that the arrays reachable from `root` view, sorted and\n"
          "merged: through dict keys and values, list, tuple, set and frozenset items, and the attributes that\n"
          "`follow` ({type: (attribute names)}) names for objects of exactly those types.");

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
            return index_dict(idx);
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
    // ---- pickle ----
    m.def(
        "run_pickle",
        [](const py::buffer& buf, std::uint64_t start, std::uint64_t end, const py::object& hooks,
           std::uint32_t max_depth) {
            py::buffer_info info = buf.request();
            if (info.ndim != 1 || info.itemsize != 1) throw FormatError("run_pickle: expected a 1-d byte buffer");
            const std::uint64_t size = std::uint64_t(info.size);
            end = std::min(end, size);
            start = std::min(start, end);
            const PickleHooks h(hooks);
            const std::byte* data = static_cast<const std::byte*>(info.ptr) + start;
            PickleLimits limits;
            limits.max_depth = max_depth;
            PickleProgram P;
            {
                py::gil_scoped_release release;
                P = run_pickle(data, std::size_t(end - start), limits);
            }
            return replay_pickle(P, data, h);
        },
        py::arg("buffer"), py::arg("start"), py::arg("end"), py::arg("hooks"), py::arg("max_depth"),
        "Run the pickle in buffer[start:end] (pickle_vm) and build its value, calling the policy at its effects\n"
        "through `hooks` (a pyloader.torch_reader.policy.Hooks: its named attributes, documented there).\n"
        "Positions returned are relative to `start`.");
    // ---- end pickle ----
}
