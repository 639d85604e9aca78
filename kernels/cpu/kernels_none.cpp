// Non-x86 builds: only the portable path exists (cpu_path_supported says so for the others).
#include "kernels/cpu/kernel_table.h"

namespace rb {
CpuKernels cpu_kernels_avx2() { return cpu_kernels_portable(); }
CpuKernels cpu_kernels_avx512() { return cpu_kernels_portable(); }
}  // namespace rb
