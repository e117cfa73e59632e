// What one cuBLASLt call of a training layer's forward and dX GEMMs puts on the stream, and
// what that costs between kernels. A CUPTI timeline of `longnet bench train` (benchmarks.md,
// nineteenth session) showed each of these GEMMs preceded by a four-byte memset, and the
// gaps beside the memsets (~4 us each) larger than those between kernels (~2 us). For each
// GEMM (issue 5's shapes, as linear.cu sets them up) and each algorithm the heuristic lists
// under a workspace limit (--workspace, several allowed: 0 asks for algorithms that need
// none), this prints
//   - the nodes of a graph captured from one call: memsets and kernels, with the kernels'
//     names (the driver's cuFuncGetName);
//   - the GEMM's median time alone;
//   - the time per pair of a chain of --chain pairs (a 50 MB streaming kernel, the GEMM)
//     queued back to back, as the training step queues them (the gaps and memsets between
//     kernels included; the pair's kernels also overlap a little at their ends, so this is
//     not the sum of the two timed alone);
//   - the same chain captured into one CUDA graph and launched.
// Usage: cuda_gemm_launch_probe [--rows N] [--repeat R] [--algorithms K] [--workspace B,...] [--chain P]
#include <cublasLt.h>
#include <cuda.h>
#include <cudaTypedefs.h>
#include <cuda_runtime.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "bench/cuda/cuda_checks.hpp"
#include "bench/cuda/cuda_timing.hpp"
#include "bench/cuda/gemm_launch_probe_kernels.hpp"
#include "longnet/longnet.hpp"

