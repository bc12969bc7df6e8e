// Run fn(0..count-1) over up to `threads` threads (the calling thread is one of them). Items are taken from
// a shared counter, so uneven items balance themselves. The first exception thrown by any item is
// rethrown once every item is finished or skipped.
//
// The caller waits for the items, not for the helper threads: on a loaded machine a helper may start late,
// after the calling thread has done every item itself; it then finds nothing left and ends on its own
// (detached, holding only the shared counters). Joining it instead made a small call wait for the scheduler
// (milliseconds per call under load).
#pragma once
#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <exception>
#include <memory>
#include <mutex>
#include <thread>

namespace pyloader {

inline unsigned default_threads() {
    unsigned n = std::thread::hardware_concurrency();
    return n == 0 ? 1 : n;
}

template <typename Fn>
void parallel_for(std::size_t count, unsigned threads, Fn&& fn) {
    if (threads == 0) threads = default_threads();
    threads = unsigned(std::min<std::size_t>(threads, count));
    struct State {
        std::atomic<std::size_t> next{0};
        std::atomic<bool> failed{false};
        std::size_t finished = 0;  // items run or skipped; under mutex
        std::exception_ptr error;  // under mutex
        std::mutex mutex;
        std::condition_variable all_done;
    };
    auto state = std::make_shared<State>();
    // fn is only called for an item taken before all items are finished, so while this call still waits: a
    // helper that starts later touches nothing but *state.
    auto work = [state, count, &fn] {
        for (;;) {
            const std::size_t i = state->next.fetch_add(1, std::memory_order_relaxed);
            if (i >= count) return;
            std::exception_ptr error;
            if (!state->failed.load(std::memory_order_relaxed)) {
                try {
                    fn(i);
                } catch (...) {
                    error = std::current_exception();
                    state->failed.store(true, std::memory_order_relaxed);
                }
            }
            std::lock_guard<std::mutex> lock(state->mutex);
            if (error && !state->error) state->error = error;
            if (++state->finished == count) state->all_done.notify_all();
        }
    };
    for (unsigned t = 1; t < threads; ++t) std::thread(work).detach();
    work();
    std::unique_lock<std::mutex> lock(state->mutex);
    state->all_done.wait(lock, [&] { return state->finished == count; });
    if (state->error) std::rethrow_exception(state->error);
}

}  // namespace pyloader
