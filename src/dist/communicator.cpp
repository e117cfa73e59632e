// The backend-independent parts of Communicator: error agreement, the single-process
// self communicator, and the entry points of builds without MPI or NCCL.
#include "longnet/dist/communicator.hpp"

#include <algorithm>
#include <cstring>

#include "dist/communicator_checks.hpp"

namespace longnet {

void agree_on_errors(Communicator& comm, bool failed, const std::string& message, bool already_agreed) {
  Communicator& host = comm.host();
  const Tensor any_failed = Tensor::full({1}, failed ? 1.0 : 0.0, DType::i32);
  host.all_reduce(any_failed, ReduceOp::max);
  if (any_failed.item() == 0.0) return;

  // Someone failed: gather (outcome, message length) of every rank, then the messages.
  // Outcome 0: succeeded, 1: failed, 2: failed with a message all ranks already agreed on.
  const int P = host.size();
  const std::string mine = failed ? message : std::string();
  const std::int64_t outcome = failed ? (already_agreed ? 2 : 1) : 0;
  const Tensor status = Tensor::from_vector<std::int64_t>({outcome, static_cast<std::int64_t>(mine.size())}, {2});
  const Tensor statuses = Tensor::empty({2 * static_cast<std::int64_t>(P)}, DType::i64);
  host.all_gather(status, statuses);
  const auto all = statuses.to_vector<std::int64_t>();
  std::vector<std::int64_t> lengths;
  std::int64_t total = 0;
  for (int r = 0; r < P; ++r) {
    lengths.push_back(all[2 * static_cast<std::size_t>(r) + 1]);
    total += lengths.back();
  }
  const Tensor text = Tensor::empty({static_cast<std::int64_t>(mine.size())}, DType::u8);
  if (!mine.empty()) std::memcpy(text.data(), mine.data(), mine.size());
  const Tensor texts = Tensor::empty({total}, DType::u8);
  host.all_gather_v(text, texts, lengths);

  // Distinct messages in order of first appearance, each with the ranks that reported it.
  struct Report {
    std::string text;
    bool agreed = false;
    std::vector<int> ranks;
  };
  std::vector<Report> reports;
  const auto* chars = static_cast<const char*>(texts.data());
  std::int64_t at = 0;
  for (int r = 0; r < P; ++r) {
    const std::int64_t length = lengths[static_cast<std::size_t>(r)];
    const std::int64_t outcome_of_rank = all[2 * static_cast<std::size_t>(r)];
    if (outcome_of_rank != 0) {
      std::string text_of_rank(chars + at, static_cast<std::size_t>(length));
      const bool agreed = outcome_of_rank == 2;
      auto same = [&](const Report& report) { return report.text == text_of_rank && report.agreed == agreed; };
      const auto it = std::find_if(reports.begin(), reports.end(), same);
      if (it == reports.end()) {
        reports.push_back({std::move(text_of_rank), agreed, {r}});
      } else {
        it->ranks.push_back(r);
      }
    }
    at += length;
  }
  // "rank 1: m", "ranks 0, 2: m"; a message every one of several ranks reported, or one
  // already agreed on, alone.
  std::string combined;
  for (const Report& report : reports) {
    std::string part = report.text;
    if (!report.agreed && (P == 1 || static_cast<int>(report.ranks.size()) < P)) {
      std::string ranks;
      for (int r : report.ranks) ranks += (ranks.empty() ? "" : ", ") + std::to_string(r);
      part = str(report.ranks.size() == 1 ? "rank " : "ranks ", ranks, ": ", part);
    }
    combined += (combined.empty() ? "" : "; ") + part;
  }
  throw CollectiveError(combined);
}

void run_collectively(Communicator& comm, const std::function<void()>& body) {
  bool failed = false, agreed = false;
  std::string message;
  try {
    body();
  } catch (const CollectiveError& error) {
    failed = agreed = true;
    message = error.what();
  } catch (const std::exception& error) {
    failed = true;
    message = error.what();
  } catch (...) {
    failed = true;
    message = "unknown exception";
  }
  agree_on_errors(comm, failed, message, agreed);
}

namespace {

// Rank 0 of 1: every collective is a copy (or nothing), and there is no peer to talk to.
class SelfCommunicator final : public Communicator {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  Device device() const override { return Device::cpu(); }
  std::string name() const override { return "self"; }

  void all_reduce(const Tensor& buffer, ReduceOp) override { detail::require_buffer(*this, buffer, "buffer"); }
  void all_gather(const Tensor& input, const Tensor& output) override {
    detail::require_same_kind(*this, input, output);
    detail::require_count(output, input.numel(), "output");
    copy(input, output);
  }
  void all_gather_v(const Tensor& input, const Tensor& output, const std::vector<std::int64_t>& counts) override {
    detail::require_same_kind(*this, input, output);
    detail::require_counts(*this, input, output, counts);
    copy(input, output);
  }
  void reduce_scatter(const Tensor& input, const Tensor& output, ReduceOp) override {
    detail::require_same_kind(*this, input, output);
    detail::require_count(input, output.numel(), "input");
    copy(input, output);
  }
  void broadcast(const Tensor& buffer, int root) override {
    detail::require_buffer(*this, buffer, "buffer");
    detail::require_rank(*this, root, "root");
  }
  void send(const Tensor&, int peer, int) override { no_peer(peer); }
  void recv(const Tensor&, int peer, int) override { no_peer(peer); }
  void exchange(const std::vector<Transfer>& sends, const std::vector<Transfer>& receives) override {
    for (const Transfer& t : sends) no_peer(t.peer);
    for (const Transfer& t : receives) no_peer(t.peer);
  }
  void barrier() override {}
  std::unique_ptr<Communicator> split(int color, int) override {
    if (color < 0) return nullptr;
    return std::make_unique<SelfCommunicator>();
  }

 private:
  static void copy(const Tensor& input, const Tensor& output) {
    if (input.numel() > 0) std::memcpy(output.data(), input.data(), input.nbytes());
  }
  [[noreturn]] static void no_peer(int peer) {
    throw Error(str("peer = ", peer, ": the self communicator has no other rank to send to or receive from"));
  }
};

}  // namespace

std::unique_ptr<Communicator> self_communicator() { return std::make_unique<SelfCommunicator>(); }

bool mpi_compiled() {
#if defined(LONGNET_WITH_MPI)
  return true;
#else
  return false;
#endif
}

bool nccl_compiled() {
#if defined(LONGNET_WITH_NCCL)
  return true;
#else
  return false;
#endif
}

#if !defined(LONGNET_WITH_MPI)
MpiSession::MpiSession() {}
MpiSession::MpiSession(int&, char**&) {}
MpiSession::~MpiSession() = default;
std::unique_ptr<Communicator> mpi_world() {
  throw Error(
      "mpi_world: this build has no MPI (install an MPI implementation and configure with LONGNET_WITH_MPI=ON)");
}
#endif

#if !defined(LONGNET_WITH_NCCL)
std::unique_ptr<Communicator> nccl_communicator(Communicator&, int) {
  throw Error(
      "nccl_communicator: this build has no NCCL (needs CUDA, NCCL and MPI; configure with LONGNET_WITH_NCCL=ON)");
}
#endif

}  // namespace longnet
