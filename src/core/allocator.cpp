#include "linformer/allocator.h"

#include <cstdlib>  // defines __GLIBC__ on glibc systems

#if defined(__GLIBC__)
#include <malloc.h>
#endif

namespace lf {

void keep_freed_memory_for_reuse() {
#if defined(__GLIBC__)
  // Blocks up to 256 MiB (a model's activations: 32 MiB FFN buffers at n = 4096, d_ff = 2048) come
  // from the heap; larger ones, e.g. an h×n×n score matrix, still use mmap and go back to the kernel
  // when freed. Up to 1 GiB of free heap top is kept rather than trimmed.
  mallopt(M_MMAP_THRESHOLD, 256 << 20);
  mallopt(M_TRIM_THRESHOLD, 1 << 30);
#endif
}

}  // namespace lf
