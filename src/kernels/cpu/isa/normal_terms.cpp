// The vectorised normal CDF and density (vector_normal.hpp), built once per instruction set
// (LONGNET_CPU_ISA = generic or avx2, the latter with -mavx2 -mfma).
#include "kernels/cpu/vector_normal.hpp"

#ifndef LONGNET_CPU_ISA
#error "LONGNET_CPU_ISA must name the instruction-set namespace (generic or avx2)"
#endif

namespace longnet::kernels::cpu::LONGNET_CPU_ISA {

void normal_terms(const float* x, std::int64_t n, float* cdf, float* density) {
  normal_terms_inline(x, n, cdf, density);
}

}  // namespace longnet::kernels::cpu::LONGNET_CPU_ISA
