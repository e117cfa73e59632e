// main() of the MPI test programs: MPI up around the GoogleTest run, and one verdict for
// all ranks.
#include <gtest/gtest.h>

#include "mpi_test_support.hpp"

namespace longnet::testing {

std::shared_ptr<Communicator> world() {
  static std::shared_ptr<Communicator> comm = mpi_world();
  return comm;
}

}  // namespace longnet::testing

int main(int argc, char** argv) {
  longnet::MpiSession mpi(argc, argv);
  ::testing::InitGoogleTest(&argc, argv);
  const int failed = RUN_ALL_TESTS();
  // Every rank must leave with the same verdict (mpirun reports any non-zero exit anyway).
  const longnet::Tensor any = longnet::Tensor::full({1}, failed, longnet::DType::i32);
  longnet::testing::world()->all_reduce(any, longnet::ReduceOp::max);
  return any.item() != 0.0 ? 1 : 0;
}
