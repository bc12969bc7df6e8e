#include "pickle_vm.h"

#include <algorithm>
#include <cstring>
#include <limits>
#include <unordered_map>

#include "checked.h"

namespace pyloader {

namespace {

struct VmError {
    bool unsafe;
    std::string message;
};

[[noreturn]] void fail(std::string message) { throw VmError{false, std::move(message)}; }
[[noreturn]] void refuse(std::string message) { throw VmError{true, std::move(message)}; }

// Python's repr of a one-byte bytes object, e.g. b'\xff' (for "unknown opcode" messages).
std::string byte_repr(std::uint8_t c) {
    static const char hex[] = "0123456789abcdef";
    if (c == '\'') return "b\"'\"";
    if (c == '\\') return "b'\\\\'";
    if (c == '\t') return "b'\\t'";
    if (c == '\n') return "b'\\n'";
    if (c == '\r') return "b'\\r'";
    if (c >= 0x20 && c < 0x7f) return std::string("b'") + char(c) + "'";
    return std::string("b'\\x") + hex[c >> 4] + hex[c & 15] + "'";
}

constexpr std::uint32_t kAbsent = std::numeric_limits<std::uint32_t>::max();

class Machine {
public:
    Machine(const std::uint8_t* data, std::uint64_t size, const PickleLimits& limits, PickleProgram& out)
        : d_(data), size_(size), lim_(limits), P_(out) {
        // Each value event consumes at least one input byte, apart from the constants and the two hidden
        // name nodes of GLOBAL/INST (which consume at least three): a bound that never binds in practice.
        max_events_ = checked_add(checked_mul(size, 2, "pickle event bound"), 16, "pickle event bound");
        for (PickleKind k : {PickleKind::None, PickleKind::True, PickleKind::False, PickleKind::EmptyTuple})
            P_.events.push_back(PickleEvent{k, 0, 0, 0, 0, 0});
        depth_.assign(4, 0);
    }

    void run() {
        int last_op = -1;
        for (;;) {
            op_pos_ = pos_;
            if (pos_ >= size_) {
                op_ = last_op;  // as a sequential reader reports it: the previous opcode's name
                fail("truncated: needs 1 bytes, 0 left before the end of the pickle");
            }
            const std::uint8_t op = d_[pos_++];
            op_ = last_op = op;
            if (step(op)) return;
        }
    }

    int op_ = -1;
    std::uint64_t op_pos_ = 0;

private:
    const std::uint8_t* d_;
    std::uint64_t size_;
    std::uint64_t pos_ = 0;
    const PickleLimits& lim_;
    PickleProgram& P_;
    std::uint64_t max_events_;
    std::vector<std::uint32_t> stack_;
    std::vector<std::size_t> marks_;
    std::vector<std::uint32_t> depth_;
    std::vector<std::uint32_t> memo_small_;
    std::unordered_map<std::int64_t, std::uint32_t> memo_int_;
    std::unordered_map<std::string, std::uint32_t> memo_text_;  // keys outside int64 (protocol 0 PUT/GET)
    std::uint64_t memo_count_ = 0;

    // ---- input
    std::uint64_t take(std::uint64_t n) {
        if (n > size_ - pos_)
            fail("truncated: needs " + std::to_string(n) + " bytes, " + std::to_string(size_ - pos_) +
                 " left before the end of the pickle");
        const std::uint64_t p = pos_;
        pos_ += n;
        return p;
    }
    std::uint64_t le(unsigned nbytes) {
        const std::uint64_t p = take(nbytes);
        std::uint64_t v = 0;
        for (unsigned k = 0; k < nbytes; ++k) v |= std::uint64_t(d_[p + k]) << (8 * k);
        return v;
    }
    std::uint8_t u8() { return d_[take(1)]; }
    // A text opcode's line: offset and length, not counting the newline.
    std::pair<std::uint64_t, std::uint64_t> line() {
        const void* nl = std::memchr(d_ + pos_, '\n', size_ - pos_);
        if (!nl) fail("truncated: a text opcode's line has no end");
        const std::uint64_t start = pos_;
        const std::uint64_t len = std::uint64_t(static_cast<const std::uint8_t*>(nl) - (d_ + pos_));
        pos_ = start + len + 1;
        return {start, len};
    }

