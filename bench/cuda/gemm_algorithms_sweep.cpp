// How far cuBLASLt's first heuristic choice is from the fastest algorithm it offers, for the
// GEMMs of one layer of issue 5's training configuration (32768 rows, d_model 768, ffn 3072,
// q/k/v as one 768 -> 2304 projection, bf16 operands, fp32 accumulation). Each GEMM is set
// up as nn.Linear runs it (kernels/cuda/linear.cu): forward with the bias epilogue (and the
// residual as C for the output projections), dX = dY W, dW += X^T dY into fp32. For each,
// the algorithms the heuristic returns (up to --algorithms) are timed (CUDA-event medians)
// and the table gives the first one's time, the best one's, its rank, split-K and tile ids.
// The per-step column multiplies by the 12 layers. Answers whether choosing the algorithm
// by measurement (or never splitting K) is worth its cost to exact resumption: the same
// algorithm on the same shapes is what makes a resumed run repeat an uninterrupted one.
// Usage: cuda_gemm_algorithms_sweep [--rows N] [--repeat R] [--algorithms K]
#include <cublasLt.h>
#include <cuda_runtime.h>

#include <CLI/CLI.hpp>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "bench/cuda/cuda_checks.hpp"
#include "bench/cuda/cuda_timing.hpp"
#include "longnet/longnet.hpp"

