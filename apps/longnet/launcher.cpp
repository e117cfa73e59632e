#include "launcher.hpp"

#include <cstdlib>
#include <initializer_list>

namespace longnet::cli {

int launched_processes() {
  for (const char* name : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "MV2_COMM_WORLD_SIZE"}) {
    if (const char* value = std::getenv(name)) return std::atoi(value);
  }
  return std::getenv("PMIX_RANK") != nullptr ? -1 : 0;
}

Device process_device(Device requested, std::string_view text, int rank, int processes) {
  if (!requested.is_cuda() || processes <= 1 || text != "cuda") return requested;
  const char* local = std::getenv("OMPI_COMM_WORLD_LOCAL_RANK");
  const int local_rank = local != nullptr ? std::atoi(local) : rank;
  const int gpus = cuda_device_count();
  return Device::cuda(gpus > 0 ? local_rank % gpus : 0);
}

}  // namespace longnet::cli
