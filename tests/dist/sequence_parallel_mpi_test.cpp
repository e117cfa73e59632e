// Sequence parallelism over real MPI processes (run by CTest under mpirun with 2, 3 and
// 4 processes): the MPI communicator's operations against values every rank can predict
// (and the NCCL communicator's, on a machine with a GPU per rank),
// error agreement (a failure on one rank is the same Error on all), and
// SequenceParallelDilatedAttention against the single-process dilated attention on seeded
// random configurations (uneven and zigzag slices, both modes, causal or not, GQA),
// fp64 to 1e-12 and fp32 to 1e-5 relative L2, distributed results gathered over MPI.
//
// Every rank runs every collective, and assertions that could return early come only
// after them, so a failing check never leaves a rank waiting (CTest's timeout is the last
// guard).
#include <gtest/gtest.h>

#include <numeric>

#include "distributed_cases.hpp"
#include "longnet/attention/dilated_attention.hpp"
#include "longnet/core/device.hpp"
#include "longnet/core/stream.hpp"
#include "longnet/dist/communicator.hpp"
#include "longnet/dist/sequence_parallel_attention.hpp"
#include "mpi_test_support.hpp"
#include "support/dilated_oracle.hpp"

namespace longnet::testing {
namespace {

// A CPU tensor moved to where the communicator works.
Tensor on(const Communicator& comm, const Tensor& t) { return t.to(comm.device()); }

// Every operation of a communicator against values each rank can predict (for any
// backend: buffers live on comm.device()).
void check_collectives(Communicator& comm) {
  const int P = comm.size(), me = comm.rank();
  const Device device = comm.device();

  const Tensor sum = on(comm, Tensor::from_vector<double>({1.0 * me, 1.0}, {2}));
  comm.all_reduce(sum, ReduceOp::sum);
  EXPECT_EQ(sum.to_vector<double>(), (std::vector<double>{P * (P - 1) / 2.0, 1.0 * P}));
  const Tensor most = on(comm, Tensor::from_vector<std::int64_t>({me, -me}, {2}));
  comm.all_reduce(most, ReduceOp::max);
  EXPECT_EQ(most.to_vector<std::int64_t>(), (std::vector<std::int64_t>{P - 1, 0}));

  const Tensor gathered = Tensor::empty({2 * static_cast<std::int64_t>(P)}, DType::f32, device);
  comm.all_gather(on(comm, Tensor::from_vector<float>({1.0f * me, 10.0f * me}, {2})), gathered);
  for (int r = 0; r < P; ++r) {
    EXPECT_EQ(gathered.to_vector<float>()[2 * r], 1.0f * r);
    EXPECT_EQ(gathered.to_vector<float>()[2 * r + 1], 10.0f * r);
  }

  // Rank r contributes r + 1 copies of r.
  std::vector<std::int64_t> counts;
  for (int r = 0; r < P; ++r) counts.push_back(r + 1);
  const Tensor gathered_v =
      Tensor::empty({std::accumulate(counts.begin(), counts.end(), std::int64_t{0})}, DType::i32, device);
  comm.all_gather_v(on(comm, Tensor::full({me + 1}, me, DType::i32)), gathered_v, counts);
  std::vector<std::int32_t> expected_v;
  for (int r = 0; r < P; ++r) expected_v.insert(expected_v.end(), static_cast<std::size_t>(r + 1), r);
  EXPECT_EQ(gathered_v.to_vector<std::int32_t>(), expected_v);

  // reduce_scatter: part r of every rank's input is r + rank; its sum lands on rank r.
  std::vector<float> parts;
  for (int r = 0; r < P; ++r) parts.insert(parts.end(), {1.0f * (r + me), 1.0f});
  const Tensor scattered = Tensor::empty({2}, DType::f32, device);
  comm.reduce_scatter(on(comm, Tensor::from_vector(parts, {2 * static_cast<std::int64_t>(P)})), scattered,
                      ReduceOp::sum);
  EXPECT_EQ(scattered.to_vector<float>(), (std::vector<float>{1.0f * (P * me + P * (P - 1) / 2), 1.0f * P}));

  const Tensor root_value = on(comm, Tensor::full({3}, me == P - 1 ? 7.0 : 0.0, DType::f64));
  comm.broadcast(root_value, P - 1);
  EXPECT_EQ(root_value.to_vector<double>(), (std::vector<double>{7, 7, 7}));

  // A ring of blocking send/recv (even ranks send first, so it cannot deadlock).
  const int next = (me + 1) % P, previous = (me + P - 1) % P;
  const Tensor token = on(comm, Tensor::full({4}, me, DType::f32));
  const Tensor incoming = Tensor::empty({4}, DType::f32, device);
  if (me % 2 == 0) {
    comm.send(token, next, 5);
    comm.recv(incoming, previous, 5);
  } else {
    comm.recv(incoming, previous, 5);
    comm.send(token, next, 5);
  }
  EXPECT_EQ(incoming.to_vector<float>(), std::vector<float>(4, static_cast<float>(previous)));

  // exchange(): everyone sends (peer + 1) values "100 * me + peer" to every peer at once.
  std::vector<Transfer> sends, receives;
  for (int peer = 0; peer < P; ++peer) {
    if (peer == me) continue;
    sends.push_back({on(comm, Tensor::full({peer + 1}, 100 * me + peer, DType::f64)), peer, 3});
    receives.push_back({Tensor::empty({me + 1}, DType::f64, device), peer, 3});
  }
  comm.exchange(sends, receives);
  for (const Transfer& t : receives) {
    EXPECT_EQ(t.buffer.to_vector<double>(), std::vector<double>(static_cast<std::size_t>(me + 1), 100.0 * t.peer + me));
  }
  comm.barrier();
}

void check_split(Communicator& comm) {
  const int me = comm.rank();
  // Even and odd ranks form two groups, ordered by descending rank; the last rank opts out.
  const int color = me == comm.size() - 1 ? -1 : me % 2;
  std::unique_ptr<Communicator> part = comm.split(color, -me);
  if (color < 0) {
    EXPECT_EQ(part, nullptr);
    return;
  }
  ASSERT_NE(part, nullptr);
  int members = 0;
  for (int r = 0; r < comm.size() - 1; ++r) members += r % 2 == color;
  EXPECT_EQ(part->size(), members);
  const Tensor ranks = on(comm, Tensor::full({1}, me, DType::i64));
  part->all_reduce(ranks, ReduceOp::max);
  int highest = 0;
  for (int r = 0; r < comm.size() - 1; ++r) {
    if (r % 2 == color) highest = r;
  }
  EXPECT_EQ(ranks.item(), static_cast<double>(highest));
  EXPECT_EQ(part->rank() == 0, me == highest);  // keys -rank: the highest rank comes first
}

TEST(MpiCommunicator, Collectives) {
  ASSERT_GE(world()->size(), 2) << "run under mpirun with at least 2 processes";
  check_collectives(*world());
}

TEST(MpiCommunicator, SplitFormsSubgroups) { check_split(*world()); }

// On a GPU machine (one GPU per rank): the same checks through NCCL, its id over MPI.
// Skipped where NCCL is not built or there are fewer GPUs than ranks (the same on every rank).
TEST(NcclCommunicator, Collectives) {
  if (!nccl_compiled()) GTEST_SKIP() << "built without NCCL";
  if (cuda_device_count() < world()->size()) GTEST_SKIP() << "fewer CUDA devices than ranks";
  std::unique_ptr<Communicator> nccl = nccl_communicator(*world(), world()->rank());
  EXPECT_EQ(nccl->name(), "nccl");
  EXPECT_EQ(nccl->size(), world()->size());
  check_collectives(*nccl);
  check_split(*nccl);
  // Error agreement runs on the host communicator.
  try {
    run_collectively(*nccl, [&] { require(nccl->rank() != 1, "bad buffer"); });
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()), "rank 1: bad buffer");
  }
}