namespace {

using namespace longnet;

constexpr std::size_t kWorkspaceBytes = 32u << 20;  // linear.cu's workspace

// Column-major D (m x n) = op(A) op(B) [+ C] [+ bias], as linear.cu's Gemm.
struct Case {
  std::string name;
  bool transpose_a = false, transpose_b = false;
  std::int64_t m = 0, n = 0, k = 0, lda = 0, ldb = 0, ldc = 0;
  bool bias = false, residual = false, accumulate = false, f32_output = false;
  int per_step = 12;
  // The bias epilogue run with the algorithms the heuristic lists for the GEMM without it
  // (those cublasLtMatmulAlgoCheck accepts with it): whether its shorter list of its own
  // leaves out faster kernels.
  bool algorithms_without_bias = false;
};

struct Result {
  double first_ms = 0, best_ms = 0;
  int best_rank = 0, tried = 0, best_splitk = 0, best_tile = 0, first_splitk = 0, first_tile = 0;
};

int config_attribute(const cublasLtMatmulAlgo_t& algo, cublasLtMatmulAlgoConfigAttributes_t attribute) {
  std::int32_t value = 0;
  std::size_t written = 0;
  if (cublasLtMatmulAlgoConfigGetAttribute(&algo, attribute, &value, sizeof value, &written) != CUBLAS_STATUS_SUCCESS) {
    return -1;
  }
  return value;
}

// The largest power of two up to 256 that divides the address (linear.cu's alignment_of).
std::uint32_t alignment_of(const void* pointer) {
  const auto address = reinterpret_cast<std::uintptr_t>(pointer);
  std::uint32_t a = 256;
  while (a > 1 && address % a != 0) a /= 2;
  return a;
}

Result sweep(cublasLtHandle_t handle, void* workspace, const Case& c, int max_algorithms, int repeat) {
  const Device gpu = Device::cuda(0);
  const std::int64_t a_rows = c.transpose_a ? c.k : c.m, a_cols = c.transpose_a ? c.m : c.k;
  const std::int64_t b_rows = c.transpose_b ? c.n : c.k, b_cols = c.transpose_b ? c.k : c.n;
  const DType out_dtype = c.f32_output ? DType::f32 : DType::bf16;
  const Tensor a = Tensor::randn({a_cols, c.lda}, 1, DType::bf16, gpu);
  const Tensor b = Tensor::randn({b_cols, c.ldb}, 2, DType::bf16, gpu);
  Tensor d = Tensor::zeros({c.n, c.ldc}, out_dtype, gpu);
  const Tensor residual = c.residual ? Tensor::randn({c.n, c.ldc}, 3, out_dtype, gpu) : Tensor();
  const Tensor bias = c.bias ? Tensor::randn({c.m}, 4, out_dtype, gpu) : Tensor();
  const cudaDataType_t out_type = c.f32_output ? CUDA_R_32F : CUDA_R_16BF;

  cublasLtMatmulDesc_t desc = nullptr;
  CHECK_LT(cublasLtMatmulDescCreate(&desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  const cublasOperation_t ta = c.transpose_a ? CUBLAS_OP_T : CUBLAS_OP_N, tb = c.transpose_b ? CUBLAS_OP_T : CUBLAS_OP_N;
  CHECK_LT(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta));
  CHECK_LT(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb));
  if (c.bias) {
    const cublasLtEpilogue_t epilogue = CUBLASLT_EPILOGUE_BIAS;
    const void* pointer = bias.data();
    CHECK_LT(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &epilogue, sizeof epilogue));
    CHECK_LT(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &pointer, sizeof pointer));
  }
  cublasLtMatrixLayout_t la = nullptr, lb = nullptr, lc = nullptr;
  CHECK_LT(cublasLtMatrixLayoutCreate(&la, CUDA_R_16BF, static_cast<std::uint64_t>(a_rows),
                                      static_cast<std::uint64_t>(a_cols), c.lda));
  CHECK_LT(cublasLtMatrixLayoutCreate(&lb, CUDA_R_16BF, static_cast<std::uint64_t>(b_rows),
                                      static_cast<std::uint64_t>(b_cols), c.ldb));
  CHECK_LT(cublasLtMatrixLayoutCreate(&lc, out_type, static_cast<std::uint64_t>(c.m), static_cast<std::uint64_t>(c.n),
                                      c.ldc));
  cublasLtMatmulPreference_t preference = nullptr;
  CHECK_LT(cublasLtMatmulPreferenceCreate(&preference));
  const std::uint64_t workspace_bytes = kWorkspaceBytes;
  CHECK_LT(cublasLtMatmulPreferenceSetAttribute(preference, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &workspace_bytes,
                                                sizeof workspace_bytes));
  // The operands' alignments, as linear.cu states them, so that the heuristic's list (and
  // a rank in it) is the one the library sees.
  const std::pair<cublasLtMatmulPreferenceAttributes_t, std::uint32_t> alignments[] = {
      {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, alignment_of(a.data())},
      {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, alignment_of(b.data())},
      {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, alignment_of(c.residual ? residual.data() : d.data())},
      {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, alignment_of(d.data())}};
  for (const auto& [attribute, value] : alignments) {
    CHECK_LT(cublasLtMatmulPreferenceSetAttribute(preference, attribute, &value, sizeof value));
  }
  std::vector<cublasLtMatmulHeuristicResult_t> results(static_cast<std::size_t>(max_algorithms));
  int found = 0;
  if (c.algorithms_without_bias) {
    cublasLtMatmulDesc_t plain = nullptr;
    CHECK_LT(cublasLtMatmulDescCreate(&plain, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    CHECK_LT(cublasLtMatmulDescSetAttribute(plain, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta));
    CHECK_LT(cublasLtMatmulDescSetAttribute(plain, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb));
    int listed = 0;
    std::vector<cublasLtMatmulHeuristicResult_t> all(static_cast<std::size_t>(max_algorithms));
    CHECK_LT(
        cublasLtMatmulAlgoGetHeuristic(handle, plain, la, lb, lc, lc, preference, max_algorithms, all.data(), &listed));
    cublasLtMatmulDescDestroy(plain);
    for (int i = 0; i < listed; ++i) {
      cublasLtMatmulHeuristicResult_t checked{};
      if (cublasLtMatmulAlgoCheck(handle, desc, la, lb, lc, lc, &all[static_cast<std::size_t>(i)].algo, &checked) ==
              CUBLAS_STATUS_SUCCESS &&
          checked.workspaceSize <= kWorkspaceBytes) {
        results[static_cast<std::size_t>(found++)] = all[static_cast<std::size_t>(i)];
      }
    }
  } else {
    CHECK_LT(cublasLtMatmulAlgoGetHeuristic(handle, desc, la, lb, lc, lc, preference, max_algorithms, results.data(),
                                            &found));
  }
  const float alpha = 1.0f, beta = (c.residual || c.accumulate) ? 1.0f : 0.0f;
  const void* c_data = c.residual ? residual.data() : d.data();
  Result r;
  r.best_ms = 1e30;
  for (int i = 0; i < found; ++i) {
    const cublasLtMatmulAlgo_t& algo = results[static_cast<std::size_t>(i)].algo;
    const double ms = bench::median_ms(
        repeat,
        [&] {
          CHECK_LT(cublasLtMatmul(handle, desc, &alpha, a.data(), la, b.data(), lb, &beta, c_data, lc, d.data(), lc,
                                  &algo, workspace, kWorkspaceBytes, nullptr));
        },
        2);
    ++r.tried;
    const int splitk = config_attribute(algo, CUBLASLT_ALGO_CONFIG_SPLITK_NUM);
    const int tile = config_attribute(algo, CUBLASLT_ALGO_CONFIG_TILE_ID);
    if (i == 0) {
      r.first_ms = ms;
      r.first_splitk = splitk;
      r.first_tile = tile;
    }
    if (ms < r.best_ms) {
      r.best_ms = ms;
      r.best_rank = i;
      r.best_splitk = splitk;
      r.best_tile = tile;
    }
  }
  cublasLtMatmulPreferenceDestroy(preference);
  cublasLtMatrixLayoutDestroy(la);
  cublasLtMatrixLayoutDestroy(lb);
  cublasLtMatrixLayoutDestroy(lc);
  cublasLtMatmulDescDestroy(desc);
  return r;
}

// nn.Linear (in -> out) on `rows` rows, as linear.cu sets up its three GEMMs.
std::vector<Case> linear_cases(const std::string& name, std::int64_t rows, std::int64_t in, std::int64_t out,
                               bool residual) {
  Case forward{name + " fwd", true, false, out, rows, in, in, in, out, true, residual, false, false, 12};
  Case dx{name + " dX", false, false, in, rows, out, in, out, in, false, false, false, false, 12};
  Case dw{name + " dW", false, true, in, out, rows, in, out, in, false, false, true, true, 12};
  // The same dW with the input's rows one column of ones longer (padded to 16 bytes), into
  // scratch: row `in` of the product is the bias gradient, so the one GEMM reading dY
  // would give both (what it costs against dW alone plus a column-sum pass over dY).
  Case dw_ones{name + " dW+ones", false, true, in + 8, out, rows, in + 8, out, in + 8, false, false, false, true, 12};
  // The forward without the bias epilogue (a following pass that reads y anyway, such as
  // the GELU LayerNorm, could add it): what the epilogue costs.
  Case forward_plain = forward;
  forward_plain.name = name + " fwd-bias";
  forward_plain.bias = false;
  Case forward_listed = forward;
  forward_listed.name = name + " fwd(list-bias)";
  forward_listed.algorithms_without_bias = true;
  return {forward, forward_plain, forward_listed, dx, dw, dw_ones};
}

}  // namespace

