// Whether an MPI launcher started this process, from its environment (so that MPI is
// initialised only then: a lone process needs none).
#pragma once

#include <string_view>

#include "longnet/core/device.hpp"

namespace longnet::cli {

// The number of processes an MPI launcher (mpirun/mpiexec of Open MPI, MPICH, MVAPICH;
// PMIx) started: 0 when not launched by one, -1 when launched but the count is not in the
// environment.
int launched_processes();

// The device of process `rank` of `processes` for `--device text` parsed as `requested`:
// with several processes a plain "cuda" means one GPU per process, the GPU of the
// process's local rank on its node (Open MPI's OMPI_COMM_WORLD_LOCAL_RANK, else `rank`);
// anything else, or one process, is taken as given.
Device process_device(Device requested, std::string_view text, int rank, int processes);

}  // namespace longnet::cli
