// The pickle opcode machine: stack, MARKs, memo, scalars, strings and containers, and the opcodes with
// effects (GLOBAL, REDUCE, NEWOBJ, BUILD, PERSID, SETITEM(S), APPEND(S), ADDITEMS) as a flat program of events.
//
// It decides nothing about what a pickle may do: it only runs the stack discipline and checks structure
// (lengths against the input, MARKs, memo keys, nesting depth, sizes). A caller replays the events in order
// (pickle_vm's output is a program in "SSA" form: each value event defines the node with its index, effects
// refer to earlier nodes), applying its own policy at the effect events, so that the order of effects is the
// pickle's. Strings and bytes are offsets into the input, never copied. Every event keeps its opcode's byte
// position for messages.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace pyloader {

enum class PickleKind : std::uint8_t {
    // Constants: nodes 0..3 always hold these four.
    None, True, False, EmptyTuple,
    // Scalars. Int: `x` is the int64 value. Float: `x` holds the double's bits.
    Int, Float,
    // Input slices: `x` = offset from the start of the input, `n` = length.
    BigInt,       // LONG1/LONG4 two's complement little-endian bytes (more than 8 of them)
    Utf8,         // BINUNICODE*: UTF-8 with surrogates allowed ('surrogatepass')
    Latin1,       // BINSTRING, SHORT_BINSTRING
    Bytes,        // BINBYTES*
    ByteArray,    // BYTEARRAY8
    Utf8Replace,  // a GLOBAL/INST module or name line (undecodable bytes replaced)
    AsciiReplace, // a PERSID line
    TextLine,     // I, L, F, S, V: the line (the caller parses it as Python does); `op` says which
    // Containers. `x` = first index into PickleProgram::refs, `n` = count.
    Tuple, List, Dict /* n = 2 * pairs */, EmptySet, FrozenSet,
    // Effects with a value: refs as listed.
    Global,     // [module, name] (GLOBAL, INST: Utf8Replace nodes; STACK_GLOBAL: any two nodes)
    Reduce,     // [callable, args]
    NewObj,     // [cls, args]
    NewObjEx,   // [cls, args, kwargs]
    Obj,        // [cls, args...] (OBJ)
    Inst,       // [cls (a Global node), args...] (INST)
    PersId,     // [pid]
    // Effects without a value (their node stays empty): [target, operands...]
    Build, Append, Appends, SetItem, SetItems, AddItems,
};

struct PickleEvent {
    PickleKind kind;
    std::uint8_t op;      // the opcode byte that made this event
    std::uint16_t unused;
    std::uint32_t n;
    std::uint64_t pos;    // byte position of the opcode in the input
    std::uint64_t x;
};
static_assert(sizeof(PickleEvent) == 24, "PickleEvent stays compact");

struct PickleProgram {
    std::vector<PickleEvent> events;  // node id = index; events[0..3] are the constants
    std::vector<std::uint32_t> refs;
    std::uint32_t root = 0;           // the value STOP returns
    std::uint64_t end = 0;            // input position after STOP
    // Set when the pickle is malformed: the events before it are still valid and must be replayed first
    // (an effect before the error would have failed first in a sequential interpreter).
    bool failed = false;
    bool unsafe = false;              // the error is a refusal (UnsafePickleError), not malformed input
    int error_op = -1;                // opcode byte of the failing opcode; -1 when the input ended before one
    std::uint64_t error_pos = 0;
    std::string error;
};

struct PickleLimits {
    std::uint32_t max_depth = 1000;                   // nesting of values built by the pickle
    std::uint64_t max_string = std::uint64_t(1) << 31;  // one string or bytes value
};

// Runs the pickle in data[0, size) up to its STOP. Never throws for bad input: the error is in the result.
// Throws std::bad_alloc only when memory runs out (the program is at most ~40 bytes per input byte).
PickleProgram run_pickle(const std::byte* data, std::size_t size, const PickleLimits& limits = {});

// The check of rebuild_tensor (pyloader/torch_reader/allowlist.py) for a strided view of `ndim` dimensions
// starting at element `offset` of a storage holding `numel` elements of `itemsize` bytes, as a fast path: true
// only when the view has at least one element, every value and every byte quantity numpy derives (offset, strides
// and the whole extent times the item size) is below 2^63, the last element it reaches lies in the storage, and
// the elements it can tell apart (dimensions with a nonzero stride) fit from the offset. False for everything
// else, including arithmetic that would overflow: the caller then takes the exact path, which accepts or words the
// refusal.
bool strided_view_fits(std::uint64_t offset, const std::uint64_t* size, const std::uint64_t* stride,
                       std::size_t ndim, std::uint64_t numel, std::uint64_t itemsize);

// A name for an opcode byte (e.g. "BINGET"), or "" if it is not a pickle opcode.
const char* pickle_opname(int op);

}  // namespace pyloader