TEST(MpiCommunicator, BadArgumentsThrowOnTheCallingRank) {
  Communicator& comm = *world();
  EXPECT_THROW(comm.send(Tensor::zeros({1}, DType::f32), comm.rank()), Error);
  EXPECT_THROW(comm.broadcast(Tensor::zeros({1}, DType::f32), comm.size()), Error);
  EXPECT_THROW(comm.all_reduce(Tensor::zeros({1}, DType::bf16), ReduceOp::sum), Error);
  EXPECT_THROW(comm.all_gather(Tensor::zeros({2}, DType::f32), Tensor::zeros({3}, DType::f32)), Error);
}

TEST(ErrorAgreement, AFailureOnOneRankIsAnErrorOnEveryRank) {
  Communicator& comm = *world();
  try {
    run_collectively(comm, [&] { require(comm.rank() != 1, "head_dim = 3: must be even"); });
    ADD_FAILURE() << "rank " << comm.rank() << " got no error";
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()), "rank 1: head_dim = 3: must be even");
  }
  // Several failing ranks are all named, in rank order.
  try {
    run_collectively(comm, [&] {
      if (comm.rank() != 0) throw Error(str("bad slice on ", comm.rank()));
    });
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("rank 1: bad slice on 1"), std::string::npos) << e.what();
    if (comm.size() > 2) {
      EXPECT_NE(std::string(e.what()).find("; rank 2: bad slice on 2"), std::string::npos);
    }
  }
  // And nothing is left over: the next collective works.
  EXPECT_NO_THROW(run_collectively(comm, [] {}));
}

