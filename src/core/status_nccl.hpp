// check_status for NCCL calls, used through LONGNET_CHECK.
#pragma once

#include <nccl.h>

#include "longnet/core/error.hpp"

namespace longnet::detail {

inline void check_status(ncclResult_t status, const char* call, const char* file, int line) {
  if (status != ncclSuccess) {
    throw_status_error("NCCL", static_cast<long>(status), ncclGetErrorString(status), call, file, line);
  }
}

}  // namespace longnet::detail
