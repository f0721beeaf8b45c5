/* Freestanding runtime for a farm Hexagon model executable (no libc):
 * _start, syscalls, the few libc/libm/compiler-rt symbols TVM's kernels reference, the TVM
 * backend hooks (workspace, parallel launch, errors), and the step loop over the generated plan
 * (farm_plan.h, generated next to this file's object). Built twice: for Linux user mode (qemu) and
 * with -DFARM_SEMIHOSTING for the Qualcomm SDK's hexagon-sim. Inputs come from in<i>.bin, outputs go to
 * out<i>.bin in the working directory. Exit codes: 0 ok, 2 I/O error, 3 kernel error. */
#include <stddef.h>
#include <stdint.h>
#include <tvm/ffi/c_api.h>

#include "farm_plan.h"

/* ---- system calls: five operations, two ABIs ---- */
#ifndef FARM_SEMIHOSTING
/* Linux user mode (qemu-hexagon): trap0(#1), number in r6, arguments in r0.. */
static long sys4(long n, long a, long b, long c, long d) {
  register long r0 __asm__("r0") = a;
  register long r1 __asm__("r1") = b;
  register long r2 __asm__("r2") = c;
  register long r3 __asm__("r3") = d;
  register long r6 __asm__("r6") = n;
  __asm__ volatile("trap0(#1)" : "+r"(r0) : "r"(r1), "r"(r2), "r"(r3), "r"(r6) : "memory");
  return r0;
}
enum { SYS_OPENAT = 56, SYS_CLOSE = 57, SYS_READ = 63, SYS_WRITE = 64, SYS_EXIT = 93 };
static long os_open(const char* name, int writing) {
  return sys4(SYS_OPENAT, -100 /* AT_FDCWD */, (long)name,
              writing ? (01 | 0100 | 01000) /* O_WRONLY|O_CREAT|O_TRUNC */ : 0, 0644);
}
static long os_read(long fd, void* buf, long n) { return sys4(SYS_READ, fd, (long)buf, n, 0); }
static long os_write(long fd, const void* buf, long n) { return sys4(SYS_WRITE, fd, (long)buf, n, 0); }
static void os_close(long fd) { sys4(SYS_CLOSE, fd, 0, 0, 0); }
static __attribute__((noreturn)) void os_exit(int code) {
  sys4(SYS_EXIT, code, 0, 0, 0);
  for (;;) {
  }
}
#else
/* The Qualcomm SDK's hexagon-sim: Angel-style semihosting, trap0(#0), call number in r0, pointer
 * to the argument block in r1. NOT RUN on this machine (no SDK here): written from the Angel
 * conventions the Hexagon simulator documents (read/write return the bytes NOT transferred). */
static long angel(long op, long* args) {
  register long r0 __asm__("r0") = op;
  register long r1 __asm__("r1") = (long)args;
  __asm__ volatile("trap0(#0)" : "+r"(r0) : "r"(r1) : "memory");
  return r0;
}
long farm_strlen_(const char* s);
static long os_open(const char* name, int writing) {
  long a[3] = {(long)name, writing ? 5 /* "wb" */ : 1 /* "rb" */, farm_strlen_(name)};
  return angel(0x01, a);
}
static long os_read(long fd, void* buf, long n) {
  long a[3] = {fd, (long)buf, n};
  return n - angel(0x06, a);
}
static long os_write(long fd, const void* buf, long n) {
  long a[3] = {fd, (long)buf, n};
  return n - angel(0x05, a);
}
static void os_close(long fd) {
  long a[1] = {fd};
  angel(0x02, a);
}
static __attribute__((noreturn)) void os_exit(int code) {
  long a[1] = {code};
  angel(0x18, a); /* SYS_EXIT */
  for (;;) {
  }
}
#endif

