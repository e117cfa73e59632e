// Builds the message of a failed third-party call (CUDA, cuBLAS, NCCL, MPI).
#include "longnet/core/error.hpp"

namespace longnet::detail {

void throw_status_error(const char* library, long code, const std::string& what, const char* call, const char* file,
                        int line) {
  throw Error(str(library, " error ", code, " (", what, ") in ", call, " at ", file, ":", line));
}

}  // namespace longnet::detail
