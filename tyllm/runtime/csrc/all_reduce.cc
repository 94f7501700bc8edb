// The all-reduce behind `tyllm.die_all_reduce`, without Python: compiled graphs call it from
// the die's own thread, with no interpreter lock taken.
//
// A group lives in one block of memory (shared memory for dies as processes, any buffer for
// threads): a header (arrival counter, barrier round, abort flag, size, slot bytes), then one
// slot per die. An all-reduce is: copy my contribution into my slot, barrier, sum all slots in
// die order into my output (every die gets bit-identical results), barrier (no slot is
// overwritten while another die still reads it). Waiters spin briefly, then yield the core:
// emulated dies may share cores.
//
// Built at first use by tyllm/runtime/native.py against tvm_ffi's C API (needs _Float16:
// GCC >= 12 or Clang >= 15 on x86-64; without it the runtime keeps the Python all-reduce).

#include <atomic>
#include <cstdint>
#include <cstring>
#include <new>
#include <sched.h>

#include <tvm/ffi/c_api.h>

namespace {

static_assert(std::atomic<int32_t>::is_always_lock_free, "the header is shared by processes");

struct alignas(64) Header {
  std::atomic<int32_t> arrived;
  std::atomic<int32_t> aborted;
  int32_t size;
  int64_t slot_bytes;
  alignas(64) std::atomic<int32_t> round;  // its own cache line: waiters spin on it
};

const char* kPythonFunction = "tyllm.die_all_reduce_python";
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

int64_t elements(const DLTensor* t) {
  int64_t n = 1;
  for (int32_t i = 0; i < t->ndim; ++i) n *= t->shape[i];
  return n;
}

DLTensor* as_tensor(const TVMFFIAny& arg) {
  if (arg.type_index == kTVMFFIDLTensorPtr) return static_cast<DLTensor*>(arg.v_ptr);
  if (arg.type_index == kTVMFFITensor) return TVMFFITensorGetDLTensorPtr(arg.v_obj);
  return nullptr;
}

bool is_float(const DLTensor* t, int bits) {
  return t->dtype.code == kDLFloat && t->dtype.bits == bits && t->dtype.lanes == 1;
}

bool is_dense(const DLTensor* t) {
  int64_t expected = 1;
  for (int32_t i = t->ndim - 1; t->strides != nullptr && i >= 0; --i) {
    if (t->shape[i] != 1 && t->strides[i] != expected) return false;
    expected *= t->shape[i];
  }
  return true;
}

// x and out: same float32/float16 dtype and size, dense; checked before any die waits.
const char* check_operands(const DLTensor* x, const DLTensor* out, int64_t slot_bytes) {
  if (x == nullptr || out == nullptr) return "tyllm.die_all_reduce takes (x, out) tensors";
  if (!(is_float(x, 32) || is_float(x, 16)) || x->dtype.bits != out->dtype.bits ||
      out->dtype.code != kDLFloat) {
    return "tyllm.die_all_reduce takes float32 or float16 tensors of one dtype";
  }
  if (elements(x) != elements(out)) return "tyllm.die_all_reduce: x and out differ in size";
  if (!is_dense(x) || !is_dense(out)) return "tyllm.die_all_reduce takes dense tensors";
  if (elements(x) * (x->dtype.bits / 8) > slot_bytes) {
    return "all-reduce larger than the group's slot: the group was sized for a shorter graph";
  }
  return nullptr;
}

int fail(const char* message) {
  TVMFFIErrorSetRaisedFromCStr("RuntimeError", message);
  return -1;
}

// A thread bound to a Python group member (tyllm/runtime/collective.py) reduces there; looked
// up at every call (re-registration replaces it), a cost next to calling Python at all.
int python_all_reduce(const TVMFFIAny* args, int32_t num_args, TVMFFIAny* result) {
  TVMFFIObjectHandle function = nullptr;
  TVMFFIByteArray key{kPythonFunction, std::strlen(kPythonFunction)};
  if (TVMFFIFunctionGetGlobal(&key, &function) != 0 || function == nullptr) {
    return fail("tyllm.die_all_reduce_python is not registered");
  }
  int status = TVMFFIFunctionCall(function, const_cast<TVMFFIAny*>(args), num_args, result);
  TVMFFIObjectDecRef(function);
  return status;
}

int all_reduce(void*, const TVMFFIAny* args, int32_t num_args, TVMFFIAny* result) {
  Header* g = bound_group;
  if (g == nullptr) return python_all_reduce(args, num_args, result);
  DLTensor* x = num_args == 2 ? as_tensor(args[0]) : nullptr;
  DLTensor* out = num_args == 2 ? as_tensor(args[1]) : nullptr;
  if (const char* problem = check_operands(x, out, g->slot_bytes)) return fail(problem);
  const int64_t n = elements(x);
  std::memcpy(slot(g, bound_rank), static_cast<char*>(x->data) + x->byte_offset,
              n * (x->dtype.bits / 8));
  if (!barrier(g)) return fail("all-reduce aborted: another die failed");
  void* dst = static_cast<char*>(out->data) + out->byte_offset;
  if (x->dtype.bits == 32) {
    sum_in_die_order(g, static_cast<float*>(dst), n);
  } else {
    sum_in_die_order(g, static_cast<_Float16*>(dst), n);
  }
  if (!barrier(g)) return fail("all-reduce aborted: another die failed");
  result->type_index = kTVMFFINone;
  return 0;
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

void tyllm_bind(void* memory, int32_t rank) {
  bound_group = static_cast<Header*>(memory);
  bound_rank = rank;
}

int tyllm_register(const char* name) {
  TVMFFIObjectHandle function = nullptr;
  if (TVMFFIFunctionCreate(nullptr, all_reduce, nullptr, &function) != 0) return -1;
  TVMFFIByteArray key{name, std::strlen(name)};
  int status = TVMFFIFunctionSetGlobal(&key, function, 1);
  TVMFFIObjectDecRef(function);
  return status;
}

}  // extern "C"