/* ---- libc/libm/compiler-rt pieces LLVM emits calls to ---- */
/* (-ffreestanding keeps LLVM from turning these loops back into calls to themselves) */
void* memset(void* d, int c, size_t n) {
  unsigned char* p = d;
  if ((((uintptr_t)p) & 7) == 0) {
    uint64_t v = (unsigned char)c * 0x0101010101010101ull;
    for (; n >= 8; n -= 8, p += 8) *(uint64_t*)p = v;
  }
  while (n--) *p++ = (unsigned char)c;
  return d;
}
void* memcpy(void* d, const void* s, size_t n) {
  unsigned char* p = d;
  const unsigned char* q = s;
  if (((((uintptr_t)p) | ((uintptr_t)q)) & 7) == 0) {
    for (; n >= 8; n -= 8, p += 8, q += 8) *(uint64_t*)p = *(const uint64_t*)q;
  }
  while (n--) *p++ = *q++;
  return d;
}
void* memmove(void* d, const void* s, size_t n) {
  unsigned char* p = d;
  const unsigned char* q = s;
  if (p < q) {
    while (n--) *p++ = *q++;
  } else {
    while (n--) p[n] = q[n];
  }
  return d;
}
void* __hexagon_memcpy_likely_aligned_min32bytes_mult8bytes(void* d, const void* s, size_t n) {
  return memcpy(d, s, n);
}
long farm_strlen_(const char* s) {
  long n = 0;
  while (s[n]) n++;
  return n;
}
/* round half to even in the default rounding mode: adding 2^23 leaves no fraction bits */
float nearbyintf(float x) {
  volatile float big = 8388608.0f;
  float a = __builtin_fabsf(x);
  if (!(a < big)) return x; /* already integral, inf or nan */
  float r = (a + big) - big;
  return x < 0 ? -r : r;
}
float floorf(float x) {
  float r = nearbyintf(x);
  return r > x ? r - 1.0f : r;
}
float ceilf(float x) {
  float r = nearbyintf(x);
  return r < x ? r + 1.0f : r;
}
float truncf(float x) { return x < 0 ? ceilf(x) : floorf(x); }

/* 2^k for k in [-126, 127], by its exponent bits */
static float pow2i(int k) {
  union { uint32_t u; float f; } v = {(uint32_t)(k + 127) << 23};
  return v.f;
}

/* e^x in single precision only (a float softmax needs it; Hexagon's doubles would be soft-float
   calls): x = k ln2 + r with ln2 in two parts so k * ln2_hi is exact, |r| <= ln2 / 2, e^r by its
   Taylor polynomial to degree 7 (truncation below 6e-9), within 2 ulp of the true value */
float expf(float x) {
  if (x != x) return x;
  if (x > 88.72283935546875f) return __builtin_inff();
  if (x < -103.972084045410156f) return 0.0f;
  float kf = nearbyintf(x * 1.44269504088896341f);
  int k = (int)kf;
  float r = (x - kf * 0.693145751953125f) - kf * 1.428606765330187045e-06f;
  float p = 1.0f + r * (1.0f + r * (0.5f + r * (1.66666672e-1f + r * (4.16666679e-2f
            + r * (8.33333377e-3f + r * (1.38888892e-3f + r * 1.98412701e-4f))))));
  if (k > 127) return p * pow2i(127) * pow2i(k - 127);
  if (k < -126) return p * pow2i(k + 100) * pow2i(-100);
  return p * pow2i(k);
}

/* IEEE single-precision square root, correctly rounded (what LLVM calls for sqrt on Hexagon, which
   has no sqrt instruction; a float layer norm needs it): x = f * 4^q with f in [1, 4), the 24-bit
   significand the integer square root of f * 2^46, rounded to nearest (sqrt has no exact ties) */
