// check_status overloads for the CUDA runtime and cuBLAS(Lt), used through LONGNET_CHECK.
// Internal header: only CUDA-enabled translation units include it.
#pragma once

#include <cublasLt.h>
#include <cublas_api.h>
#include <cuda_runtime.h>

#include "longnet/core/error.hpp"

namespace longnet::detail {

inline void check_status(cudaError_t status, const char* call, const char* file, int line) {
  if (status != cudaSuccess) {
    (void)cudaGetLastError();  // clear a non-sticky error so later calls are not confused
    throw_status_error("CUDA", static_cast<long>(status), cudaGetErrorString(status), call, file, line);
  }
}

inline void check_status(cublasStatus_t status, const char* call, const char* file, int line) {
  if (status != CUBLAS_STATUS_SUCCESS) {
    throw_status_error("cuBLAS", static_cast<long>(status), cublasLtGetStatusString(status), call, file, line);
  }
}

}  // namespace longnet::detail
