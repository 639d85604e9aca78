#include "kernels/cpu/cpu_features.h"

#include <cstdlib>

#include "src/common/errors.h"

namespace rb {

const char* cpu_path_name(CpuPath p) {
  switch (p) {
    case CpuPath::Avx512:
      return "avx512";
    case CpuPath::Avx2:
      return "avx2";
    default:
      return "portable";
  }
}

bool cpu_path_supported(CpuPath p) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();  // libgcc checks CPUID and that the OS saves the wider registers (XGETBV)
  switch (p) {
    case CpuPath::Avx512:
      return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq") &&
             __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("fma");
    case CpuPath::Avx2:
      return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    default:
      return true;
  }
#else
  return p == CpuPath::Portable;
#endif
}

CpuPath best_cpu_path() {
  for (CpuPath p : {CpuPath::Avx512, CpuPath::Avx2})
    if (cpu_path_supported(p)) return p;
  return CpuPath::Portable;
}

CpuPath parse_cpu_path(const std::string& name, const std::string& what) {
  CpuPath p;
  if (name == "avx512")
    p = CpuPath::Avx512;
  else if (name == "avx2")
    p = CpuPath::Avx2;
  else if (name == "portable")
    p = CpuPath::Portable;
  else
    throw Error(what + ": unknown CPU path \"" + name + "\" (use avx512, avx2 or portable)");
  if (!cpu_path_supported(p))
    throw Error(what + ": this CPU cannot run the " + name + " path (best available: " + cpu_path_name(best_cpu_path()) + ")");
  return p;
}

CpuPath selected_cpu_path() {
  const char* env = std::getenv("RETBYTE_CPU");
  if (env && *env) return parse_cpu_path(env, "RETBYTE_CPU");
  return best_cpu_path();
}

}  // namespace rb