float __hexagon_sqrtf(float x) {
  union { float f; uint32_t u; } v = {x};
  uint32_t e = (v.u >> 23) & 0xff, m = v.u & 0x7fffff;
  if ((v.u << 1) == 0 || v.u == 0x7f800000u || e == 0xff) return x; /* +-0, +inf, nan */
  if (v.u >> 31) return __builtin_nanf("");
  int unbiased = (int)e - 127;
  if (e == 0) { /* subnormal: normalize */
    unbiased = -126;
    while (!(m & 0x800000)) { m <<= 1; unbiased--; }
  }
  m |= 0x800000;
  uint64_t n = (uint64_t)m << ((unbiased & 1) ? 24 : 23); /* f * 2^46 */
  int q = (unbiased - (unbiased & 1)) / 2;
  uint64_t r = 0, bit = 1ull << 46, rest = n;
  while (bit) { /* bitwise integer square root: r = floor(sqrt(n)), rest = n - r^2 */
    if (rest >= r + bit) { rest -= r + bit; r = (r >> 1) + bit; } else { r >>= 1; }
    bit >>= 2;
  }
  if (rest > r) r++;
  if (r == (1ull << 24)) { r >>= 1; q++; }
  v.u = ((uint32_t)(q + 127) << 23) | ((uint32_t)r & 0x7fffff);
  return v.f;
}

/* ---- output ---- */
static void put(int fd, const char* s) { os_write(fd, s, farm_strlen_(s)); }
static void put_int(int fd, long v) {
  char b[24];
  int i = 23;
  int neg = v < 0;
  unsigned long u = neg ? -(unsigned long)v : (unsigned long)v;
  b[i] = 0;
  do {
    b[--i] = (char)('0' + u % 10);
    u /= 10;
  } while (u);
  if (neg) b[--i] = '-';
  put(fd, b + i);
}

/* ---- TVM backend hooks ---- */
void TVMFFIErrorSetRaisedFromCStrParts(const char* kind, const char** parts, int32_t n) {
  put(2, kind);
  put(2, ": ");
  for (int32_t i = 0; i < n; i++) put(2, parts[i]);
  put(2, "\n");
}
void TVMFFIErrorSetRaisedFromCStr(const char* kind, const char* msg) {
  TVMFFIErrorSetRaisedFromCStrParts(kind, &msg, 1);
}

/* Workspace: a LIFO bump allocator (TVM frees workspaces in reverse order of allocation). */
static unsigned char farm_heap[FARM_HEAP_BYTES] __attribute__((aligned(128)));
static size_t heap_top;
void* TVMBackendAllocWorkspace(int dev_type, int dev_id, uint64_t nbytes, int code, int bits) {
  (void)dev_type, (void)dev_id, (void)code, (void)bits;
  size_t need = ((size_t)nbytes + 127u) & ~(size_t)127u;
  if (need + 128 > sizeof(farm_heap) - heap_top) {
    put(2, "farm: workspace heap exhausted\n");
    return NULL;
  }
  void* p = farm_heap + heap_top;
  *(size_t*)(farm_heap + heap_top + need) = heap_top; /* remember where this block started */
  heap_top += need + 128;
  return p;
}
int TVMBackendFreeWorkspace(int dev_type, int dev_id, void* ptr) {
  (void)dev_type, (void)dev_id;
  size_t start = (size_t)((unsigned char*)ptr - farm_heap);
  if (start >= heap_top) return -1;
  heap_top = start; /* LIFO: everything above was freed before */
  return 0;
}
typedef struct {
  void* sync_handle;
  int32_t num_task;
} TVMParallelGroupEnv;
typedef int (*FTVMParallelLambda)(int task_id, TVMParallelGroupEnv* penv, void* cdata);
/* One hardware thread runs every task in order. */
int TVMBackendParallelLaunch(FTVMParallelLambda f, void* cdata, int num_task) {
  TVMParallelGroupEnv env = {NULL, num_task > 0 ? num_task : 1};
  for (int i = 0; i < env.num_task; i++) {
    if (f(i, &env, cdata) != 0) return -1;
  }
  return 0;
}
int TVMBackendParallelBarrier(int task_id, TVMParallelGroupEnv* penv) {
  (void)task_id, (void)penv;
  return 0;
}

/* TVM's LLVM code calls the backend through these pointers (weak, zero in the objects; TVM's
 * runtime fills them when it loads a library). A static executable defines them. */
