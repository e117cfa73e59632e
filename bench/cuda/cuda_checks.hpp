// The CUDA harnesses' checks of cuBLASLt and CUDA runtime calls: a failed call prints its
// text and status and ends the program (a harness has nothing to recover).
#pragma once

#include <cublasLt.h>
#include <cuda_runtime.h>

#include <cstdio>
#include <cstdlib>

#define CHECK_LT(call)                                                                  \
  do {                                                                                  \
    const cublasStatus_t status_ = (call);                                              \
    if (status_ != CUBLAS_STATUS_SUCCESS) {                                             \
      std::fprintf(stderr, "%s failed: status %d\n", #call, static_cast<int>(status_)); \
      std::exit(1);                                                                     \
    }                                                                                   \
  } while (0)

#define CHECK_CUDA(call)                                                           \
  do {                                                                             \
    const cudaError_t status_ = (call);                                            \
    if (status_ != cudaSuccess) {                                                  \
      std::fprintf(stderr, "%s failed: %s\n", #call, cudaGetErrorString(status_)); \
      std::exit(1);                                                                \
    }                                                                              \
  } while (0)