// The distributed result on every rank, put together over MPI, against the single-process one.
struct Comparison {
  double worst = 0;
  std::string detail;
};

Tensor gather_global(Communicator& comm, const SequenceLayout& layout, const Tensor& local, int dim) {
  std::vector<std::int64_t> counts;
  for (int r = 0; r < comm.size(); ++r) counts.push_back(local.numel() / local.size(dim) * layout.local_length(r));
  const Tensor flat = local.contiguous();
  const Tensor all = Tensor::empty({std::accumulate(counts.begin(), counts.end(), std::int64_t{0})}, flat.dtype());
  comm.all_gather_v(flat.view({flat.numel()}), all, counts);
  std::vector<Tensor> parts;
  std::int64_t at = 0;
  for (int r = 0; r < comm.size(); ++r) {
    Shape shape = local.shape();
    shape[static_cast<std::size_t>(dim)] = layout.local_length(r);
    parts.push_back(all.slice(0, at, at + counts[static_cast<std::size_t>(r)]).view(shape));
    at += counts[static_cast<std::size_t>(r)];
  }
  return layout.unshard(parts, dim);
}

Comparison run_case(const DistributedCase& c, DType dtype, std::uint64_t seed) {
  Communicator& comm = *world();
  const SequenceLayout layout = c.layout();
  const DilatedAttentionConfig config = config_of(c.problem);
  const ProblemTensors t = random_tensors(c.problem, seed, dtype);  // the same on every rank
  SequenceParallelDilatedAttention attention(config, world(), c.order);
  const int me = comm.rank();
  const AttentionOutput out = attention.forward(layout.shard(t.q, me), layout.shard(t.k, me), layout.shard(t.v, me));
  const AttentionGradients grads = attention.backward(layout.shard(t.dout, me));

  const AttentionOutput f = dilated_attention_forward(config, t.q, t.k, t.v);
  const AttentionGradients g = dilated_attention_backward(config, t.q, t.k, t.v, f, t.dout);
  const double errors[] = {relative_l2_error(gather_global(comm, layout, out.out, 1), f.out),
                           relative_l2_error(gather_global(comm, layout, out.lse, 2), f.lse),
                           relative_l2_error(gather_global(comm, layout, grads.dq, 1), g.dq),
                           relative_l2_error(gather_global(comm, layout, grads.dk, 1), g.dk),
                           relative_l2_error(gather_global(comm, layout, grads.dv, 1), g.dv)};
  Comparison result;
  result.detail = str("out ", errors[0], " lse ", errors[1], " dq ", errors[2], " dk ", errors[3], " dv ", errors[4]);
  for (double e : errors) result.worst = std::max(result.worst, e);
  return result;
}

