// Which instruction-set build of the cpu/isa/ translation units a call takes (they are
// compiled twice, generic and AVX2+FMA, into the namespaces cpu::generic and cpu::avx2).
#pragma once

namespace longnet::kernels::cpu {

inline bool use_avx2() {
#if defined(__x86_64__) || defined(__i386__)
  static const bool supported = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return supported;
#else
  return false;
#endif
}

}  // namespace longnet::kernels::cpu
