// nn.Linear on CUDA (linear.hpp) through cuBLASLt. Row-major X (M x I), W (O x I) and
// Y (M x O) are column-major X^T, W^T and Y^T, so
//   Y^T  = W X^T        : C (O x M) = op_T(A = W^T as stored) * B (X^T as stored)
//   dX^T = W^T dY^T     : C (I x M) = A (W^T as stored) * B (dY^T as stored)
//   dW^T += X^T dY      : C (I x O) = A (X^T as stored) * op_T(B = dY^T as stored), beta 1
// fp32 GEMMs compute in fp32 (CUBLAS_COMPUTE_32F, no TF32) so they match the CPU; the bias
// is broadcast before the GEMM (beta 1), and db is a deterministic two-pass column sum.
#include <cublasLt.h>

#include <map>
#include <mutex>

#include "kernels/cuda/model_kernels_common.cuh"
#include "longnet/kernels/linear.hpp"

namespace longnet::kernels {
namespace {

using namespace cuda_model;

constexpr std::size_t kWorkspaceBytes = 32u << 20;

struct LtContext {
  cublasLtHandle_t handle = nullptr;
  void* workspace = nullptr;
};

// One handle and workspace per device, made on first use and kept for the program's life.
LtContext& lt_context() {
  static std::mutex mutex;
  static std::map<int, LtContext> contexts;
  const int device = current_device();
  const std::lock_guard<std::mutex> lock(mutex);
  LtContext& c = contexts[device];
  if (!c.handle) {
    LONGNET_CHECK(cublasLtCreate(&c.handle));
    LONGNET_CHECK(cudaMalloc(&c.workspace, kWorkspaceBytes));
  }
  return c;
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

template <class T>
void gemm(bool transpose_a, bool transpose_b, std::int64_t m, std::int64_t n, std::int64_t k, const T* a,
          std::int64_t lda, const T* b, std::int64_t ldb, T beta, T* c, std::int64_t ldc) {
  constexpr bool is_float = std::is_same_v<T, float>;
  const cudaDataType_t type = is_float ? CUDA_R_32F : CUDA_R_64F;
  const cublasComputeType_t compute = is_float ? CUBLAS_COMPUTE_32F : CUBLAS_COMPUTE_64F;
  LtContext& context = lt_context();
  MatmulDesc op;
  LONGNET_CHECK(cublasLtMatmulDescCreate(&op.desc, compute, type));
  const cublasOperation_t ta = transpose_a ? CUBLAS_OP_T : CUBLAS_OP_N, tb = transpose_b ? CUBLAS_OP_T : CUBLAS_OP_N;
  LONGNET_CHECK(cublasLtMatmulDescSetAttribute(op.desc, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta));
  LONGNET_CHECK(cublasLtMatmulDescSetAttribute(op.desc, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb));
  Layout la, lb, lc;
  LONGNET_CHECK(cublasLtMatrixLayoutCreate(&la.layout, type, static_cast<std::uint64_t>(transpose_a ? k : m),
                                           static_cast<std::uint64_t>(transpose_a ? m : k), lda));
  LONGNET_CHECK(cublasLtMatrixLayoutCreate(&lb.layout, type, static_cast<std::uint64_t>(transpose_b ? n : k),
                                           static_cast<std::uint64_t>(transpose_b ? k : n), ldb));
  LONGNET_CHECK(
      cublasLtMatrixLayoutCreate(&lc.layout, type, static_cast<std::uint64_t>(m), static_cast<std::uint64_t>(n), ldc));
  const T alpha = 1;
  LONGNET_CHECK(cublasLtMatmul(context.handle, op.desc, &alpha, a, la.layout, b, lb.layout, &beta, c, lc.layout, c,
                               lc.layout, nullptr, context.workspace, kWorkspaceBytes, current_cuda_stream()));
}

template <class T>
__global__ void broadcast_bias_kernel(T* y, std::int64_t rows, std::int64_t columns, std::int64_t row_stride,
                                      const T* bias) {
  LONGNET_GRID_STRIDE(i, rows * columns) y[(i / columns) * row_stride + i % columns] = bias[i % columns];
}

template <class T>
__global__ void fill_rows_kernel(T* y, std::int64_t rows, std::int64_t columns, std::int64_t row_stride) {
  LONGNET_GRID_STRIDE(i, rows * columns) y[(i / columns) * row_stride + i % columns] = T(0);
}

template <class T>
struct RowValue {
  const T* dy;
  std::int64_t row_stride;
  __device__ T operator()(std::int64_t r, std::int64_t c) const { return dy[r * row_stride + c]; }
};

template <class T>
void forward(const LinearParams& p) {
  if (p.rows == 0 || p.out_features == 0) return;
  T* y = static_cast<T*>(p.y);
  const cudaStream_t stream = current_cuda_stream();
  const std::int64_t count = p.rows * p.out_features;
  if (p.bias) {
    broadcast_bias_kernel<T><<<grid_for(count), kThreads, 0, stream>>>(y, p.rows, p.out_features, p.y_row_stride,
                                                                       static_cast<const T*>(p.bias));
  } else if (p.in_features == 0) {
    fill_rows_kernel<T><<<grid_for(count), kThreads, 0, stream>>>(y, p.rows, p.out_features, p.y_row_stride);
  }
  check_launch();
  if (p.in_features == 0) return;
  gemm<T>(true, false, p.out_features, p.rows, p.in_features, static_cast<const T*>(p.weight), p.in_features,
          static_cast<const T*>(p.x), p.x_row_stride, p.bias ? T(1) : T(0), y, p.y_row_stride);
}

template <class T>
void backward(const LinearParams& p) {
  if (p.rows == 0) return;
  const T* dy = static_cast<const T*>(p.dy);
  if (p.dx && p.in_features > 0) {
    if (p.out_features == 0) {
      fill_rows_kernel<T><<<grid_for(p.rows * p.in_features), kThreads, 0, current_cuda_stream()>>>(
          static_cast<T*>(p.dx), p.rows, p.in_features, p.dx_row_stride);
      check_launch();
    } else {
      gemm<T>(false, false, p.in_features, p.rows, p.out_features, static_cast<const T*>(p.weight), p.in_features, dy,
              p.dy_row_stride, T(0), static_cast<T*>(p.dx), p.dx_row_stride);
    }
  }
  if (p.dweight && p.in_features > 0 && p.out_features > 0) {
    gemm<T>(false, true, p.in_features, p.out_features, p.rows, static_cast<const T*>(p.x), p.x_row_stride, dy,
            p.dy_row_stride, T(1), static_cast<T*>(p.dweight), p.in_features);
  }
  if (p.dbias && p.out_features > 0) {
    accumulate_column_sums(p.rows, p.out_features, RowValue<T>{dy, p.dy_row_stride}, static_cast<T*>(p.dbias),
                           current_cuda_stream());
  }
}

}  // namespace

void linear_forward_cuda(const LinearParams& p) {
  dispatch_float(p.dtype, "linear_forward", [&](auto tag) { forward<decltype(tag)>(p); });
}

void linear_backward_cuda(const LinearParams& p) {
  dispatch_float(p.dtype, "linear_backward", [&](auto tag) { backward<decltype(tag)>(p); });
}

}  // namespace longnet::kernels
