// `tyllm.die_all_reduce`, the packed function the emulated CPU backend's graphs call: checks
// the TVM tensors and hands their memory to the runtime's plain C all-reduce
// (tyllm/runtime/csrc/all_reduce.cc, `tyllm_all_reduce`), from the die's own thread, with no
// interpreter lock taken. A thread the runtime has not bound to a native group (a Python group
// member, tyllm verify's one-die identity) reduces through the Python packed function named at
// registration instead.
//
// Built at first use by backends/emulated_cpu/all_reduce.py against tvm_ffi's C API; it
// reaches the runtime only through the function pointers it is registered with.

#include <cstdint>
#include <cstring>

#include <tvm/ffi/c_api.h>

namespace {

using ReduceFn = int32_t (*)(const void* x, void* out, int64_t n, int32_t code, int32_t bits);
using TextFn = const char* (*)(int32_t status);
constexpr int32_t kNotBound = 1;  // tyllm_all_reduce: the thread has no native group

struct Runtime {
  ReduceFn reduce;
  TextFn text;
  char python_function[128];  // the packed function reducing on Python group members
};

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

bool is_dense(const DLTensor* t) {
  int64_t expected = 1;
  for (int32_t i = t->ndim - 1; t->strides != nullptr && i >= 0; --i) {
    if (t->shape[i] != 1 && t->strides[i] != expected) return false;
    expected *= t->shape[i];
  }
  return true;
}

bool same_dtype(const DLTensor* x, const DLTensor* out) {
  return x->dtype.code == out->dtype.code && x->dtype.bits == out->dtype.bits &&
         x->dtype.lanes == out->dtype.lanes;
}

// What the runtime cannot see in raw memory: two dense tensors of one dtype and size.
const char* check_operands(const DLTensor* x, const DLTensor* out) {
  if (x == nullptr || out == nullptr) return "tyllm.die_all_reduce takes (x, out) tensors";
  if (!same_dtype(x, out)) return "tyllm.die_all_reduce takes x and out of one dtype";
  if (elements(x) != elements(out)) return "tyllm.die_all_reduce: x and out differ in size";
  if (!is_dense(x) || !is_dense(out)) return "tyllm.die_all_reduce takes dense tensors";
  return nullptr;
}

int fail(const char* message) {
  TVMFFIErrorSetRaisedFromCStr("RuntimeError", message);
  return -1;
}

// Looked up at every call (re-registration replaces it), a cost next to calling Python at all.
int python_all_reduce(const Runtime* rt, const TVMFFIAny* args, int32_t num_args,
                      TVMFFIAny* result) {
  TVMFFIObjectHandle function = nullptr;
  TVMFFIByteArray key{rt->python_function, std::strlen(rt->python_function)};
  if (TVMFFIFunctionGetGlobal(&key, &function) != 0 || function == nullptr) {
    return fail("the Python die all-reduce is not registered");
  }
  int status = TVMFFIFunctionCall(function, const_cast<TVMFFIAny*>(args), num_args, result);
  TVMFFIObjectDecRef(function);
  return status;
}

int all_reduce(void* self, const TVMFFIAny* args, int32_t num_args, TVMFFIAny* result) {
  const Runtime* rt = static_cast<const Runtime*>(self);
  DLTensor* x = num_args == 2 ? as_tensor(args[0]) : nullptr;
  DLTensor* out = num_args == 2 ? as_tensor(args[1]) : nullptr;
  if (const char* problem = check_operands(x, out)) return fail(problem);
  int32_t code = x->dtype.lanes == 1 ? x->dtype.code : -1;
  int32_t status = rt->reduce(static_cast<char*>(x->data) + x->byte_offset,
                              static_cast<char*>(out->data) + out->byte_offset, elements(x),
                              code, x->dtype.bits);
  if (status == kNotBound) return python_all_reduce(rt, args, num_args, result);
  if (status != 0) return fail(rt->text(status));
  result->type_index = kTVMFFINone;
  return 0;
}

void release(void* self) { delete static_cast<Runtime*>(self); }

}  // namespace

extern "C" {

// Registers `name` as a global packed function over the runtime's `reduce` and `text`
// (tyllm_all_reduce, tyllm_status_text), deferring to `python_function` on unbound threads.
int tyllm_register_die_all_reduce(const char* name, const char* python_function, void* reduce,
                                  void* text) {
  if (std::strlen(python_function) >= sizeof(Runtime::python_function)) return -1;
  Runtime* rt = new Runtime{reinterpret_cast<ReduceFn>(reduce), reinterpret_cast<TextFn>(text),
                            {}};
  std::strcpy(rt->python_function, python_function);
  TVMFFIObjectHandle function = nullptr;
  if (TVMFFIFunctionCreate(rt, all_reduce, release, &function) != 0) {
    delete rt;
    return -1;
  }
  TVMFFIByteArray key{name, std::strlen(name)};
  int status = TVMFFIFunctionSetGlobal(&key, function, 1);
  TVMFFIObjectDecRef(function);
  return status;
}

}  // extern "C"
