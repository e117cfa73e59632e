// nn.Linear on CUDA (linear.hpp) through cuBLASLt. Row-major X (M x I), W (O x I) and
// Y (M x O) are column-major X^T, W^T and Y^T, so
//   Y^T  = W X^T + b    : C (O x M) = op_T(A = W^T as stored) * B (X^T as stored), bias epilogue
//                         (+ R^T for a residual R: beta 1 with C = R^T and D = Y^T, out of place)
//   dX^T = W^T dY^T     : C (I x M) = A (W^T as stored) * B (dY^T as stored), beta 0 (or 1)
//   dW^T += X^T dY      : C (I x O) = A (X^T as stored) * op_T(B = dY^T as stored), beta 1
// fp32 GEMMs compute in fp32 (CUBLAS_COMPUTE_32F, no TF32) so they match the CPU; bf16
// GEMMs (mixed precision) take bf16 operands, accumulate in fp32 and write bf16 outputs,
// except dW, which is added straight into the fp32 gradient (C and D fp32). The bias is
// added in the GEMM's epilogue (one rounding, no extra pass over Y), or, where cuBLASLt
// offers no such algorithm (f64), broadcast into Y first with beta 1; db is a
// deterministic two-pass column sum (model_kernels_common.cuh). Algorithms are chosen once
// per GEMM shape (the heuristic query costs more than a small GEMM) and reused: the same
// algorithm on the same shapes gives the same bits, which exact resumption relies on. The
// choice is the heuristic's first, or the rank a table of measurements gives for a shape
// on a GPU model (kMeasuredRanks), possibly in the list for the GEMM without its bias.
#include <cublasLt.h>

#include <algorithm>
#include <iterator>
#include <map>
#include <mutex>
#include <string>
#include <tuple>
#include <utility>

#include "kernels/cuda/model_kernels_common.cuh"
#include "longnet/core/runtime_switch.hpp"
#include "longnet/kernels/linear.hpp"