namespace {

using namespace longnet;

struct Case {
  std::string name;
  bool transpose_a = false;
  std::int64_t m = 0, n = 0, k = 0;
  bool bias = false, residual = false;
};

// The driver's functions for a kernel node's name, through the runtime (no link to libcuda,
// so that --help runs where there is no driver).
struct DriverNames {
  PFN_cuGraphKernelNodeGetParams_v12000 node_params = nullptr;
  PFN_cuFuncGetName_v12030 function_name = nullptr;
  DriverNames() {
    void* f = nullptr;
    if (cudaGetDriverEntryPointByVersion("cuGraphKernelNodeGetParams", &f, 12000, cudaEnableDefault, nullptr) ==
        cudaSuccess) {
      node_params = reinterpret_cast<PFN_cuGraphKernelNodeGetParams_v12000>(f);
    }
    if (cudaGetDriverEntryPointByVersion("cuFuncGetName", &f, 12030, cudaEnableDefault, nullptr) == cudaSuccess) {
      function_name = reinterpret_cast<PFN_cuFuncGetName_v12030>(f);
    }
  }
  std::string name_of(cudaGraphNode_t node) const {
    CUDA_KERNEL_NODE_PARAMS_v2 params{};
    const char* name = nullptr;
    if (node_params && function_name && node_params(node, &params) == CUDA_SUCCESS && params.func &&
        function_name(&name, params.func) == CUDA_SUCCESS && name) {
      return name;
    }
    return "?";
  }
};

// Node counts and kernel names of a graph captured from `body`.
template <class Body>
std::string graph_summary(cudaStream_t stream, const Body& body) {
  cudaGraph_t graph = nullptr;
  CHECK_CUDA(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
  body();
  CHECK_CUDA(cudaStreamEndCapture(stream, &graph));
  std::size_t count = 0;
  CHECK_CUDA(cudaGraphGetNodes(graph, nullptr, &count));
  std::vector<cudaGraphNode_t> nodes(count);
  CHECK_CUDA(cudaGraphGetNodes(graph, nodes.data(), &count));
  int memsets = 0, kernels = 0, others = 0;
  std::string names;
  for (cudaGraphNode_t node : nodes) {
    cudaGraphNodeType type{};
    CHECK_CUDA(cudaGraphNodeGetType(node, &type));
    if (type == cudaGraphNodeTypeMemset) {
      ++memsets;
    } else if (type == cudaGraphNodeTypeKernel) {
      ++kernels;
      static const DriverNames driver;
      names += " " + driver.name_of(node);
    } else {
      ++others;
    }
  }
  CHECK_CUDA(cudaGraphDestroy(graph));
  return std::to_string(memsets) + " memset(s), " + std::to_string(kernels) + " kernel(s), " + std::to_string(others) +
         " other:" + names;
}

void probe(cublasLtHandle_t handle, void* workspace, std::uint64_t workspace_bytes, const Case& c, std::int64_t rows,
           int max_algorithms, int repeat, int chain) {
  const std::int64_t a_rows = c.transpose_a ? c.k : c.m, a_cols = c.transpose_a ? c.m : c.k;
  const Device gpu = Device::cuda(0);
  const Tensor a = Tensor::randn({a_cols, a_rows}, 1, DType::bf16, gpu),
               b = Tensor::randn({c.n, c.k}, 2, DType::bf16, gpu);
  Tensor d = Tensor::zeros({c.n, c.m}, DType::bf16, gpu);
  const Tensor residual = c.residual ? Tensor::randn({c.n, c.m}, 3, DType::bf16, gpu) : Tensor();
  const Tensor bias = Tensor::randn({c.m}, 4, DType::bf16, gpu);
  const std::int64_t stream_floats = rows * 768 / 2;  // 50 MB read and written at 32768 rows
  const Tensor stream_in = Tensor::zeros({stream_floats}, DType::f32, gpu);
  Tensor stream_out = Tensor::zeros({stream_floats}, DType::f32, gpu);

  cublasLtMatmulDesc_t desc = nullptr;
  CHECK_LT(cublasLtMatmulDescCreate(&desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  const cublasOperation_t ta = c.transpose_a ? CUBLAS_OP_T : CUBLAS_OP_N, tb = CUBLAS_OP_N;
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
                                      static_cast<std::uint64_t>(a_cols), a_rows));
  CHECK_LT(cublasLtMatrixLayoutCreate(&lb, CUDA_R_16BF, static_cast<std::uint64_t>(c.k),
                                      static_cast<std::uint64_t>(c.n), c.k));
  CHECK_LT(cublasLtMatrixLayoutCreate(&lc, CUDA_R_16BF, static_cast<std::uint64_t>(c.m),
                                      static_cast<std::uint64_t>(c.n), c.m));
  cublasLtMatmulPreference_t preference = nullptr;
  CHECK_LT(cublasLtMatmulPreferenceCreate(&preference));
  CHECK_LT(cublasLtMatmulPreferenceSetAttribute(preference, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &workspace_bytes,
                                                sizeof workspace_bytes));
  std::vector<cublasLtMatmulHeuristicResult_t> results(static_cast<std::size_t>(max_algorithms));
  int found = 0;
  if (cublasLtMatmulAlgoGetHeuristic(handle, desc, la, lb, lc, lc, preference, max_algorithms, results.data(),
                                     &found) != CUBLAS_STATUS_SUCCESS) {
    found = 0;
  }
  std::printf("%s, workspace %llu bytes: %d algorithm(s) listed\n", c.name.c_str(),
              static_cast<unsigned long long>(workspace_bytes), found);

  // A stream of its own (the graph captures need one), blocking: ordered after the legacy
  // stream's fills of the operands above.
  cudaStream_t stream = nullptr;
  CHECK_CUDA(cudaStreamCreate(&stream));
  const float alpha = 1.0f, beta = c.residual ? 1.0f : 0.0f;
  const void* c_data = c.residual ? residual.data() : d.data();
  const int stream_blocks = 132 * 8;
  const auto streaming = [&] {
    launch_streaming(stream_in.data(), stream_out.data(), stream_floats / 4, stream_blocks, stream);
  };
  // Medians on the probe's stream, after one untimed call.
  const auto median_on_stream = [&](const auto& body) { return bench::median_ms(repeat, body, 1, stream); };
  std::printf("  the streaming kernel alone: %.4f ms\n", median_on_stream(streaming));
  for (int i = 0; i < found; ++i) {
    const cublasLtMatmulAlgo_t& algo = results[static_cast<std::size_t>(i)].algo;
    const auto gemm = [&] {
      CHECK_LT(cublasLtMatmul(handle, desc, &alpha, a.data(), la, b.data(), lb, &beta, c_data, lc, d.data(), lc, &algo,
                              workspace, workspace_bytes, stream));
    };
    const std::string nodes = graph_summary(stream, gemm);
    const double gemm_ms = median_on_stream(gemm);
    const auto pairs = [&] {
      for (int p = 0; p < chain; ++p) {
        streaming();
        gemm();
      }
    };
    const double chain_ms = median_on_stream(pairs);
    cudaGraph_t graph = nullptr;
    cudaGraphExec_t exec = nullptr;
    CHECK_CUDA(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
    pairs();
    CHECK_CUDA(cudaStreamEndCapture(stream, &graph));
    CHECK_CUDA(cudaGraphInstantiate(&exec, graph, 0));
    const double graph_ms = median_on_stream([&] { CHECK_CUDA(cudaGraphLaunch(exec, stream)); });
    cudaGraphExecDestroy(exec);
    cudaGraphDestroy(graph);
    std::printf("  rank %2d: %.4f ms alone; a pair in a chain of %d: %.4f ms queued, %.4f ms in a graph; %s\n", i,
                gemm_ms, chain, chain_ms / chain, graph_ms / chain, nodes.c_str());
    std::fflush(stdout);
  }
  CHECK_CUDA(cudaStreamDestroy(stream));
  cublasLtMatmulPreferenceDestroy(preference);
  cublasLtMatrixLayoutDestroy(la);
  cublasLtMatrixLayoutDestroy(lb);
  cublasLtMatrixLayoutDestroy(lc);
  cublasLtMatmulDescDestroy(desc);
}

}  // namespace

int main(int argc, char** argv) {
  std::int64_t rows = 32768;
  int repeat = 10, algorithms = 8, chain = 20;
  std::vector<std::uint64_t> workspaces{32u << 20, 0};
  const CLI::Range kPositive(std::int64_t{1}, std::int64_t{1} << 40, "POSITIVE");
  CLI::App app{
      "What a cuBLASLt call of a training layer's forward and dX GEMMs puts on the stream, and its cost "
      "between kernels"};
  app.add_option("--rows", rows, "rows of the activations (tokens a step)")->check(kPositive);
  app.add_option("--repeat", repeat, "CUDA-event timings a median is taken of")->check(kPositive);
  app.add_option("--algorithms", algorithms, "algorithms asked of the heuristic")->check(kPositive);
  app.add_option("--workspace", workspaces, "workspace limits in bytes (0: algorithms that need none)")
      ->delimiter(',')
      ->check(CLI::Range(std::uint64_t{0}, std::uint64_t{1} << 32, "BYTES"));
  app.add_option("--chain", chain, "(streaming kernel, GEMM) pairs queued back to back")->check(kPositive);
  CLI11_PARSE(app, argc, argv);
  if (cuda_device_count() == 0) {
    std::fprintf(stderr, "error: no CUDA device: this harness times cuBLASLt GEMMs on a GPU\n");
    return 1;
  }
  try {
    cublasLtHandle_t handle = nullptr;
    CHECK_LT(cublasLtCreate(&handle));
    std::uint64_t largest = 1;
    for (const std::uint64_t w : workspaces) largest = std::max(largest, w);
    void* workspace = nullptr;
    CHECK_CUDA(cudaMalloc(&workspace, largest));
    cudaDeviceProp properties{};
    CHECK_CUDA(cudaGetDeviceProperties(&properties, 0));
    std::printf("device \"%s\", cuBLASLt version %zu\n", properties.name, cublasLtGetVersion());
    // Forward: D (out x rows) = W^T(as stored)^T X^T + bias [+ residual]; dX: D (in x rows) = W dY^T.
    const std::vector<Case> cases = {{"qkv 768->2304 fwd", true, 2304, rows, 768, true, false},
                                     {"out 768->768 fwd", true, 768, rows, 768, true, true},
                                     {"fc1 768->3072 fwd", true, 3072, rows, 768, true, false},
                                     {"fc2 3072->768 fwd", true, 768, rows, 3072, true, true},
                                     {"qkv dX", false, 768, rows, 2304, false, false},
                                     {"out dX", false, 768, rows, 768, false, false},
                                     {"fc1 dX", false, 768, rows, 3072, false, false},
                                     {"fc2 dX", false, 3072, rows, 768, false, false}};
    for (const Case& c : cases) {
      for (const std::uint64_t w : workspaces) probe(handle, workspace, w, c, rows, algorithms, repeat, chain);
    }
    cudaFree(workspace);
    cublasLtDestroy(handle);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
