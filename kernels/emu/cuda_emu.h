// The CUDA execution model on the CPU, so that kernels/*.cu run unchanged as C++ in tests
// on machines without a GPU (src/backend/cuda/emulator.rs compiles and loads them).
//
// A block's threads are fibers on one OS thread, run until they wait:
// __syncthreads waits for every live thread of the block, a warp shuffle for every live
// lane of the warp (values pass through a per-warp exchange buffer). Blocks are spread
// over a few OS threads; __shared__ is thread_local, so the block an OS thread runs has
// its own. Atomics are real atomics. A wait the block cannot leave (threads of one warp waiting at
// different barriers) aborts with a message instead of hanging.
//
// Ready threads run in thread order, or, given a nonzero schedule seed, in an order drawn
// afresh at every step: CUDA promises no order between barriers, and a kernel whose result
// depends on it (float atomics racing) shows it under different seeds.
#pragma once

#include <ucontext.h>

#include <algorithm>
#include <cassert>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __restrict__ __restrict
#define __launch_bounds__(...)
#define __shared__ static thread_local

struct dim3 {
  unsigned x = 1, y = 1, z = 1;
};
struct uint3 {
  unsigned x, y, z;
};

namespace scotd_emu {

enum class State { Ready, WaitBlock, WaitWarp, Done };

// A fiber's saved execution state. On x86-64 it is the stack pointer alone, the
// registers the switch saves lying on the stack (runtime.cpp): glibc's swapcontext also
// saves the signal mask, a system call per switch that made up most of a test's time.
#if defined(__x86_64__)
struct Context {
  void* sp = nullptr;
};
extern "C" void scotd_emu_switch(void** save_sp, void* load_sp);
inline void switch_context(Context& from, Context& to) { scotd_emu_switch(&from.sp, to.sp); }
#else
struct Context {
  ucontext_t uc;
};
inline void switch_context(Context& from, Context& to) { swapcontext(&from.uc, &to.uc); }
#endif

struct Fiber {
  Context context;
  uint3 thread_idx;
  unsigned linear;
  State state;
};

constexpr size_t kStackBytes = 64 * 1024;
constexpr unsigned kWarp = 32;
// Bytes each lane may contribute to a warp_gather (a tensor-core fragment set is 24).
constexpr size_t kGatherBytes = 32;

// What one OS thread needs to run blocks: its fibers, their stacks, the block's state.
struct BlockRunner {
  std::vector<Fiber> fibers;
  // Left uninitialised: a launch touches only the stack pages its fibers use, where
  // zeroing 64 KB per thread cost more than most kernels' work.
  std::unique_ptr<char[]> stacks;
  size_t stack_count = 0;
  std::vector<uint64_t> warp_slots;
  std::vector<char> gather_slots;
  std::vector<char> dynamic_shared;
  Context scheduler;
  Fiber* current = nullptr;
  uint3 block_idx;
  dim3 block_dim, grid_dim;
  void (*body)(void*) = nullptr;
  void* body_arg = nullptr;
  // 0: thread order; otherwise the seed of the order ready threads run in.
  uint64_t schedule = 0;
  std::vector<unsigned> order;
};

inline thread_local BlockRunner* runner = nullptr;

inline Fiber& self() { return *runner->current; }

inline void wait(State state) {
  Fiber& f = self();
  f.state = state;
  switch_context(f.context, runner->scheduler);
}

// A fiber's whole life: the kernel body, then back to the scheduler for good.
[[noreturn]] inline void fiber_main() {
  runner->body(runner->body_arg);
  wait(State::Done);
  __builtin_unreachable();
}

// Makes `f` start fiber_main on its `stack` at its next switch.
inline void start_context(Fiber& f, char* stack) {
#if defined(__x86_64__)
  // The frame scotd_emu_switch pops: MXCSR and the x87 control word (their defaults),
  // six callee-saved registers, then fiber_main as the return address, placed so that
  // fiber_main starts with the stack aligned as after a call.
  auto top = reinterpret_cast<uintptr_t>(stack + kStackBytes) & ~uintptr_t(15);
  auto* frame = reinterpret_cast<uint64_t*>(top) - 9;
  frame[0] = 0x1F80 | (uint64_t(0x037F) << 32);
  for (int i = 1; i <= 6; ++i) frame[i] = 0;
  frame[7] = reinterpret_cast<uint64_t>(&fiber_main);
  f.context.sp = frame;
#else
  getcontext(&f.context.uc);
  f.context.uc.uc_stack.ss_sp = stack;
  f.context.uc.uc_stack.ss_size = kStackBytes;
  f.context.uc.uc_link = nullptr;
  makecontext(&f.context.uc, reinterpret_cast<void (*)()>(fiber_main), 0);
#endif
}

// Makes every thread of a warp whose live lanes all wait at a warp barrier ready;
// failing that, every thread when all live threads wait at the block barrier.
inline bool release_waiters(BlockRunner& r) {
  bool released = false;
  size_t n = r.fibers.size();
  for (size_t w = 0; w < n; w += kWarp) {
    size_t end = std::min(n, w + kWarp);
    bool any = false, all = true;
    for (size_t i = w; i < end; ++i) {
      State s = r.fibers[i].state;
      if (s == State::Done) continue;
      any = true;
      all = all && s == State::WaitWarp;
    }
    if (any && all) {
      for (size_t i = w; i < end; ++i)
        if (r.fibers[i].state == State::WaitWarp) r.fibers[i].state = State::Ready;
      released = true;
    }
  }
  if (released) return true;
  bool any = false, all = true;
  for (Fiber& f : r.fibers) {
    if (f.state == State::Done) continue;
    any = true;
    all = all && f.state == State::WaitBlock;
  }
  if (!any) return false;
  if (!all) {
    std::fprintf(stderr,
                 "cuda_emu: block (%u,%u,%u) deadlocked: its threads wait at different barriers\n",
                 r.block_idx.x, r.block_idx.y, r.block_idx.z);
    std::abort();
  }
  for (Fiber& f : r.fibers)
    if (f.state == State::WaitBlock) f.state = State::Ready;
  return true;
}

// splitmix64: a well-mixed 64-bit sequence from any seed.
inline uint64_t next_random(uint64_t& state) {
  uint64_t z = (state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

inline void run_block(BlockRunner& r) {
  size_t n = r.fibers.size();
  // Each block draws its own orders, the same ones on every run with this seed.
  uint64_t random = r.schedule ^ (uint64_t(r.block_idx.x) << 40) ^
                    (uint64_t(r.block_idx.y) << 20) ^ r.block_idx.z;
  for (size_t i = 0; i < n; ++i) {
    Fiber& f = r.fibers[i];
    start_context(f, r.stacks.get() + i * kStackBytes);
    f.state = State::Ready;
  }
  for (size_t i = 0; i < n; ++i) r.order[i] = unsigned(i);
  do {
    if (r.schedule != 0)
      for (size_t i = n; i > 1; --i) std::swap(r.order[i - 1], r.order[next_random(random) % i]);
    for (unsigned i : r.order) {
      Fiber& f = r.fibers[i];
      if (f.state != State::Ready) continue;
      r.current = &f;
      switch_context(r.scheduler, f.context);
    }
  } while (release_waiters(r));
}

inline void prepare(BlockRunner& r, dim3 block, size_t shared_bytes) {
  size_t n = size_t(block.x) * block.y * block.z;
  r.fibers.resize(n);
  r.order.resize(n);
  if (n > r.stack_count) {
    r.stacks.reset(new char[n * kStackBytes]);
    r.stack_count = n;
  }
  r.warp_slots.assign((n + kWarp - 1) / kWarp * kWarp, 0);
  r.gather_slots.assign((n + kWarp - 1) / kWarp * kWarp * kGatherBytes, 0);
  r.dynamic_shared.assign(shared_bytes, 0);
  for (size_t i = 0; i < n; ++i) {
    unsigned x = i % block.x, y = (i / block.x) % block.y, z = i / (size_t(block.x) * block.y);
    r.fibers[i].thread_idx = {x, y, z};
    r.fibers[i].linear = unsigned(i);
  }
}

// Runs `body(arg)` as every thread of every block of the grid.
inline void launch(dim3 grid, dim3 block, size_t shared_bytes, uint64_t schedule,
                   void (*body)(void*), void* arg) {
  size_t blocks = size_t(grid.x) * grid.y * grid.z;
  std::atomic<size_t> next{0};
  auto worker = [&] {
    BlockRunner r;
    prepare(r, block, shared_bytes);
    r.block_dim = block;
    r.grid_dim = grid;
    r.body = body;
    r.body_arg = arg;
    r.schedule = schedule;
    runner = &r;
    for (size_t b; (b = next.fetch_add(1)) < blocks;) {
      r.block_idx = {unsigned(b % grid.x), unsigned((b / grid.x) % grid.y),
                     unsigned(b / (size_t(grid.x) * grid.y))};
      run_block(r);
    }
    runner = nullptr;
  };
  size_t threads = std::min<size_t>(blocks, std::max(1u, std::thread::hardware_concurrency()));
  std::vector<std::thread> pool;
  for (size_t t = 1; t < threads; ++t) pool.emplace_back(worker);
  worker();
  for (auto& t : pool) t.join();
}

// Passes `value` from lane `source(lane)` of each lane's warp.
template <class T, class Source>
T exchange(T value, Source source) {
  static_assert(sizeof(T) <= sizeof(uint64_t), "shuffles move at most 8 bytes");
  unsigned linear = self().linear;
  unsigned base = linear / kWarp * kWarp, lane = linear % kWarp;
  std::memcpy(&runner->warp_slots[linear], &value, sizeof(T));
  wait(State::WaitWarp);
  T out;
  std::memcpy(&out, &runner->warp_slots[base + source(lane)], sizeof(T));
  wait(State::WaitWarp);
  return out;
}

// Every lane's `bytes` bytes at `mine`, gathered in lane order into `all` (32 * bytes):
// what a warp-wide instruction (a tensor-core mma) sees of its warp's registers.
inline void warp_gather(const void* mine, size_t bytes, void* all) {
  assert(bytes <= kGatherBytes);
  unsigned linear = self().linear, base = linear / kWarp * kWarp;
  std::memcpy(&runner->gather_slots[linear * kGatherBytes], mine, bytes);
  wait(State::WaitWarp);
  for (unsigned lane = 0; lane < kWarp; ++lane)
    std::memcpy(static_cast<char*>(all) + lane * bytes,
                &runner->gather_slots[(base + lane) * kGatherBytes], bytes);
  wait(State::WaitWarp);
}

// Kernel registry: each .cu file registers its kernels by name (SCOTD_EXPORT).
using Trampoline = void (*)(dim3, dim3, size_t, uint64_t, void**);
inline std::map<std::string, Trampoline>& registry() {
  static std::map<std::string, Trampoline> kernels;
  return kernels;
}

template <class... A>
struct Call {
  void (*kernel)(A...);
  void** args;
};

// Calls the kernel with each argument read from the pointer at its index, as
// cuLaunchKernel's kernelParams are.
template <class... A, size_t... I>
void invoke_with(Call<A...>* call, std::index_sequence<I...>) {
  call->kernel(*static_cast<std::remove_reference_t<A>*>(call->args[I])...);
}

template <class... A>
void invoke(void* call) {
  invoke_with(static_cast<Call<A...>*>(call), std::index_sequence_for<A...>{});
}

template <class... A>
void run_kernel(void (*kernel)(A...), dim3 grid, dim3 block, size_t shared_bytes,
                uint64_t schedule, void** args) {
  Call<A...> call{kernel, args};
  launch(grid, block, shared_bytes, schedule, &invoke<A...>, &call);
}

struct Register {
  Register(const char* name, Trampoline t) { registry()[name] = t; }
};

}  // namespace scotd_emu

#define threadIdx (scotd_emu::self().thread_idx)
#define blockIdx (scotd_emu::runner->block_idx)
#define blockDim (scotd_emu::runner->block_dim)
#define gridDim (scotd_emu::runner->grid_dim)
#define warpSize 32
#define SCOTD_DYNAMIC_SHARED(type, name) \
  type* name = reinterpret_cast<type*>(scotd_emu::runner->dynamic_shared.data())

// Registers a kernel under its name for scotd_emu_launch.
#define SCOTD_EXPORT(kernel)                                                               \
  static scotd_emu::Register scotd_register_##kernel(                                      \
      #kernel, [](dim3 g, dim3 b, size_t s, uint64_t schedule, void** a) {                   \
        scotd_emu::run_kernel(kernel, g, b, s, schedule, a);                                \
      })

