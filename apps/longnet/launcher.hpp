// Whether an MPI launcher started this process, from its environment (so that MPI is
// initialised only then: a lone process needs none).
#pragma once

namespace longnet::cli {

// The number of processes an MPI launcher (mpirun/mpiexec of Open MPI, MPICH, MVAPICH;
// PMIx) started: 0 when not launched by one, -1 when launched but the count is not in the
// environment.
int launched_processes();

}  // namespace longnet::cli
