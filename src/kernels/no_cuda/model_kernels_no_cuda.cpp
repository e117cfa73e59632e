// Builds without the CUDA backend: the CUDA entry points of the model kernels (layer norm,
// GELU, embedding, cross-entropy, dropout, AdamW, gradient norm, rotary, linear,
// elementwise add, dilated decode) say so. No tensor can live on a CUDA device in such a
// build, so these are reached only by calling the kernels directly.
#include "longnet/core/error.hpp"
#include "longnet/kernels/adamw.hpp"
#include "longnet/kernels/cross_entropy.hpp"
#include "longnet/kernels/dilated_decode.hpp"
#include "longnet/kernels/dropout.hpp"
#include "longnet/kernels/elementwise.hpp"
#include "longnet/kernels/embedding.hpp"
#include "longnet/kernels/gelu.hpp"
#include "longnet/kernels/gradient_norm.hpp"
#include "longnet/kernels/layer_norm.hpp"
#include "longnet/kernels/linear.hpp"
#include "longnet/kernels/projection_rotary.hpp"
#include "longnet/kernels/rotary.hpp"

namespace longnet::kernels {
namespace {
[[noreturn]] void no_cuda(const char* kernel) {
  throw Error(str(kernel, " on CUDA: this build has no CUDA backend (configure with LONGNET_WITH_CUDA=ON)"));
}
}  // namespace

void layer_norm_forward_cuda(const LayerNormParams&) { no_cuda("layer_norm_forward"); }
void layer_norm_backward_cuda(const LayerNormParams&) { no_cuda("layer_norm_backward"); }
void gelu_forward_cuda(const GeluParams&) { no_cuda("gelu_forward"); }
void gelu_backward_cuda(const GeluParams&) { no_cuda("gelu_backward"); }
void embedding_forward_cuda(const EmbeddingParams&) { no_cuda("embedding_forward"); }
void embedding_backward_cuda(const EmbeddingParams&) { no_cuda("embedding_backward"); }
void cross_entropy_forward_cuda(const CrossEntropyParams&) { no_cuda("cross_entropy_forward"); }
void cross_entropy_backward_cuda(const CrossEntropyParams&) { no_cuda("cross_entropy_backward"); }
void dropout_forward_cuda(const DropoutParams&) { no_cuda("dropout_forward"); }
void dropout_backward_cuda(const DropoutParams&) { no_cuda("dropout_backward"); }
void adamw_step_cuda(const AdamWParams&) { no_cuda("adamw_step"); }
void adamw_step_many_cuda(const AdamWParams*, std::size_t) { no_cuda("adamw_step"); }
void sum_of_squares_many_into_cuda(const void* const*, const std::int64_t*, std::size_t, DType, double*) {
  no_cuda("sum_of_squares");
}
void sum_of_squares_partials_cuda(const void* const*, const std::int64_t*, std::size_t, DType, double*) {
  no_cuda("sum_of_squares");
}
void ordered_sum_cuda(const double*, std::int64_t, double*) { no_cuda("sum_of_squares"); }
void scale_cuda(void*, std::int64_t, DType, double) { no_cuda("scale"); }
void rotary_apply_cuda(const RotaryParams&) { no_cuda("rotary_apply"); }
void rotary_apply_query_key_cuda(const RotaryParams&, const RotaryParams&) { no_cuda("rotary_apply_query_key"); }
void linear_forward_cuda(const LinearParams&) { no_cuda("linear_forward"); }
bool projection_rotary_supported(const ProjectionRotaryParams&) { return false; }
void projection_rotary_cuda(const ProjectionRotaryParams&) { no_cuda("projection_rotary"); }
void linear_backward_cuda(const LinearParams&) { no_cuda("linear_backward"); }
void add_cuda(const AddParams&) { no_cuda("add"); }
void dilated_decode_cuda(const DilatedDecodeParams&) { no_cuda("dilated_decode"); }

}  // namespace longnet::kernels
