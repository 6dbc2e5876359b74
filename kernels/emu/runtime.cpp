// The emulator library's entry point: launches a registered kernel by name.
#include "cuda_emu.h"

extern "C" int scotd_emu_launch(const char* name, unsigned gx, unsigned gy, unsigned gz,
                                unsigned bx, unsigned by, unsigned bz, size_t shared_bytes,
                                uint64_t schedule, void** args) {
  auto& kernels = scotd_emu::registry();
  auto found = kernels.find(name);
  if (found == kernels.end()) return 1;
  found->second(dim3{gx, gy, gz}, dim3{bx, by, bz}, shared_bytes, schedule, args);
  return 0;
}
