// The numerics contract (README "Numerics contract"): constants every CPU path shares. Changing
// any of them, or any kernel's order of operations, changes bits: bump kNumericsVersion (.rbz
// files record it, so a decoder refuses files it would decode differently).
#pragma once

namespace rb {

constexpr int kNumericsVersion = 1;
// GEMM: each output element sums over k in fixed blocks of this many terms (one FMA chain each).
constexpr int kGemmKC = 256;
// Reductions over a row: lane l sums the elements i with i % 16 == l, lanes combine in a fixed tree.
constexpr int kSumLanes = 16;

}  // namespace rb