TEST(SequenceParallelMpi, Float64EqualsSingleProcess) {
  const int P = world()->size();
  for (std::uint64_t seed = 1; seed <= 60; ++seed) {
    const DistributedCase c = random_distributed_case(seed * 31 + static_cast<std::uint64_t>(P), P);
    SCOPED_TRACE(describe(c));
    const Comparison r = run_case(c, DType::f64, seed);
    EXPECT_LE(r.worst, 1e-12) << r.detail;
  }
}

TEST(SequenceParallelMpi, Float32EqualsSingleProcess) {
  const int P = world()->size();
  for (std::uint64_t seed = 1; seed <= 40; ++seed) {
    const DistributedCase c = random_distributed_case(seed * 37 + 1000 + static_cast<std::uint64_t>(P), P);
    SCOPED_TRACE(describe(c));
    const Comparison r = run_case(c, DType::f32, seed);
    EXPECT_LE(r.worst, 1e-5) << r.detail;
  }
}

TEST(SequenceParallelMpi, SegmentsSpanningEveryRankCount) {
  // One segment over the whole sequence (spans all P ranks) next to short ones (inside
  // slices), causal and not, GQA, both modes.
  const int P = world()->size();
  for (int variant = 0; variant < 4; ++variant) {
    DistributedCase c;
    DilatedProblem& p = c.problem;
    p.batch = 2;
    p.seq_len = 97 + 13 * P;
    p.heads = 6;
    p.kv_heads = 2;
    p.head_dim = 8;
    p.patterns = {{7, 1}, {p.seq_len, 3}, {40, 4}};
    p.mode = variant % 2 ? DilatedMode::head_groups : DilatedMode::longnet;
    p.causal = variant >= 2;
    p.scale = 0.3;
    c.lengths = SequenceLayout::contiguous(p.seq_len, P).local_lengths();
    c.lengths.front() += 5;  // uneven
    c.lengths.back() -= 5;
    SCOPED_TRACE(describe(c));
    const Comparison r = run_case(c, DType::f64, 11 + static_cast<std::uint64_t>(variant));
    EXPECT_LE(r.worst, 1e-12) << r.detail;
  }
}

