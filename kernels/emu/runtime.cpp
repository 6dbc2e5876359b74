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

#if defined(__x86_64__)
// scotd_emu_switch(save_sp, load_sp): saves the callee-saved registers, MXCSR and the x87
// control word on the current stack and its pointer in *save_sp, then restores the same
// from the stack at load_sp and returns there (the System V ABI leaves every other
// register to the caller).
asm(R"(
    .text
    .globl scotd_emu_switch
    .type scotd_emu_switch, @function
scotd_emu_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    subq $8, %rsp
    stmxcsr (%rsp)
    fnstcw 4(%rsp)
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    ldmxcsr (%rsp)
    fldcw 4(%rsp)
    addq $8, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size scotd_emu_switch, .-scotd_emu_switch
    .section .note.GNU-stack,"",@progbits
    .text
)");
#endif
