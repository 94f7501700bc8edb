// The die all-reduce, without Python and without any framework: plain C entry points over raw
// memory, called through ctypes by tyllm/runtime/collective.py and, from compiled graphs, by a
// backend's own wrapper (backends/emulated_cpu/csrc/die_all_reduce.cc) from the die's own
// thread, with no interpreter lock taken.
//
// A group lives in one block of memory (shared memory for dies as processes, any buffer for
// threads): a header (arrival counter, barrier round, abort flag, size, slot bytes), then one
// slot per die. An all-reduce is: copy my contribution into my slot, barrier, sum all slots in
// die order into my output (every die gets bit-identical results), barrier (no slot is
// overwritten while another die still reads it). Waiters spin briefly, then yield the core:
// emulated dies may share cores.
//
// Built at first use by tyllm/runtime/native.py (needs _Float16: GCC >= 12 or Clang >= 15 on
// x86-64; without it the runtime keeps the Python all-reduce).

#include <atomic>
#include <cstdint>
#include <cstring>
#include <new>
#include <sched.h>

namespace {

static_assert(std::atomic<int32_t>::is_always_lock_free, "the header is shared by processes");

struct alignas(64) Header {
  std::atomic<int32_t> arrived;
  std::atomic<int32_t> aborted;
  int32_t size;
  int64_t slot_bytes;
  alignas(64) std::atomic<int32_t> round;  // its own cache line: waiters spin on it
};

// What tyllm_all_reduce returns; tyllm_status_text says it in a sentence.
enum Status : int32_t { kOk = 0, kNotBound = 1, kBadDtype = 2, kTooLarge = 3, kAborted = 4 };
constexpr int32_t kFloat = 2;  // DLPack's kDLFloat: the dtype codes callers pass

thread_local Header* bound_group = nullptr;
thread_local int32_t bound_rank = -1;

char* slot(Header* g, int32_t rank) {
  return reinterpret_cast<char*>(g) + sizeof(Header) + rank * g->slot_bytes;
}

bool wait_round(Header* g, int32_t round) {
  int spins = 0;
  while (g->round.load(std::memory_order_acquire) == round) {
    if (g->aborted.load(std::memory_order_relaxed)) return false;
    if (spins < 64) {
      ++spins;
    } else {
      sched_yield();
    }
  }
  return true;
}

// A central-counter barrier: the last die to arrive resets the counter and opens the next
// round; the others wait for the round number to change.
bool barrier(Header* g) {
  int32_t round = g->round.load(std::memory_order_acquire);
  if (g->arrived.fetch_add(1, std::memory_order_acq_rel) == g->size - 1) {
    g->arrived.store(0, std::memory_order_relaxed);
    g->round.fetch_add(1, std::memory_order_acq_rel);
    return true;
  }
  return wait_round(g, round);
}

template <typename T>
void sum_in_die_order(Header* g, T* out, int64_t n) {
  const T* first = reinterpret_cast<const T*>(slot(g, 0));
  for (int64_t i = 0; i < n; ++i) out[i] = first[i];
  for (int32_t r = 1; r < g->size; ++r) {
    const T* other = reinterpret_cast<const T*>(slot(g, r));
    // one rounding per addition, as torch adds two tensors of this dtype
    for (int64_t i = 0; i < n; ++i) out[i] = static_cast<T>(static_cast<float>(out[i]) + other[i]);
  }
}

}  // namespace

extern "C" {

int64_t tyllm_group_bytes(int32_t size, int64_t slot_bytes) {
  return static_cast<int64_t>(sizeof(Header)) + size * slot_bytes;
}

void tyllm_group_init(void* memory, int32_t size, int64_t slot_bytes) {
  Header* g = new (memory) Header;
  g->arrived.store(0);
  g->round.store(0);
  g->aborted.store(0);
  g->size = size;
  g->slot_bytes = slot_bytes;
}

void tyllm_group_abort(void* memory) { static_cast<Header*>(memory)->aborted.store(1); }

// Binds the calling thread to die `rank` of the group at `memory` (nullptr: unbinds it).
void tyllm_bind(void* memory, int32_t rank) {
  bound_group = static_cast<Header*>(memory);
  bound_rank = rank;
}

// out = the sum over the dies of their `x`, `n` dense elements of (DLPack) dtype code and bits,
// in the group bound to the calling thread. Operands are checked before any die waits.
int32_t tyllm_all_reduce(const void* x, void* out, int64_t n, int32_t code, int32_t bits) {
  Header* g = bound_group;
  if (g == nullptr) return kNotBound;
  if (code != kFloat || (bits != 32 && bits != 16)) return kBadDtype;
  if (n * (bits / 8) > g->slot_bytes) return kTooLarge;
  std::memcpy(slot(g, bound_rank), x, n * (bits / 8));
  if (!barrier(g)) return kAborted;
  if (bits == 32) {
    sum_in_die_order(g, static_cast<float*>(out), n);
  } else {
    sum_in_die_order(g, static_cast<_Float16*>(out), n);
  }
  return barrier(g) ? kOk : kAborted;
}

const char* tyllm_status_text(int32_t status) {
  switch (status) {
    case kOk: return "";
    case kNotBound: return "this thread is not bound to a native die group";
    case kBadDtype: return "the die all-reduce takes float32 or float16 tensors of one dtype";
    case kTooLarge:
      return "all-reduce larger than the group's slot: the group was sized for a shorter graph";
    case kAborted: return "all-reduce aborted: another die failed";
    default: return "unknown all-reduce status";
  }
}

}  // extern "C"
