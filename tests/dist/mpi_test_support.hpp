// What the MPI test programs share: the world communicator (MPI is initialised by their
// main, mpi_test_main.cpp, before any test runs).
#pragma once

#include <memory>

#include "longnet/dist/communicator.hpp"

namespace longnet::testing {

std::shared_ptr<Communicator> world();

}  // namespace longnet::testing