inline void __syncthreads() { scotd_emu::wait(scotd_emu::State::WaitBlock); }
inline void __syncwarp(unsigned = 0xffffffffu) { scotd_emu::wait(scotd_emu::State::WaitWarp); }

// Lanes outside the caller's `width`-lane segment read their own value, as on the GPU.
template <class T>
T __shfl_xor_sync(unsigned, T v, int mask, int width = 32) {
  unsigned w = unsigned(width);
  return scotd_emu::exchange(v, [&](unsigned lane) {
    unsigned src = lane ^ unsigned(mask);
    return src / w == lane / w ? src : lane;
  });
}
template <class T>
T __shfl_down_sync(unsigned, T v, unsigned delta, int width = 32) {
  unsigned w = unsigned(width);
  return scotd_emu::exchange(v, [&](unsigned lane) {
    unsigned src = lane + delta;
    return src / w == lane / w ? src : lane;
  });
}
template <class T>
T __shfl_sync(unsigned, T v, int src_lane, int width = 32) {
  unsigned w = unsigned(width);
  return scotd_emu::exchange(v, [&](unsigned lane) { return lane / w * w + unsigned(src_lane) % w; });
}

template <class T>
T atomicAdd(T* address, T value) {
  return std::atomic_ref<T>(*address).fetch_add(value);
}

inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }
inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
inline float __expf(float x) { return std::exp(x); }
inline float __logf(float x) { return std::log(x); }
inline float __fdividef(float a, float b) { return a / b; }

inline unsigned __float_as_uint(float f) {
  unsigned u;
  std::memcpy(&u, &f, 4);
  return u;
}
inline float __uint_as_float(unsigned u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

extern "C" int scotd_emu_launch(const char* name, unsigned gx, unsigned gy, unsigned gz,
                                unsigned bx, unsigned by, unsigned bz, size_t shared_bytes,
                                uint64_t schedule, void** args);
