// check_status for MPI calls: MPI returns plain ints, so calls are wrapped in MpiCall to
// pick this overload: LONGNET_CHECK(longnet::detail::MpiCall{MPI_Barrier(comm)}).
#pragma once

#include <mpi.h>

#include "longnet/core/error.hpp"

namespace longnet::detail {

struct MpiCall {
  int code;
};

inline void check_status(MpiCall result, const char* call, const char* file, int line) {
  if (result.code != MPI_SUCCESS) {
    char message[MPI_MAX_ERROR_STRING] = {};
    int length = 0;
    MPI_Error_string(result.code, message, &length);
    throw_status_error("MPI", result.code, std::string(message, static_cast<std::size_t>(length)), call, file, line);
  }
}

}  // namespace longnet::detail