    // ---- nodes and stack
    std::uint32_t node(PickleKind k, std::uint32_t n, std::uint64_t x, std::uint32_t depth) {
        if (P_.events.size() >= max_events_ || P_.events.size() >= kAbsent)
            fail("more values than the pickle's size allows");
        if (depth > lim_.max_depth)
            fail("values nested more than " + std::to_string(lim_.max_depth) + " deep");
        P_.events.push_back(PickleEvent{k, std::uint8_t(op_), 0, n, op_pos_, x});
        depth_.push_back(depth);
        return std::uint32_t(P_.events.size() - 1);
    }
    std::uint32_t leaf(PickleKind k, std::uint32_t n, std::uint64_t x) { return node(k, n, x, 0); }
    std::uint32_t slice(PickleKind k, std::uint64_t off, std::uint64_t len) {
        if (len > std::numeric_limits<std::uint32_t>::max()) fail("a value of more than 4 GiB");
        return leaf(k, std::uint32_t(len), off);
    }
    // An event over refs[from, to) of the stack (or of `ids`), depth 1 + the deepest operand.
    std::uint32_t compound(PickleKind k, const std::uint32_t* ids, std::size_t count) {
        std::uint32_t dep = 0;
        for (std::size_t i = 0; i < count; ++i) dep = std::max(dep, depth_[ids[i]]);
        const std::uint64_t start = P_.refs.size();
        if (count > std::numeric_limits<std::uint32_t>::max()) fail("too many items");
        P_.refs.insert(P_.refs.end(), ids, ids + count);
        return node(k, std::uint32_t(count), start, dep + 1);
    }
    // An effect on `ids[0]` with operands ids[1..] (no value): the target becomes at least as deep as its
    // deepest operand plus one. (Depth is exact for tuples and frozensets, whose hashing recurses.)
    void effect(PickleKind k, const std::uint32_t* ids, std::size_t count) {
        std::uint32_t dep = 0;
        for (std::size_t i = 1; i < count; ++i) dep = std::max(dep, depth_[ids[i]] + 1);
        if (dep > lim_.max_depth)
            fail("values nested more than " + std::to_string(lim_.max_depth) + " deep");
        if (count > std::numeric_limits<std::uint32_t>::max()) fail("too many items");
        if (P_.events.size() >= max_events_ || P_.events.size() >= kAbsent)
            fail("more values than the pickle's size allows");
        const std::uint64_t start = P_.refs.size();
        P_.refs.insert(P_.refs.end(), ids, ids + count);
        P_.events.push_back(PickleEvent{k, std::uint8_t(op_), 0, std::uint32_t(count), op_pos_, start});
        depth_.push_back(0);
        depth_[ids[0]] = std::max(depth_[ids[0]], dep);
    }
    std::size_t floor_() const { return marks_.empty() ? 0 : marks_.back(); }
    void push(std::uint32_t id) { stack_.push_back(id); }
    std::uint32_t pop() {
        if (stack_.size() <= floor_()) fail("stack underflow");
        const std::uint32_t v = stack_.back();
        stack_.pop_back();
        return v;
    }
    std::uint32_t top() {
        if (stack_.size() <= floor_()) fail("stack underflow");
        return stack_.back();
    }
    // Pops the items above the last MARK into `items` (and the MARK).
    void pop_mark(std::vector<std::uint32_t>& items) {
        if (marks_.empty()) fail("pops a MARK, but none is set");
        const std::size_t k = marks_.back();
        marks_.pop_back();
        items.assign(stack_.begin() + std::ptrdiff_t(k), stack_.end());
        stack_.resize(k);
    }