// On a GPU machine (one GPU per rank): bf16/f16 through NCCL, the exchange overlapping the
// kernels on a side stream, against the fp64 single-process result; the bound is the
// CUDA tests' (twice the single-GPU engine's error on the same inputs plus one rounding).
TEST(SequenceParallelNccl, HalfPrecisionMatchesTheSingleProcessResult) {
  if (!nccl_compiled()) GTEST_SKIP() << "built without NCCL";
  if (cuda_device_count() < world()->size()) GTEST_SKIP() << "fewer CUDA devices than ranks";
  Communicator& host = *world();
  const int P = host.size(), me = host.rank();
  const Device gpu = Device::cuda(me);
  const DeviceGuard guard(gpu);
  std::shared_ptr<Communicator> nccl = nccl_communicator(host, me);
  for (std::uint64_t seed = 1; seed <= 16; ++seed) {
    const DistributedCase c = cuda_distributed_case(seed * 41 + static_cast<std::uint64_t>(P), P);
    const DType dtype = seed % 3 == 0 ? DType::f16 : DType::bf16;
    SCOPED_TRACE(describe(c) + " dtype=" + std::string(dtype_name(dtype)));
    const SequenceLayout layout = c.layout();
    const DilatedAttentionConfig config = config_of(c.problem);
    const ProblemTensors t = random_tensors(c.problem, seed, dtype);  // the same on every rank
    SequenceParallelDilatedAttention attention(config, nccl, c.order);
    const AttentionOutput out = attention.forward(layout.shard(t.q, me).to(gpu), layout.shard(t.k, me).to(gpu),
                                                  layout.shard(t.v, me).to(gpu));
    const AttentionGradients grads = attention.backward(layout.shard(t.dout, me).to(gpu));
    auto global = [&](const Tensor& local, int dim) { return gather_global(host, layout, local.to(Device::cpu()), dim); };
    const Tensor got[] = {global(out.out, 1), global(out.lse, 2), global(grads.dq, 1), global(grads.dk, 1),
                          global(grads.dv, 1)};

    auto as = [&](const Tensor& x, Device d, DType type) { return x.to(d, type); };
    const AttentionOutput f = dilated_attention_forward(config, as(t.q, Device::cpu(), DType::f64),
                                                        as(t.k, Device::cpu(), DType::f64),
                                                        as(t.v, Device::cpu(), DType::f64));
    const AttentionGradients g = dilated_attention_backward(
        config, as(t.q, Device::cpu(), DType::f64), as(t.k, Device::cpu(), DType::f64),
        as(t.v, Device::cpu(), DType::f64), f, as(t.dout, Device::cpu(), DType::f64));
    const AttentionOutput ef = dilated_attention_forward(config, t.q.to(gpu), t.k.to(gpu), t.v.to(gpu));
    const AttentionGradients eg =
        dilated_attention_backward(config, t.q.to(gpu), t.k.to(gpu), t.v.to(gpu), ef, t.dout.to(gpu));
    const Tensor exact[] = {f.out, f.lse, g.dq, g.dk, g.dv};
    const Tensor engine[] = {ef.out.to(Device::cpu()), ef.lse.to(Device::cpu()), eg.dq.to(Device::cpu()),
                             eg.dk.to(Device::cpu()), eg.dv.to(Device::cpu())};
    const char* names[] = {"out", "lse", "dq", "dk", "dv"};
    for (int i = 0; i < 5; ++i) {
      if (i == 1) {
        EXPECT_LE(relative_l2_error(got[i], exact[i]), 1e-5) << "lse";
        continue;
      }
      const double error = max_abs_error(got[i], exact[i]), engine_error = max_abs_error(engine[i], exact[i]);
      EXPECT_LE(error, 2 * engine_error + rounding_tolerance(exact[i], dtype))
          << names[i] << " max |error| " << error << " (single GPU " << engine_error << ")";
    }
  }
}

TEST(SequenceParallelMpi, ABadArgumentOnOneRankIsAnErrorOnEveryRank) {
  Communicator& comm = *world();
  const int me = comm.rank();
  DilatedAttentionConfig config;
  config.segment_lengths = {16, 64};
  config.dilation_rates = {1, 4};
  SequenceParallelDilatedAttention attention(config, world());
  const Tensor q = Tensor::randn({1, 20, 4, 8}, 1 + static_cast<std::uint64_t>(me));
  const Tensor kv = Tensor::randn({1, 20, 2, 8}, 2);
  // Rank 1's k and v have the wrong head_dim.
  const Tensor k = me == 1 ? Tensor::randn({1, 20, 2, 6}, 3) : kv;
  try {
    attention.forward(q, k, k);
    ADD_FAILURE() << "rank " << me << " got no error";
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()).rfind("rank 1: ", 0), 0u) << e.what();
    EXPECT_NE(std::string(e.what()).find("head_dim"), std::string::npos) << e.what();
  }
  // Ranks that disagree on the heads: every rank names rank 1.
  const Tensor q_heads = me == 1 ? Tensor::randn({1, 20, 2, 8}, 4) : q;
  try {
    attention.forward(q_heads, kv, kv);
    ADD_FAILURE() << "rank " << me << " got no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("rank 1 has heads = 2 but rank 0 has 4"), std::string::npos) << e.what();
  }
  // A good forward, then a bad dout on rank 1 only: every rank fails the backward.
  EXPECT_NO_THROW(attention.forward(q, kv, kv));
  const Tensor dout = me == 1 ? Tensor::randn({1, 19, 4, 8}, 5) : Tensor::randn({1, 20, 4, 8}, 5);
  try {
    attention.backward(dout);
    ADD_FAILURE() << "rank " << me << " got no error";
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()).rfind("rank 1: ", 0), 0u) << e.what();
  }
  // Nothing is left half-done: a full step works afterwards.
  EXPECT_NO_THROW(attention.backward(Tensor::randn({1, 20, 4, 8}, 5)));
}

}  // namespace
}  // namespace longnet::testing
