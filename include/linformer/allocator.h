// A heap policy the host program may opt into. Layers allocate their activation buffers (Buffer<T>: a
// std::vector on the CPU) and an inference forward releases them before it returns, so that a model holds
// one block's activations at a time. With glibc's defaults every such buffer over its dynamic mmap threshold goes back to
// the kernel when freed and the next forward page-faults it in again (measured: the Linformer layer's
// forward at n = 4096 took 57 ms instead of 45). keep_freed_memory_for_reuse() makes glibc serve
// those sizes from its heap and keep freed memory there for the next request: peak RSS is unchanged
// (it is set by what is live at once), repeated passes stop faulting.
#pragma once

namespace lf {

// The policy is glibc's, so it holds for the whole process and every allocation in it: the library
// never sets it; a host program calls this once at start-up, before large allocations, if it wants it
// (the `linformer` CLI does). No-op on non-glibc systems.
void keep_freed_memory_for_reuse();

}  // namespace lf