    // ---- memo
    void memo_put(std::int64_t key, std::uint32_t id) {
        if (key >= 0 && std::uint64_t(key) < std::max<std::uint64_t>(1 << 16, size_)) {  // the threshold is fixed per run
            if (std::uint64_t(key) >= memo_small_.size())
                memo_small_.resize(std::max<std::size_t>(std::size_t(key) + 1, memo_small_.size() * 2), kAbsent);
            if (memo_small_[std::size_t(key)] == kAbsent) ++memo_count_;
            memo_small_[std::size_t(key)] = id;
            return;
        }
        auto r = memo_int_.insert_or_assign(key, id);
        if (r.second) ++memo_count_;
    }
    std::uint32_t memo_get(std::int64_t key) {
        if (key >= 0 && std::uint64_t(key) < memo_small_.size() && memo_small_[std::size_t(key)] != kAbsent)
            return memo_small_[std::size_t(key)];
        if (auto it = memo_int_.find(key); it != memo_int_.end()) return it->second;
        fail("memo key " + std::to_string(key) + " was never stored");
    }
    // A protocol 0 memo key: the line parsed as Python's int(bytes) does (ASCII whitespace around, a sign,
    // digits with single underscores between them). Returns false with `text` set for keys beyond int64.
    bool text_key(std::uint64_t off, std::uint64_t len, std::int64_t& key, std::string& text) {
        auto space = [](std::uint8_t c) { return c == ' ' || (c >= '\t' && c <= '\r'); };
        std::uint64_t a = off, b = off + len;
        while (a < b && space(d_[a])) ++a;
        while (b > a && space(d_[b - 1])) --b;
        bool neg = false;
        if (a < b && (d_[a] == '+' || d_[a] == '-')) neg = d_[a++] == '-';
        std::string digits;
        bool prev_digit = false;
        for (std::uint64_t i = a; i < b; ++i) {
            const std::uint8_t c = d_[i];
            if (c >= '0' && c <= '9') {
                if (!(digits.empty() && c == '0')) digits.push_back(char(c));
                prev_digit = true;
            } else if (c == '_' && prev_digit && i + 1 < b && d_[i + 1] >= '0' && d_[i + 1] <= '9') {
                prev_digit = false;
            } else {
                fail("malformed pickle: invalid literal for int() with base 10");
            }
        }
        if (a == b) fail("malformed pickle: invalid literal for int() with base 10");
        if (digits.empty()) {
            key = 0;
            return true;
        }
        if (digits.size() <= 18) {
            key = std::stoll(digits);
            if (neg) key = -key;
            return true;
        }
        text = (neg ? "-" : "") + digits;
        return false;
    }
    void text_put() {
        const auto [off, len] = line();
        std::int64_t key;
        std::string text;
        const bool small = text_key(off, len, key, text);
        const std::uint32_t v = top();
        if (small) return memo_put(key, v);
        if (memo_text_.insert_or_assign(text, v).second) ++memo_count_;
    }
    std::uint32_t text_get() {
        const auto [off, len] = line();
        std::int64_t key;
        std::string text;
        if (text_key(off, len, key, text)) return memo_get(key);
        auto it = memo_text_.find(text);
        if (it == memo_text_.end()) fail("memo key " + text + " was never stored");
        return it->second;
    }

    // Ints in [-5, 256] are one object each in CPython anyway: one node per value, however often it appears.
    std::uint32_t small_cache_[262] = {};
    std::uint32_t small_int(std::int64_t v) {
        if (v < -5 || v > 256) return leaf(PickleKind::Int, 0, std::uint64_t(v));
        std::uint32_t& id = small_cache_[v + 5];
        if (!id) id = leaf(PickleKind::Int, 0, std::uint64_t(v));
        return id;
    }
    // LONG1/LONG4: up to 8 bytes become an Int, longer ones a BigInt slice.
    std::uint32_t long_bytes(std::uint64_t n) {
        const std::uint64_t p = take(n);
        if (n > 8) return slice(PickleKind::BigInt, p, n);
        std::uint64_t v = 0;
        for (std::uint64_t k = 0; k < n; ++k) v |= std::uint64_t(d_[p + k]) << (8 * k);
        if (n > 0 && n < 8 && (d_[p + n - 1] & 0x80)) v |= ~std::uint64_t(0) << (8 * n);
        return small_int(std::int64_t(v));
    }
    std::uint32_t string_node(PickleKind k, std::uint64_t n, const char* what) {
        if (n > lim_.max_string) fail(std::string(what) + " of " + std::to_string(n) + " bytes");
        return slice(k, take(n), n);
    }
    void global_from_lines() {
        const auto [moff, mlen] = line();
        const auto [noff, nlen] = line();
        const std::uint32_t ids[2] = {slice(PickleKind::Utf8Replace, moff, mlen),
                                      slice(PickleKind::Utf8Replace, noff, nlen)};
        push(compound(PickleKind::Global, ids, 2));
    }

    std::vector<std::uint32_t> items_;
    std::vector<std::uint32_t> ids_;