namespace longnet::kernels {
namespace {

using namespace cuda_model;

constexpr std::size_t kWorkspaceBytes = 32u << 20;

struct LtContext {
  cublasLtHandle_t handle = nullptr;
};

// One handle per device, made on first use and kept for the program's life.
LtContext& lt_context(int device) {
  static std::mutex mutex;
  static std::map<int, LtContext> contexts;
  const std::lock_guard<std::mutex> lock(mutex);
  LtContext& c = contexts[device];
  if (!c.handle) LONGNET_CHECK(cublasLtCreate(&c.handle));
  return c;
}

// One workspace per device and stream, made on first use and kept for the program's life:
// GEMMs on two streams at once (the gradient stream beside the current one,
// core/gradient_stream.hpp) must not share one.
void* lt_workspace(int device, cudaStream_t stream) {
  static std::mutex mutex;
  static std::map<std::pair<int, cudaStream_t>, void*> workspaces;
  const std::lock_guard<std::mutex> lock(mutex);
  void*& w = workspaces[{device, stream}];
  if (w == nullptr) LONGNET_CHECK(cudaMalloc(&w, kWorkspaceBytes));
  return w;
}

// RAII holders for the descriptors of one GEMM.
struct MatmulDesc {
  cublasLtMatmulDesc_t desc = nullptr;
  ~MatmulDesc() {
    if (desc) cublasLtMatmulDescDestroy(desc);
  }
};
struct Layout {
  cublasLtMatrixLayout_t layout = nullptr;
  ~Layout() {
    if (layout) cublasLtMatrixLayoutDestroy(layout);
  }
};
struct Preference {
  cublasLtMatmulPreference_t preference = nullptr;
  ~Preference() {
    if (preference) cublasLtMatmulPreferenceDestroy(preference);
  }
};

// Column-major D (m x n) = op(A) op(B) + beta C [+ bias broadcast over columns]; C is D
// itself unless c_in is set.
struct Gemm {
  bool transpose_a = false, transpose_b = false;
  std::int64_t m = 0, n = 0, k = 0;
  const void* a = nullptr;
  std::int64_t lda = 0;
  const void* b = nullptr;
  std::int64_t ldb = 0;
  void* c = nullptr;
  std::int64_t ldc = 0;
  cudaDataType_t operand_type = CUDA_R_32F;  // A and B
  cudaDataType_t output_type = CUDA_R_32F;   // C, D and the bias
  cublasComputeType_t compute = CUBLAS_COMPUTE_32F;
  bool accumulate = false;     // beta 1
  // A weight gradient stored (beta 0) into a gradient whose zero fill was deferred
  // (LinearParams::dweight_store): ranked as the accumulation into zeros it stands for.
  bool stores_deferred_gradient = false;
  const void* bias = nullptr;  // epilogue bias (m elements of output_type), nullable
  const void* c_in = nullptr;  // C when it is not D (with accumulate), nullable
  std::int64_t ldc_in = 0;
};

// The largest power of two (at most 256) dividing the address: what an algorithm may
// assume about a pointer's alignment.
std::uint32_t alignment_of(const void* pointer) {
  const auto address = reinterpret_cast<std::uintptr_t>(pointer);
  std::uint32_t a = 256;
  while (a > 1 && address % a != 0) a /= 2;
  return a;
}

using GemmKey = std::tuple<int, bool, bool, std::int64_t, std::int64_t, std::int64_t, std::int64_t, std::int64_t,
                           std::int64_t, int, int, int, bool, bool, std::uint32_t, std::uint32_t, std::uint32_t,
                           std::uint32_t, std::int64_t, std::uint32_t>;

// Ranks in cuBLASLt's heuristic list measured faster than its first choice, for the GEMMs
// of issue 5's training layer on one GPU model and cuBLASLt version
// (cuda_gemm_algorithms_sweep, run twice, both runs agreeing; docs/benchmarks.md,
// 2026-12-04, seventh session). A choice fixed here keeps a run's algorithms, and so its
// bits, independent of timing noise, which exact resumption relies on; another GPU,
// another cuBLASLt or another shape takes the first choice.
struct MeasuredRank {
  const char* device;  // cudaDeviceProp::name
  std::size_t cublaslt_version;
  bool transpose_a, transpose_b;
  std::int64_t m, n, k;
  // accumulate: beta 1 (a residual as C is added: accumulate). A weight gradient stored
  // into a gradient whose zero fill was deferred (LinearParams::dweight_store) matches the
  // accumulated one's row, and runs its algorithm (the heuristic's list does not depend
  // on beta), with the same bits.
  bool bias, c_in, accumulate;
  cudaDataType_t output_type;
  int rank;
  // The rank is in the heuristic's list for the same GEMM without its bias epilogue, the
  // algorithm run with the epilogue (cublasLtMatmulAlgoCheck accepting it): the list with
  // the epilogue leaves out kernels that run it faster.
  bool in_list_without_bias = false;
  // Measured faster alone, not yet in the training step: used only with
  // LONGNET_PENDING_GEMM_RANKS=1, for that A/B.
  bool pending = false;
};
constexpr char kH200[] = "NVIDIA H200", kH100[] = "NVIDIA H100 80GB HBM3";
constexpr MeasuredRank kMeasuredRanks[] = {
    // D (m x n) = op(A) op(B): forward m = out, n = rows, k = in; dX m = in, n = rows, k =
    // out; dW m = in, n = out, k = rows (accumulated into f32). Rows: 32768.
    {kH200, 130100, true, false, 2304, 32768, 768, true, false, false, CUDA_R_16BF, 7},    // q/k/v fwd -11 %
    {kH200, 130100, false, true, 768, 2304, 32768, false, false, true, CUDA_R_32F, 2},     // q/k/v dW -7 %
    {kH200, 130100, false, false, 768, 32768, 768, false, false, false, CUDA_R_16BF, 5},   // out dX -6 %
    {kH200, 130100, false, true, 768, 768, 32768, false, false, true, CUDA_R_32F, 4},      // out dW -2 %
    {kH200, 130100, false, false, 3072, 32768, 768, false, false, false, CUDA_R_16BF, 6},  // fc2 dX -9 %
    {kH200, 130100, false, true, 3072, 768, 32768, false, false, true, CUDA_R_32F, 1},     // fc2 dW -1.5 %
    // 2026-12-05 (eleventh session), the same sweep on an H100: the ranks both runs agreed
    // on, where they gained more than 2 %.
    {kH100, 130100, false, false, 768, 32768, 768, false, false, false, CUDA_R_16BF, 6},   // out dX -6 %
    {kH100, 130100, false, false, 3072, 32768, 768, false, false, false, CUDA_R_16BF, 6},  // fc2 dX -13 %
    {kH100, 130100, false, true, 3072, 768, 32768, false, false, true, CUDA_R_32F, 1},     // fc2 dW -3 %
    // 2026-12-05 (thirteenth session): the forwards with the bias epilogue through the list
    // without it (two sweeps agreeing): q/k/v 0.176 / 0.171 -> 0.161 / 0.160 ms against
    // rank 7 of its own list (-5 % before), fc1 0.236 -> 0.213 / 0.209 ms.
    {kH100, 130100, true, false, 2304, 32768, 768, true, false, false, CUDA_R_16BF, 5, true},  // q/k/v fwd
    {kH100, 130100, true, false, 3072, 32768, 768, true, false, false, CUDA_R_16BF, 6, true},  // fc1 fwd
    // 2026-12-06 (nineteenth session): the output projection's forward (bias epilogue, the
    // residual as C, beta 1) through the list without the bias, two sweeps agreeing: 0.0879 /
    // 0.0860 -> 0.0810 / 0.0809 ms. Pending: this row said accumulate false until the
    // thirty-second session, so it never matched the step's GEMM (the twentieth session's
    // A/B of it compared two equal programs).
    {kH100, 130100, true, false, 768, 32768, 768, true, true, true, CUDA_R_16BF, 7, true, true},  // out fwd
};

constexpr int kMaxMeasuredRank = 7;  // the heuristic lists 8 algorithms for these shapes
static_assert(std::all_of(std::begin(kMeasuredRanks), std::end(kMeasuredRanks),
                          [](const MeasuredRank& r) { return r.rank >= 0 && r.rank <= kMaxMeasuredRank; }));

// The measured rank for this GEMM on `device_name`: {0, false} is cuBLASLt's first choice.
struct Rank {
  int rank = 0;
  bool in_list_without_bias = false;
};

RuntimeSwitch& pending_ranks_switch() {
  static RuntimeSwitch on{"LONGNET_PENDING_GEMM_RANKS", RuntimeSwitch::Unset::off};
  return on;
}

Rank measured_rank(const std::string& device_name, const Gemm& g) {
  const std::size_t version = cublasLtGetVersion();
  const bool accumulate = g.accumulate || g.stores_deferred_gradient;
  const bool pending = pending_ranks_switch().enabled();
  for (const MeasuredRank& r : kMeasuredRanks) {
    if (device_name == r.device && version == r.cublaslt_version && g.transpose_a == r.transpose_a &&
        g.transpose_b == r.transpose_b && g.m == r.m && g.n == r.n && g.k == r.k && (g.bias != nullptr) == r.bias &&
        (g.c_in != nullptr) == r.c_in && accumulate == r.accumulate && g.output_type == r.output_type &&
        g.operand_type == CUDA_R_16BF && (!r.pending || pending)) {
      return {r.rank, r.in_list_without_bias};
    }
  }
  return {};
}

struct CachedAlgorithm {
  bool supported = false;
  cublasLtMatmulAlgo_t algo{};
};

// The operation of g (its transposes, compute and scale types), with g's bias epilogue
// when with_bias.
void describe(const Gemm& g, bool with_bias, MatmulDesc& op) {
  const cudaDataType_t scale_type = g.compute == CUBLAS_COMPUTE_64F ? CUDA_R_64F : CUDA_R_32F;
  LONGNET_CHECK(cublasLtMatmulDescCreate(&op.desc, g.compute, scale_type));
  const cublasOperation_t ta = g.transpose_a ? CUBLAS_OP_T : CUBLAS_OP_N,
                          tb = g.transpose_b ? CUBLAS_OP_T : CUBLAS_OP_N;
  LONGNET_CHECK(cublasLtMatmulDescSetAttribute(op.desc, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta));
  LONGNET_CHECK(cublasLtMatmulDescSetAttribute(op.desc, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb));
  if (with_bias && g.bias) {
    const cublasLtEpilogue_t epilogue = CUBLASLT_EPILOGUE_BIAS;
    LONGNET_CHECK(cublasLtMatmulDescSetAttribute(op.desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &epilogue, sizeof epilogue));
    LONGNET_CHECK(cublasLtMatmulDescSetAttribute(op.desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &g.bias, sizeof g.bias));
  }
}

// The layouts of one GEMM's A, B, C (c_in's when separate) and D.
struct GemmLayouts {
  Layout a, b, d, c_in;
  cublasLtMatrixLayout_t c() const { return c_in.layout ? c_in.layout : d.layout; }
};

// Algorithm `rank` of cuBLASLt's list for g without its bias epilogue, counting only those
// that run op (g with the epilogue; cublasLtMatmulAlgoCheck), as cuda_gemm_algorithms_sweep
// counts them; false when the list has no such rank.
bool rank_in_list_without_bias(cublasLtHandle_t handle, const Gemm& g, const MatmulDesc& op, const GemmLayouts& l,
                               cublasLtMatmulPreference_t preference, int rank, cublasLtMatmulAlgo_t& algo) {
  MatmulDesc plain;
  describe(g, /*with_bias=*/false, plain);
  cublasLtMatmulHeuristicResult_t listed[kMaxMeasuredRank + 1]{};
  int listed_count = 0;
  if (cublasLtMatmulAlgoGetHeuristic(handle, plain.desc, l.a.layout, l.b.layout, l.c(), l.d.layout, preference,
                                     kMaxMeasuredRank + 1, listed, &listed_count) != CUBLAS_STATUS_SUCCESS) {
    return false;
  }
  for (int i = 0, accepted = 0; i < listed_count; ++i) {
    cublasLtMatmulHeuristicResult_t checked{};
    if (cublasLtMatmulAlgoCheck(handle, op.desc, l.a.layout, l.b.layout, l.c(), l.d.layout, &listed[i].algo,
                                &checked) != CUBLAS_STATUS_SUCCESS ||
        checked.workspaceSize > kWorkspaceBytes) {
      continue;
    }
    if (accepted++ == rank) {
      algo = listed[i].algo;
      return true;
    }
  }
  return false;
}

// Runs the GEMM; false (and nothing done) when cuBLASLt has no algorithm for it, which
// only the bias epilogue of unusual types (or a separate C) may meet.
bool run_gemm(const Gemm& g) {
  const int device = current_device();
  LtContext& context = lt_context(device);
  const bool f64 = g.compute == CUBLAS_COMPUTE_64F;
  MatmulDesc op;
  describe(g, /*with_bias=*/true, op);
  GemmLayouts layouts;
  Layout &la = layouts.a, &lb = layouts.b, &lc = layouts.d, &lc_in = layouts.c_in;
  LONGNET_CHECK(cublasLtMatrixLayoutCreate(&la.layout, g.operand_type,
                                           static_cast<std::uint64_t>(g.transpose_a ? g.k : g.m),
                                           static_cast<std::uint64_t>(g.transpose_a ? g.m : g.k), g.lda));
  LONGNET_CHECK(cublasLtMatrixLayoutCreate(&lb.layout, g.operand_type,
                                           static_cast<std::uint64_t>(g.transpose_b ? g.n : g.k),
                                           static_cast<std::uint64_t>(g.transpose_b ? g.k : g.n), g.ldb));
  LONGNET_CHECK(cublasLtMatrixLayoutCreate(&lc.layout, g.output_type, static_cast<std::uint64_t>(g.m),
                                           static_cast<std::uint64_t>(g.n), g.ldc));
  if (g.c_in) {
    LONGNET_CHECK(cublasLtMatrixLayoutCreate(&lc_in.layout, g.output_type, static_cast<std::uint64_t>(g.m),
                                             static_cast<std::uint64_t>(g.n), g.ldc_in));
  }
  const cublasLtMatrixLayout_t c_layout = layouts.c();
  const void* c_data = g.c_in ? g.c_in : g.c;

  const std::uint32_t align_a = alignment_of(g.a), align_b = alignment_of(g.b), align_c = alignment_of(g.c);
  const std::uint32_t align_bias = g.bias ? alignment_of(g.bias) : 256;
  const std::uint32_t align_c_in = g.c_in ? alignment_of(g.c_in) : 0;
  const GemmKey key{device,
                    g.transpose_a,
                    g.transpose_b,
                    g.m,
                    g.n,
                    g.k,
                    g.lda,
                    g.ldb,
                    g.ldc,
                    static_cast<int>(g.operand_type),
                    static_cast<int>(g.output_type),
                    static_cast<int>(g.compute),
                    g.accumulate,
                    g.bias != nullptr,
                    align_a,
                    align_b,
                    align_c,
                    align_bias,
                    g.c_in ? g.ldc_in : -1,
                    align_c_in};
  static std::mutex mutex;
  static std::map<GemmKey, CachedAlgorithm> algorithms;
  CachedAlgorithm chosen;
  {
    const std::lock_guard<std::mutex> lock(mutex);
    const auto it = algorithms.find(key);
    if (it != algorithms.end()) {
      chosen = it->second;
    } else {
      Preference preference;
      LONGNET_CHECK(cublasLtMatmulPreferenceCreate(&preference.preference));
      const std::uint64_t workspace = kWorkspaceBytes;
      LONGNET_CHECK(cublasLtMatmulPreferenceSetAttribute(
          preference.preference, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &workspace, sizeof workspace));
      const std::pair<cublasLtMatmulPreferenceAttributes_t, std::uint32_t> alignments[] = {
          {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, align_a},
          {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, align_b},
          {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, g.c_in ? align_c_in : align_c},
          {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, align_c}};
      for (const auto& [attribute, value] : alignments) {
        LONGNET_CHECK(cublasLtMatmulPreferenceSetAttribute(preference.preference, attribute, &value, sizeof value));
      }
      const Rank measured = measured_rank(cuda_device_info(device).name, g);
      const int rank = measured.rank;
      cublasLtMatmulHeuristicResult_t results[kMaxMeasuredRank + 1]{};
      int found = 0;
      const cublasStatus_t status = cublasLtMatmulAlgoGetHeuristic(
          context.handle, op.desc, la.layout, lb.layout, c_layout, lc.layout, preference.preference,
          measured.in_list_without_bias ? 1 : rank + 1, results, &found);
      if (status != CUBLAS_STATUS_NOT_SUPPORTED) LONGNET_CHECK(status);
      chosen.supported = status == CUBLAS_STATUS_SUCCESS && found > 0;
      // (A shorter list than measured: the first choice.)
      if (chosen.supported) chosen.algo = results[found > rank ? rank : 0].algo;
      // (A list without the rank: the first choice above.)
      if (chosen.supported && measured.in_list_without_bias) {
        rank_in_list_without_bias(context.handle, g, op, layouts, preference.preference, rank, chosen.algo);
      }
      algorithms.emplace(key, chosen);
    }
  }
  if (!chosen.supported) {
    require(g.bias != nullptr || g.c_in != nullptr, "linear on CUDA: cuBLASLt offers no algorithm for a ", g.m, " x ",
            g.n, " x ", g.k, " GEMM of these types");
    return false;
  }
  const double alpha64 = 1.0, beta64 = g.accumulate ? 1.0 : 0.0;
  const float alpha32 = 1.0f, beta32 = g.accumulate ? 1.0f : 0.0f;
  const void* alpha = f64 ? static_cast<const void*>(&alpha64) : static_cast<const void*>(&alpha32);
  const void* beta = f64 ? static_cast<const void*>(&beta64) : static_cast<const void*>(&beta32);
  const cudaStream_t stream = current_cuda_stream();
  LONGNET_CHECK(cublasLtMatmul(context.handle, op.desc, alpha, g.a, la.layout, g.b, lb.layout, beta, c_data, c_layout,
                               g.c, lc.layout, &chosen.algo, lt_workspace(device, stream), kWorkspaceBytes, stream));
  return true;
}

template <class T>
struct GemmTypes;
template <>
struct GemmTypes<float> {
  static constexpr cudaDataType_t type = CUDA_R_32F;
  static constexpr cublasComputeType_t compute = CUBLAS_COMPUTE_32F;
};
template <>
struct GemmTypes<double> {
  static constexpr cudaDataType_t type = CUDA_R_64F;
  static constexpr cublasComputeType_t compute = CUBLAS_COMPUTE_64F;
};
template <>
struct GemmTypes<__nv_bfloat16> {
  static constexpr cudaDataType_t type = CUDA_R_16BF;
  static constexpr cublasComputeType_t compute = CUBLAS_COMPUTE_32F;
};

template <class T>
__global__ void broadcast_bias_kernel(T* y, std::int64_t rows, std::int64_t columns, std::int64_t row_stride,
                                      const T* bias) {
  begin_dependent_kernel();
  LONGNET_GRID_STRIDE(i, rows * columns) y[(i / columns) * row_stride + i % columns] = bias[i % columns];
}

template <class T>
__global__ void add_rows_kernel(T* y, std::int64_t rows, std::int64_t columns, std::int64_t row_stride, const T* x,
                                std::int64_t x_row_stride) {
  begin_dependent_kernel();
  LONGNET_GRID_STRIDE(i, rows * columns) {
    T& out = y[(i / columns) * row_stride + i % columns];
    out = from_compute<T>(to_compute(out) + to_compute(x[(i / columns) * x_row_stride + i % columns]));
  }
}

template <class T>
__global__ void fill_rows_kernel(T* y, std::int64_t rows, std::int64_t columns, std::int64_t row_stride) {
  begin_dependent_kernel();
  LONGNET_GRID_STRIDE(i, rows * columns) y[(i / columns) * row_stride + i % columns] = from_compute<T>(0);
}

template <class T>
void forward(const LinearParams& p) {
  if (p.rows == 0 || p.out_features == 0) return;
  T* y = static_cast<T*>(p.y);
  const cudaStream_t stream = current_cuda_stream();
  const std::int64_t count = p.rows * p.out_features;
  const auto add_residual = [&] {
    if (!p.residual) return;
    launch_model(add_rows_kernel<T>, grid_for(count), kThreads, 0, stream, y, p.rows, p.out_features, p.y_row_stride,
                 static_cast<const T*>(p.residual), p.residual_row_stride);
    check_launch();
  };
  if (p.in_features == 0) {
    if (p.bias) {
      launch_model(broadcast_bias_kernel<T>, grid_for(count), kThreads, 0, stream, y, p.rows, p.out_features,
                   p.y_row_stride, static_cast<const T*>(p.bias));
    } else {
      launch_model(fill_rows_kernel<T>, grid_for(count), kThreads, 0, stream, y, p.rows, p.out_features,
                   p.y_row_stride);
    }
    check_launch();
    add_residual();
    return;
  }
  Gemm g;
  g.transpose_a = true;
  g.m = p.out_features;
  g.n = p.rows;
  g.k = p.in_features;
  g.a = p.weight;
  g.lda = p.in_features;
  g.b = p.x;
  g.ldb = p.x_row_stride;
  g.c = y;
  g.ldc = p.y_row_stride;
  g.operand_type = g.output_type = GemmTypes<T>::type;
  g.compute = GemmTypes<T>::compute;
  const bool epilogue = p.bias != nullptr && !std::is_same_v<T, double>;
  g.bias = epilogue ? p.bias : nullptr;
  if (p.residual) {
    g.c_in = p.residual;
    g.ldc_in = p.residual_row_stride;
    g.accumulate = true;
  }
  if ((p.bias == nullptr || epilogue) && run_gemm(g)) return;
  // Without the epilogue: Y = bias (or 0), Y += X W^T, Y += residual.
  if (p.bias) {
    launch_model(broadcast_bias_kernel<T>, grid_for(count), kThreads, 0, stream, y, p.rows, p.out_features,
                 p.y_row_stride, static_cast<const T*>(p.bias));
    check_launch();
  }
  g.bias = nullptr;
  g.c_in = nullptr;
  g.accumulate = p.bias != nullptr;
  run_gemm(g);
  add_residual();
}

// dW += (kStoreWeight: =) the scratch's first `in` rows, db += its row `in` (column-major (in + kOnesColumns)
// x out, as dW's GEMM over x's ones column wrote it). A thread per kVector elements of dW's
// columns (16 bytes for f32 gradients whose rows are whole packs) and per element of db.
// Bytes: dW read and written, the scratch read once: 28 MB for fc1 (768 -> 3072), ~10 us.
template <class C, int kVector, bool kStoreWeight>
__global__ void add_weight_and_bias_gradients_kernel(const C* scratch, std::int64_t in, std::int64_t out, C* dweight,
                                                     C* dbias) {
  begin_dependent_kernel();
  const std::int64_t groups = in / kVector + 1;  // dW's groups of a row, then db's element
  LONGNET_GRID_STRIDE(i, out * groups) {
    const std::int64_t o = i / groups, g = i % groups;
    const C* source = scratch + o * (in + kOnesColumns);
    if (g + 1 == groups) {
      dbias[o] += source[in];
    } else if constexpr (kVector == 4 && std::is_same_v<C, float>) {
      float4& target = *reinterpret_cast<float4*>(dweight + o * in + 4 * g);
      const float4 add = *reinterpret_cast<const float4*>(source + 4 * g);
      if constexpr (kStoreWeight) {
        target = add;
      } else {
        float4 sum = target;
        sum.x += add.x, sum.y += add.y, sum.z += add.z, sum.w += add.w;
        target = sum;
      }
    } else if constexpr (kStoreWeight) {
      dweight[o * in + g] = source[g];
    } else {
      dweight[o * in + g] += source[g];
    }
  }
}

template <class T>
void backward(const LinearParams& p) {
  if (p.rows == 0) {
    if (p.dweight && p.dweight_store && p.in_features > 0 && p.out_features > 0) {  // x^T dy over no rows
      LONGNET_CHECK(
          cudaMemsetAsync(p.dweight, 0, p.in_features * p.out_features * sizeof(Compute<T>), current_cuda_stream()));
    }
    return;
  }
  using C = Compute<T>;  // the gradients' dtype: accumulation_dtype
  if (p.dx && p.in_features > 0) {
    if (p.out_features == 0) {
      if (!p.dx_accumulate) {
        launch_model(fill_rows_kernel<T>, grid_for(p.rows * p.in_features), kThreads, 0, current_cuda_stream(),
                     static_cast<T*>(p.dx), p.rows, p.in_features, p.dx_row_stride);
        check_launch();
      }
    } else {
      Gemm g;
      g.m = p.in_features;
      g.n = p.rows;
      g.k = p.out_features;
      g.a = p.weight;
      g.lda = p.in_features;
      g.b = p.dy;
      g.ldb = p.dy_row_stride;
      g.c = p.dx;
      g.ldc = p.dx_row_stride;
      g.operand_type = g.output_type = GemmTypes<T>::type;
      g.compute = GemmTypes<T>::compute;
      g.accumulate = p.dx_accumulate;
      run_gemm(g);
    }
  }
  // dW^T (+)= X^T dY over the first `x_columns` columns of x's rows, into c (ldc rows).
  const auto weight_gradient = [&](std::int64_t x_columns, void* c, std::int64_t ldc, bool accumulate) {
    Gemm g;
    g.transpose_b = true;
    g.m = x_columns;
    g.n = p.out_features;
    g.k = p.rows;
    g.a = p.x;
    g.lda = p.x_row_stride;
    g.b = p.dy;
    g.ldb = p.dy_row_stride;
    g.c = c;
    g.ldc = ldc;
    g.operand_type = GemmTypes<T>::type;
    g.output_type = GemmTypes<C>::type;
    g.compute = GemmTypes<T>::compute;
    g.accumulate = accumulate;
    g.stores_deferred_gradient = p.dweight_store && c == p.dweight;
    run_gemm(g);
  };
  // dW and db from one GEMM over x's ones column (linear.hpp), into scratch; then added.
  const bool ones_column = p.x_ones_column && p.dweight && p.dbias && p.in_features > 0 && p.out_features > 0;
  if (ones_column) {
    const std::int64_t rows_out = p.in_features + kOnesColumns;
    const Tensor scratch =
        Tensor::empty({p.out_features, rows_out}, dtype_of<C>::value, Device::cuda(current_device()));
    weight_gradient(rows_out, scratch.data(), rows_out, /*accumulate=*/false);
    bool vector = false;
    if constexpr (std::is_same_v<C, float>) vector = p.in_features % 4 == 0 && aligned16(p.dweight);
    const auto add = [&](auto kernel, std::int64_t vector_width) {
      launch_model(kernel, grid_for(p.out_features * (p.in_features / vector_width + 1)), kThreads, 0,
                   current_cuda_stream(), scratch.data<C>(), p.in_features, p.out_features, static_cast<C*>(p.dweight),
                   static_cast<C*>(p.dbias));
    };
    if (vector) {
      p.dweight_store ? add(add_weight_and_bias_gradients_kernel<C, 4, true>, 4)
                      : add(add_weight_and_bias_gradients_kernel<C, 4, false>, 4);
    } else {
      p.dweight_store ? add(add_weight_and_bias_gradients_kernel<C, 1, true>, 1)
                      : add(add_weight_and_bias_gradients_kernel<C, 1, false>, 1);
    }
    check_launch();
    return;
  }
  if (p.dweight && p.in_features > 0 && p.out_features > 0) {
    weight_gradient(p.in_features, p.dweight, p.in_features, /*accumulate=*/!p.dweight_store);
  }
  if (p.dbias && p.out_features > 0) {
    // dy (rows, out) read once in 16-byte packs: at 3 TB/s, 17 us for 32768 x 768 bf16.
    accumulate_column_sums(static_cast<const T*>(p.dy), p.rows, p.out_features, p.dy_row_stride,
                           static_cast<C*>(p.dbias), current_cuda_stream());
  }
}

}  // namespace

void linear_forward_cuda(const LinearParams& p) {
  dispatch_activation(p.dtype, "linear_forward", [&](auto tag) { forward<decltype(tag)>(p); });
}

void linear_backward_cuda(const LinearParams& p) {
  validate_ones_column(p);
  dispatch_activation(p.dtype, "linear_backward", [&](auto tag) { backward<decltype(tag)>(p); });
}

}  // namespace longnet::kernels
