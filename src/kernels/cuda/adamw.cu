// AdamW on CUDA (adamw.hpp), elementwise in the master-weight precision; the bias
// corrections are computed on the host, a clip factor (if any) by each block. With a
// param_copy (mixed precision) the same pass writes the updated parameter rounded to bf16,
// the copy the next step's GEMMs read. adamw_step_many_cuda packs up to kTensorsPerLaunch
// parameters into one launch: each block takes one chunk of kChunk elements of one
// parameter (found by a binary search over the parameters' first blocks), so a vector of
// 768 elements costs a block, not a launch.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "kernels/cuda/model_kernels_common.cuh"
#include "longnet/kernels/adamw.hpp"

namespace longnet::kernels {
namespace {

using namespace cuda_model;

template <class T>
struct Hyper {
  T lr, decay, beta1, beta2, eps, grad_scale, correction1, correction2;
};

// One element's update, on values (the scalar and the packed loops share it and give the
// same bits: every product explicit: mul_rn, model_kernels_common.cuh).
template <class T>
__device__ __forceinline__ void update_values(T& p, T grad, T& m, T& v, const Hyper<T>& h) {
  const T g = mul_rn(grad, h.grad_scale);
  p = p - mul_rn(h.decay, p);
  m = mul_rn(h.beta1, m) + mul_rn(T(1) - h.beta1, g);
  v = mul_rn(h.beta2, v) + mul_rn(mul_rn(T(1) - h.beta2, g), g);
  p = p - mul_rn(h.lr, m / h.correction1) / (sqrt(v / h.correction2) + h.eps);
}

constexpr int kTensorsPerLaunch = 40;  // the batch travels as a kernel argument (< 4 KB)
constexpr std::int64_t kChunk = 8192;  // elements per block: 32 per thread

// One parameter of a batch; Hyper's lr * weight_decay is its own, the rest shared.
// Copy: void (no copy) or __nv_bfloat16.
template <class T, class Copy>
struct BatchTensor {
  T* param;
  const T* grad;
  T* m;
  T* v;
  Copy* copy;
  std::int64_t count;
  T decay;
  int first_block;
  bool packed;  // param, grad, m, v 16-byte aligned, and the copy as its packs need
};

template <class T, class Copy>
struct Batch {
  BatchTensor<T, Copy> tensors[kTensorsPerLaunch];
  int size;
  Hyper<T> shared;  // decay unused; grad_scale without the clip factor
  // AdamWParams' clip, read by every block (one 8-byte load); null: no clip factor.
  const double* clip_sum_of_squares;
  double clip_max_norm;
  double grad_scale;
};

template <class T, class Copy>
__global__ void step_many_kernel(const __grid_constant__ Batch<T, Copy> batch) {
  begin_dependent_kernel();
  const int block = static_cast<int>(blockIdx.x);
  int low = 0, high = batch.size - 1;  // the last tensor whose first block <= block
  while (low < high) {
    const int middle = (low + high + 1) / 2;
    if (batch.tensors[middle].first_block <= block) {
      low = middle;
    } else {
      high = middle - 1;
    }
  }
  const BatchTensor<T, Copy>& x = batch.tensors[low];
  Hyper<T> h = batch.shared;
  h.decay = x.decay;
  if (batch.clip_sum_of_squares != nullptr) {  // the CPU update's arithmetic, in double
    const double sum = *batch.clip_sum_of_squares;
    if (!isfinite(sum)) return;  // a diverged step is not taken
    h.grad_scale = static_cast<T>(clipped_grad_scale(batch.grad_scale, sum, batch.clip_max_norm));
  }
  const std::int64_t begin = static_cast<std::int64_t>(block - x.first_block) * kChunk;
  const std::int64_t end = min(x.count, begin + kChunk);
  std::int64_t scalar_begin = begin;
  if (x.packed) {
    // Whole 16-byte packs (a quarter of f32's memory instructions), then the chunk's last
    // elements one by one. kChunk is a multiple of every pack, so packs lie inside a chunk.
    constexpr int P = kPack<T>;
    for (std::int64_t g = begin / P + threadIdx.x; g < end / P; g += blockDim.x) {
      Pack<T> p = load_pack(x.param, g), m = load_pack(x.m, g), v = load_pack(x.v, g);
      const Pack<T> grad = load_pack(x.grad, g);
      for (int e = 0; e < P; ++e) update_values(p.v[e], grad.v[e], m.v[e], v.v[e], h);
      store_pack(x.param, g, p);
      store_pack(x.m, g, m);
      store_pack(x.v, g, v);
      if constexpr (!std::is_void_v<Copy>) {
        struct alignas(sizeof(Copy) * P) CopyPack {
          Copy v[P];
        } copy;
        for (int e = 0; e < P; ++e) copy.v[e] = from_compute<Copy>(static_cast<float>(p.v[e]));
        reinterpret_cast<CopyPack*>(x.copy)[g] = copy;
      }
    }
    scalar_begin = end / P * P;
  }
  for (std::int64_t i = scalar_begin + threadIdx.x; i < end; i += blockDim.x) {
    T p = x.param[i], m = x.m[i], v = x.v[i];
    update_values(p, x.grad[i], m, v, h);
    x.m[i] = m;
    x.v[i] = v;
    x.param[i] = p;
    if constexpr (!std::is_void_v<Copy>) x.copy[i] = from_compute<Copy>(static_cast<float>(p));
  }
}

template <class T>
Hyper<T> hyper_of(const AdamWParams& p) {
  const double t = static_cast<double>(p.step);
  return Hyper<T>{static_cast<T>(p.lr),
                  static_cast<T>(p.lr * p.weight_decay),
                  static_cast<T>(p.beta1),
                  static_cast<T>(p.beta2),
                  static_cast<T>(p.eps),
                  static_cast<T>(p.grad_scale),
                  static_cast<T>(1.0 - std::pow(p.beta1, t)),
                  static_cast<T>(1.0 - std::pow(p.beta2, t))};
}

void check_copy(const AdamWParams& p) {
  require(p.param_copy == nullptr || (p.dtype == DType::f32 && p.copy_dtype == DType::bf16),
          "adamw_step on CUDA: a param_copy needs f32 parameters and copy_dtype bf16 (got ", dtype_name(p.dtype),
          " and ", dtype_name(p.copy_dtype), ")");
}

// Whether two parameters can share a launch: one dtype, both with or without a copy, and
// the same hyperparameters apart from weight decay.
bool same_launch(const AdamWParams& a, const AdamWParams& b) {
  return a.dtype == b.dtype && (a.param_copy == nullptr) == (b.param_copy == nullptr) && a.lr == b.lr &&
         a.beta1 == b.beta1 && a.beta2 == b.beta2 && a.eps == b.eps && a.grad_scale == b.grad_scale &&
         a.clip_sum_of_squares == b.clip_sum_of_squares && a.clip_max_norm == b.clip_max_norm && a.step == b.step;
}

template <class T, class Copy>
void launch_many(const AdamWParams* params, std::size_t count, cudaStream_t stream) {
  Batch<T, Copy> batch{};
  batch.shared = hyper_of<T>(params[0]);
  batch.clip_sum_of_squares = params[0].clip_sum_of_squares;
  batch.clip_max_norm = params[0].clip_max_norm;
  batch.grad_scale = params[0].grad_scale;
  int blocks = 0;
  for (std::size_t i = 0; i < count; ++i) {
    const AdamWParams& p = params[i];
    BatchTensor<T, Copy>& x = batch.tensors[batch.size++];
    x.param = static_cast<T*>(p.param);
    x.grad = static_cast<const T*>(p.grad);
    x.m = static_cast<T*>(p.m);
    x.v = static_cast<T*>(p.v);
    if constexpr (!std::is_void_v<Copy>) x.copy = static_cast<Copy*>(p.param_copy);
    x.count = p.count;
    x.decay = static_cast<T>(p.lr * p.weight_decay);
    x.first_block = blocks;
    std::uintptr_t copy_alignment = 1;  // a copy's pack: kPack<T> values, 8 bytes of bf16 for f32
    if constexpr (!std::is_void_v<Copy>) copy_alignment = sizeof(Copy) * kPack<T>;
    x.packed = aligned16(p.param, p.grad, p.m, p.v) &&
               reinterpret_cast<std::uintptr_t>(p.param_copy) % copy_alignment == 0;
    blocks += static_cast<int>((p.count + kChunk - 1) / kChunk);
  }
  launch_model(step_many_kernel<T, Copy>, static_cast<unsigned>(blocks), kThreads, 0, stream, batch);
}

}  // namespace

void adamw_step_many_cuda(const AdamWParams* params, std::size_t count) {
  const cudaStream_t stream = current_cuda_stream();
  auto launch = [&](const std::vector<AdamWParams>& run) {
    const AdamWParams& first = run.front();
    dispatch_float(first.dtype, "adamw_step", [&](auto tag) {
      using T = decltype(tag);
      if constexpr (std::is_same_v<T, float>) {
        if (first.param_copy) {
          launch_many<T, __nv_bfloat16>(run.data(), run.size(), stream);
          return;
        }
      }
      launch_many<T, void>(run.data(), run.size(), stream);
    });
    check_launch();
  };
  // Parameters that can share a launch, in their order (a model mixes parameters with and
  // without a compute copy); each group is launched when it holds kTensorsPerLaunch or its
  // blocks would pass the int range the kernel counts them in.
  constexpr std::int64_t kMaxBlocks = (std::int64_t{1} << 31) - 1;
  struct Group {
    std::vector<AdamWParams> run;
    std::int64_t blocks = 0;
  };
  for (std::size_t i = 0; i < count; ++i) {  // before any parameter changes
    check_copy(params[i]);
    require(params[i].count <= kMaxBlocks * kChunk, "adamw_step on CUDA: a parameter of ", params[i].count,
            " elements exceeds the ", kMaxBlocks * kChunk, " one launch can update");
  }
  std::vector<Group> groups;
  for (std::size_t i = 0; i < count; ++i) {
    const AdamWParams& p = params[i];
    if (p.count == 0) continue;
    const std::int64_t blocks = (p.count + kChunk - 1) / kChunk;
    auto group = std::find_if(groups.begin(), groups.end(), [&](const Group& g) { return same_launch(g.run.front(), p); });
    if (group == groups.end()) group = groups.insert(groups.end(), Group{});
    if (group->run.size() == kTensorsPerLaunch || group->blocks + blocks > kMaxBlocks) {
      launch(group->run);
      group->run.clear();
      group->blocks = 0;
    }
    group->run.push_back(p);
    group->blocks += blocks;
  }
  for (const Group& g : groups) {
    if (!g.run.empty()) launch(g.run);
  }
}

void adamw_step_cuda(const AdamWParams& p) { adamw_step_many_cuda(&p, 1); }

}  // namespace longnet::kernels