    // One opcode; true at STOP.
    bool step(std::uint8_t op) {
        switch (op) {
            case 'h': push(memo_get(u8())); break;                                   // BINGET
            case 'j': push(memo_get(std::int64_t(le(4)))); break;                    // LONG_BINGET
            case 'g': push(text_get()); break;                                       // GET
            case 'q': { const std::int64_t k = u8(); memo_put(k, top()); break; }    // BINPUT
            case 'r': { const std::int64_t k = std::int64_t(le(4)); memo_put(k, top()); break; }
            case 'p': text_put(); break;                                            // PUT
            case 0x94: { const std::uint32_t v = top(); memo_put(std::int64_t(memo_count_), v); break; }
            case 'R': {                                                              // REDUCE
                const std::uint32_t args = pop(), fn = pop();
                const std::uint32_t ids[2] = {fn, args};
                push(compound(PickleKind::Reduce, ids, 2));
                break;
            }
            case ')': push(3); break;
            case 'N': push(0); break;
            case 0x88: push(1); break;
            case 0x89: push(2); break;
            case 'K': push(small_int(u8())); break;
            case 'M': push(small_int(std::int64_t(le(2)))); break;
            case 'J': push(small_int(std::int64_t(std::int32_t(std::uint32_t(le(4)))))); break;
            case 0x8a: push(long_bytes(u8())); break;  // LONG1
            case 0x8b: {                               // LONG4
                const std::int64_t n = std::int32_t(std::uint32_t(le(4)));
                if (n < 0 || n > (1 << 16)) fail("LONG4 of " + std::to_string(n) + " bytes");
                push(long_bytes(std::uint64_t(n)));
                break;
            }
            case 'G': push(leaf(PickleKind::Float, 0, [&] {  // BINFLOAT: big-endian
                const std::uint64_t p = take(8);
                std::uint64_t v = 0;
                for (int k = 0; k < 8; ++k) v = (v << 8) | d_[p + k];
                return v;
            }())); break;
            case 'I': case 'L': case 'F': case 'S': case 'V': {
                const auto [off, len] = line();
                push(slice(PickleKind::TextLine, off, len));
                break;
            }
            case 0x80: {  // PROTO
                const unsigned proto = u8();
                if (proto > 5) fail("unsupported pickle protocol " + std::to_string(proto));
                break;
            }
            case 0x95: take(8); break;  // FRAME
            case '.': {                 // STOP
                if (stack_.size() != 1 || !marks_.empty())
                    fail("STOP with " + std::to_string(stack_.size()) + " values on the stack");
                P_.root = stack_[0];
                P_.end = pos_;
                return true;
            }
            case '(': marks_.push_back(stack_.size()); break;
            case '0': pop(); break;
            case '1': pop_mark(items_); break;
            case '2': push(top()); break;
            case 'X': push(string_node(PickleKind::Utf8, le(4), "string")); break;
            case 0x8c: push(string_node(PickleKind::Utf8, u8(), "string")); break;
            case 0x8d: push(string_node(PickleKind::Utf8, le(8), "string")); break;
            case 'B': push(string_node(PickleKind::Bytes, le(4), "bytes")); break;
            case 'C': push(string_node(PickleKind::Bytes, u8(), "bytes")); break;
            case 0x8e: push(string_node(PickleKind::Bytes, le(8), "bytes")); break;
            case 0x96: push(string_node(PickleKind::ByteArray, le(8), "bytes")); break;
            case 'T': {
                const std::int64_t n = std::int32_t(std::uint32_t(le(4)));
                if (n < 0) fail("BINSTRING of negative length " + std::to_string(n));
                push(slice(PickleKind::Latin1, take(std::uint64_t(n)), std::uint64_t(n)));
                break;
            }
            case 'U': { const std::uint64_t n = u8(); push(slice(PickleKind::Latin1, take(n), n)); break; }
            case '}': push(compound(PickleKind::Dict, nullptr, 0)); break;
            case ']': push(compound(PickleKind::List, nullptr, 0)); break;
            case 0x8f: push(compound(PickleKind::EmptySet, nullptr, 0)); break;
            case 't':
                pop_mark(items_);
                push(items_.empty() ? 3 : compound(PickleKind::Tuple, items_.data(), items_.size()));
                break;
            case 0x85: { const std::uint32_t a = pop(); push(compound(PickleKind::Tuple, &a, 1)); break; }
            case 0x86: {
                const std::uint32_t b = pop(), a = pop();
                const std::uint32_t ids[2] = {a, b};
                push(compound(PickleKind::Tuple, ids, 2));
                break;
            }
            case 0x87: {
                const std::uint32_t c = pop(), b = pop(), a = pop();
                const std::uint32_t ids[3] = {a, b, c};
                push(compound(PickleKind::Tuple, ids, 3));
                break;
            }
            case 'l': pop_mark(items_); push(compound(PickleKind::List, items_.data(), items_.size())); break;
            case 'd':
                pop_mark(items_);
                if (items_.size() % 2) fail("DICT with an odd number of items");
                push(compound(PickleKind::Dict, items_.data(), items_.size()));
                break;
            case 0x91:
                pop_mark(items_);
                push(compound(PickleKind::FrozenSet, items_.data(), items_.size()));
                break;
            case 'a': {  // APPEND
                const std::uint32_t v = pop(), lst = top();
                const std::uint32_t ids[2] = {lst, v};
                effect(PickleKind::Append, ids, 2);
                break;
            }
            case 's': {  // SETITEM
                const std::uint32_t v = pop(), k = pop(), dct = top();
                const std::uint32_t ids[3] = {dct, k, v};
                effect(PickleKind::SetItem, ids, 3);
                break;
            }
            case 'e': case 'u': case 0x90: {  // APPENDS, SETITEMS, ADDITEMS
                pop_mark(items_);
                ids_.assign(1, top());
                ids_.insert(ids_.end(), items_.begin(), items_.end());
                effect(op == 'e' ? PickleKind::Appends : op == 'u' ? PickleKind::SetItems : PickleKind::AddItems,
                       ids_.data(), ids_.size());
                break;
            }
            case 'b': {  // BUILD
                const std::uint32_t state = pop(), obj = top();
                const std::uint32_t ids[2] = {obj, state};
                effect(PickleKind::Build, ids, 2);
                break;
            }
            case 'c': global_from_lines(); break;
            case 0x93: {  // STACK_GLOBAL
                const std::uint32_t name = pop(), module = pop();
                const std::uint32_t ids[2] = {module, name};
                push(compound(PickleKind::Global, ids, 2));
                break;
            }
            case 0x81: {  // NEWOBJ
                const std::uint32_t args = pop(), cls = pop();
                const std::uint32_t ids[2] = {cls, args};
                push(compound(PickleKind::NewObj, ids, 2));
                break;
            }
            case 0x92: {  // NEWOBJ_EX
                const std::uint32_t kwargs = pop(), args = pop(), cls = pop();
                const std::uint32_t ids[3] = {cls, args, kwargs};
                push(compound(PickleKind::NewObjEx, ids, 3));
                break;
            }
            case 'o':  // OBJ
                pop_mark(items_);
                if (items_.empty()) fail("OBJ without a class");
                push(compound(PickleKind::Obj, items_.data(), items_.size()));
                break;
            case 'i': {  // INST: the global first (a refusal there comes first), then the MARK
                global_from_lines();
                const std::uint32_t cls = pop();
                pop_mark(items_);
                ids_.assign(1, cls);
                ids_.insert(ids_.end(), items_.begin(), items_.end());
                push(compound(PickleKind::Inst, ids_.data(), ids_.size()));
                break;
            }
            case 'Q': { const std::uint32_t pid = pop(); push(compound(PickleKind::PersId, &pid, 1)); break; }
            case 'P': {
                const auto [off, len] = line();
                const std::uint32_t pid = slice(PickleKind::AsciiReplace, off, len);
                push(compound(PickleKind::PersId, &pid, 1));
                break;
            }
            case 0x82: case 0x83: case 0x84:
                refuse(std::string(pickle_opname(op)) + ": the extension registry is not used by checkpoints");
            case 0x97: case 0x98:
                refuse(std::string(pickle_opname(op)) + ": out-of-band buffers are not used by checkpoints");
            default:
                fail("unknown opcode " + byte_repr(op));
        }
        return false;
    }
};

}  // namespace

PickleProgram run_pickle(const std::byte* data, std::size_t size, const PickleLimits& limits) {
    PickleProgram P;
    Machine m(reinterpret_cast<const std::uint8_t*>(data), size, limits, P);
    try {
        m.run();
    } catch (const VmError& e) {
        P.failed = true;
        P.unsafe = e.unsafe;
        P.error = e.message;
        P.error_op = m.op_;
        P.error_pos = m.op_pos_;
    } catch (const FormatError& e) {  // from checked arithmetic
        P.failed = true;
        P.error = e.what();
        P.error_op = m.op_;
        P.error_pos = m.op_pos_;
    }
    return P;
}

const char* pickle_opname(int op) {
    switch (op) {
        case '(': return "MARK"; case '.': return "STOP"; case '0': return "POP"; case '1': return "POP_MARK";
        case '2': return "DUP"; case 'F': return "FLOAT"; case 'I': return "INT"; case 'J': return "BININT";
        case 'K': return "BININT1"; case 'L': return "LONG"; case 'M': return "BININT2"; case 'N': return "NONE";
        case 'P': return "PERSID"; case 'Q': return "BINPERSID"; case 'R': return "REDUCE";
        case 'S': return "STRING"; case 'T': return "BINSTRING"; case 'U': return "SHORT_BINSTRING";
        case 'V': return "UNICODE"; case 'X': return "BINUNICODE"; case 'a': return "APPEND";
        case 'b': return "BUILD"; case 'c': return "GLOBAL"; case 'd': return "DICT"; case '}': return "EMPTY_DICT";
        case 'e': return "APPENDS"; case 'g': return "GET"; case 'h': return "BINGET"; case 'i': return "INST";
        case 'j': return "LONG_BINGET"; case 'l': return "LIST"; case ']': return "EMPTY_LIST"; case 'o': return "OBJ";
        case 'p': return "PUT"; case 'q': return "BINPUT"; case 'r': return "LONG_BINPUT"; case 's': return "SETITEM";
        case 't': return "TUPLE"; case ')': return "EMPTY_TUPLE"; case 'u': return "SETITEMS";
        case 'G': return "BINFLOAT"; case 0x80: return "PROTO"; case 0x81: return "NEWOBJ"; case 0x82: return "EXT1";
        case 0x83: return "EXT2"; case 0x84: return "EXT4"; case 0x85: return "TUPLE1"; case 0x86: return "TUPLE2";
        case 0x87: return "TUPLE3"; case 0x88: return "NEWTRUE"; case 0x89: return "NEWFALSE";
        case 0x8a: return "LONG1"; case 0x8b: return "LONG4"; case 'B': return "BINBYTES";
        case 'C': return "SHORT_BINBYTES"; case 0x8c: return "SHORT_BINUNICODE"; case 0x8d: return "BINUNICODE8";
        case 0x8e: return "BINBYTES8"; case 0x8f: return "EMPTY_SET"; case 0x90: return "ADDITEMS";
        case 0x91: return "FROZENSET"; case 0x92: return "NEWOBJ_EX"; case 0x93: return "STACK_GLOBAL";
        case 0x94: return "MEMOIZE"; case 0x95: return "FRAME"; case 0x96: return "BYTEARRAY8";
        case 0x97: return "NEXT_BUFFER"; case 0x98: return "READONLY_BUFFER";
        default: return "";
    }
}

bool strided_view_fits(std::uint64_t offset, const std::uint64_t* size, const std::uint64_t* stride,
                       std::size_t ndim, std::uint64_t numel, std::uint64_t itemsize) {
    constexpr std::uint64_t limit = std::uint64_t(1) << 63;
    if (itemsize == 0 || offset >= limit || numel >= limit) return false;
    std::uint64_t count = 1, distinct = 1, last = offset, t = 0;
    for (std::size_t k = 0; k < ndim; ++k) {
        const std::uint64_t s = size[k], st = stride[k];
        if (s == 0 || s >= limit || st >= limit) return false;  // no elements: the exact path makes the zeros
        if (__builtin_mul_overflow(count, s, &count) || count >= limit) return false;
        if (st != 0 && (__builtin_mul_overflow(distinct, s, &distinct) || distinct >= limit)) return false;
        if (__builtin_mul_overflow(s - 1, st, &t) || __builtin_add_overflow(last, t, &last) || last >= limit)
            return false;
        if (__builtin_mul_overflow(st, itemsize, &t) || t >= limit) return false;
    }
    if (last >= numel || distinct > numel - offset) return false;
    if (__builtin_mul_overflow(count, itemsize, &t) || t >= limit) return false;
    if (__builtin_mul_overflow(last + 1, itemsize, &t) || t >= limit) return false;  // covers offset * itemsize
    return true;
}

}  // namespace pyloader
