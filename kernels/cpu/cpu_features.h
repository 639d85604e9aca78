// Which CPU path runs: the best this CPU supports, or the one RETBYTE_CPU names. Every path
// computes the same bits (the numerics contract); they differ only in speed.
#pragma once
#include <string>

namespace rb {

enum class CpuPath { Portable, Avx2, Avx512 };

const char* cpu_path_name(CpuPath p);
bool cpu_path_supported(CpuPath p);  // the CPU (and OS) can run this path's instructions
CpuPath best_cpu_path();
// RETBYTE_CPU=avx512|avx2|portable if set (an rb::Error if unknown or unsupported), else the best.
CpuPath selected_cpu_path();
// Parses a path name; throws rb::Error naming `what` when it is unknown or the CPU lacks it.
CpuPath parse_cpu_path(const std::string& name, const std::string& what);

}  // namespace rb