void* (*__TVMBackendAllocWorkspace)(int, int, uint64_t, int, int) = TVMBackendAllocWorkspace;
int (*__TVMBackendFreeWorkspace)(int, int, void*) = TVMBackendFreeWorkspace;
int (*__TVMBackendParallelLaunch)(FTVMParallelLambda, void*, int) = TVMBackendParallelLaunch;
int (*__TVMBackendParallelBarrier)(int, TVMParallelGroupEnv*) = TVMBackendParallelBarrier;
/* Kernels that call packed functions (external libraries) need a TVM runtime: refuse clearly. */
static int no_packed_calls(void) {
  put(2, "farm: this kernel calls a TVM packed function; the Hexagon executor has no TVM runtime\n");
  return -1;
}
int (*__TVMFFIHandleInitOnce)(void) = no_packed_calls;
int (*__TVMFFIFunctionCall)(void) = no_packed_calls;

/* ---- the model ---- */
static int io_file(const char* prefix, int index, void* data, long nbytes, int writing) {
  char name[32];
  int n = 0;
  while (prefix[n]) {
    name[n] = prefix[n];
    n++;
  }
  char digits[12];
  int d = 0;
  do {
    digits[d++] = (char)('0' + index % 10);
    index /= 10;
  } while (index);
  while (d) name[n++] = digits[--d];
  name[n++] = '.', name[n++] = 'b', name[n++] = 'i', name[n++] = 'n', name[n] = 0;
  long fd = os_open(name, writing);
  if (fd < 0) {
    put(2, "farm: cannot open ");
    put(2, name);
    put(2, "\n");
    return -1;
  }
  long done = 0;
  while (done < nbytes) {
    char* at = (char*)data + done;
    long r = writing ? os_write(fd, at, nbytes - done) : os_read(fd, at, nbytes - done);
    if (r <= 0) break;
    done += r;
  }
  os_close(fd);
  if (done != nbytes) {
    put(2, "farm: short transfer on ");
    put(2, name);
    put(2, "\n");
    return -1;
  }
  return 0;
}

static long tensor_bytes(const DLTensor* t) {
  long n = (t->dtype.bits * t->dtype.lanes + 7) / 8;
  for (int i = 0; i < t->ndim; i++) n *= (long)t->shape[i];
  return n;
}

static int run_model(void) {
  for (int i = 0; i < FARM_NUM_INPUTS; i++) {
    DLTensor* t = &farm_tensors[farm_inputs[i]];
    if (io_file("in", i, t->data, tensor_bytes(t), 0)) return 2;
  }
  TVMFFIAny args[FARM_MAX_ARGS];
  TVMFFIAny ret;
  for (int s = 0; s < FARM_NUM_STEPS; s++) {
    const FarmStep* st = &farm_steps[s];
    for (int a = 0; a < st->nargs; a++) {
      args[a].type_index = kTVMFFIDLTensorPtr;
      args[a].zero_padding = 0;
      args[a].v_ptr = &farm_tensors[st->args[a]];
    }
    ret.type_index = kTVMFFINone;
    if (st->fn(NULL, args, st->nargs, &ret) != 0) {
      put(2, "farm: kernel ");
      put(2, st->name);
      put(2, " (step ");
      put_int(2, s);
      put(2, ") failed\n");
      return 3;
    }
  }
  for (int i = 0; i < FARM_NUM_OUTPUTS; i++) {
    DLTensor* t = &farm_tensors[farm_outputs[i]];
    if (io_file("out", i, t->data, tensor_bytes(t), 1)) return 2;
  }
  return 0;
}

#ifndef FARM_SEMIHOSTING
void _start(void) { os_exit(run_model()); } /* the kernel (qemu) set up the stack */
#else
unsigned char farm_stack[1 << 20] __attribute__((aligned(128), used));
void farm_main(void) { os_exit(run_model()); }
/* hexagon-sim starts at the entry point without a C stack: set r29/r30, then run */
__asm__(".globl _start\n_start:\n"
        "  r29 = ##farm_stack+1048576\n  r30 = #0\n  jump farm_main\n");
#endif
