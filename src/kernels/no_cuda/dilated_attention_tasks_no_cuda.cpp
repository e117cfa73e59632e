// Builds without the CUDA backend: the CUDA entry points of the sequence-parallel task
// kernel say so.
#include "longnet/core/error.hpp"
#include "longnet/kernels/dilated_attention_tasks.hpp"

namespace longnet::kernels {
namespace {

[[noreturn]] void no_cuda(const char* what) {
  throw Error(str(what, " on CUDA: this build has no CUDA backend (configure with LONGNET_WITH_CUDA=ON)"));
}

}  // namespace

void dilated_attention_tasks_forward_cuda(const DilatedAttentionTasksParams&) {
  no_cuda("sequence-parallel dilated attention");
}
void dilated_attention_tasks_backward_cuda(const DilatedAttentionTasksParams&) {
  no_cuda("sequence-parallel dilated attention");
}
void pack_kv_rows_cuda(const KvRowsParams&) { no_cuda("packing exchanged rows"); }
void scatter_add_kv_rows_cuda(const KvRowsParams&) { no_cuda("adding returned rows"); }

}  // namespace longnet::kernels