int main(int argc, char** argv) {
  std::int64_t rows = 32768;
  int repeat = 10, algorithms = 16;
  const CLI::Range kPositive(std::int64_t{1}, std::int64_t{1} << 40, "POSITIVE");
  CLI::App app{"cuBLASLt's first heuristic choice against the fastest algorithm it offers, for one issue-5 layer's GEMMs"};
  app.add_option("--rows", rows, "rows of the activations (tokens a step)")->check(kPositive);
  app.add_option("--repeat", repeat, "CUDA-event timings a median is taken of")->check(kPositive);
  app.add_option("--algorithms", algorithms, "algorithms asked of the heuristic")->check(kPositive);
  CLI11_PARSE(app, argc, argv);
  if (cuda_device_count() == 0) {
    std::fprintf(stderr, "error: no CUDA device: this harness times cuBLASLt GEMMs on a GPU\n");
    return 1;
  }
  try {
    cublasLtHandle_t handle = nullptr;
    CHECK_LT(cublasLtCreate(&handle));
    void* workspace = nullptr;
    if (cudaMalloc(&workspace, kWorkspaceBytes) != cudaSuccess) {
      std::fprintf(stderr, "cudaMalloc of the workspace failed\n");
      return 1;
    }
    std::vector<Case> cases;
    for (const auto& group : {linear_cases("qkv 768->2304", rows, 768, 2304, false),
                              linear_cases("out 768->768", rows, 768, 768, true),
                              linear_cases("fc1 768->3072", rows, 768, 3072, false),
                              linear_cases("fc2 3072->768", rows, 3072, 768, true)}) {
      cases.insert(cases.end(), group.begin(), group.end());
    }
    cudaDeviceProp properties{};
    cudaGetDeviceProperties(&properties, 0);
    // What linear.cu's table of measured ranks (kMeasuredRanks) is keyed by.
    std::printf("device \"%s\", cuBLASLt version %zu\n", properties.name, cublasLtGetVersion());
    std::printf("%-18s %10s %10s %5s %7s %7s %11s %11s\n", "GEMM", "first ms", "best ms", "rank", "splitK", "tile",
                "first/step", "best/step");
    double first_total = 0, best_total = 0;
    for (const Case& c : cases) {
      const Result r = sweep(handle, workspace, c, algorithms, repeat);
      first_total += r.first_ms * c.per_step;
      best_total += r.best_ms * c.per_step;
      std::printf("%-18s %10.4f %10.4f %5d %3d/%-3d %3d/%-3d %11.3f %11.3f  (%d tried)\n", c.name.c_str(), r.first_ms,
                  r.best_ms, r.best_rank, r.first_splitk, r.best_splitk, r.first_tile, r.best_tile,
                  r.first_ms * c.per_step, r.best_ms * c.per_step, r.tried);
      std::fflush(stdout);
    }
    std::printf("per step (12 layers): first choice %.3f ms, best %.3f ms\n", first_total, best_total);
    cudaFree(workspace);
    cublasLtDestroy(handle);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
