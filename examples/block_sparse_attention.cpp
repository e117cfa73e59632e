// Block-sparse attention from C++ (docs/guides/block-sparse.md): a mask from generators
// (a local window, global tokens and random blocks, united), its lists and density, a
// forward and an exact backward through the factory on the GPU when there is one, a mask
// from a user's own lists with a sliding-window band, and a mask file round trip. Checks
// two identities on the way (a mask listing every block is dense attention; a row that
// lists no block gets out = 0 and lse = -inf) and exits non-zero if one fails, so the
// example doubles as a test. Leaves the mask in block_sparse_mask.safetensors for
// `longnet attn --mask` and `longnet mask --mask ... --png`.
#include <cmath>
#include <iostream>
#include <longnet/longnet.hpp>

namespace {

using namespace longnet;

double max_abs_difference(const Tensor& a, const Tensor& b) {
  const std::vector<float> x = a.to_vector<float>(), y = b.to_vector<float>();
  double worst = 0;
  for (std::size_t i = 0; i < x.size(); ++i) worst = std::max(worst, std::fabs(static_cast<double>(x[i] - y[i])));
  return worst;
}

}  // namespace

int main() {
  try {
    const Device device = cuda_device_count() > 0 ? Device::cuda(0) : Device::cpu();
    const DType dtype = device.is_cuda() ? DType::bf16 : DType::f32;
    const std::int64_t B = 1, N = 1000, H = 4, Hk = 2, D = 64;
    const Tensor q = Tensor::randn({B, N, H, D}, 1, dtype, device);
    const Tensor k = Tensor::randn({B, N, Hk, D}, 2, dtype, device);
    const Tensor v = Tensor::randn({B, N, Hk, D}, 3, dtype, device);
    const Tensor dout = Tensor::randn({B, N, H, D}, 4, dtype, device);

    // 1. A configuration of generators: the mask is built for the inputs' N and H.
    BlockSparseConfig config;
    config.block_q = config.block_k = 64;  // the GPU block sizes are 64 and 128 (any on the CPU)
    config.causal = true;
    config.patterns = {BlockPattern::local_window(1), BlockPattern::global({0}),
                       BlockPattern::random(2, /*seed=*/7, /*per_head=*/true)};
    auto attention = make_attention("auto", config);
    const AttentionOutput result = attention->forward(q, k, v);  // out (B, N, H, D), lse (B, H, N)
    const AttentionGradients grads = attention->backward(dout);  // dq, dk, dv
    const BlockMask& mask = static_cast<BlockSparseAttention&>(*attention).mask();
    std::cout << attention->name() << " on " << to_string(device) << ": " << mask.describe() << "\n";
    std::cout << "query block 10 of head 0 attends to key blocks";
    for (const std::int32_t j : mask.key_blocks_of(0, 10)) std::cout << " " << j;
    std::cout << "; out " << result.out.description() << ", dk " << grads.dk.description() << ", "
              << block_sparse_attention_forward_flops(mask, B, H, D) << " FLOP forward\n";

    // 2. Every block listed is dense attention (the same engine's dense path).
    const BlockMask all = BlockMask::dense({N, 64, 64, /*causal=*/true});
    const AttentionOutput sparse = block_sparse_attention_forward(all, q, k, v);
    const AttentionOutput dense = dilated_attention_forward(DilatedAttentionConfig::dense(true), q, k, v);
    const double difference = max_abs_difference(sparse.out, dense.out);
    std::cout << "all blocks vs dense: max |difference| = " << difference << "\n";
    if (difference > (device.is_cuda() ? 2e-2 : 1e-5)) {
      std::cerr << "error: a mask of all blocks should be dense attention\n";
      return 1;
    }

    // 3. A user's own lists (query block i -> key blocks), with a band on the partial
    //    blocks: keys within 100 positions before the query. Query block 2 lists nothing.
    BlockMask::Lists lists(1, std::vector<std::vector<std::int64_t>>(16));
    for (std::int64_t i = 0; i < 16; ++i) {
      if (i == 2) continue;
      auto& keys = lists[0][static_cast<std::size_t>(i)];
      if (i > 0) keys.push_back(i - 1);
      keys.push_back(i);
    }
    const BlockMask own = BlockMask::from_lists({N, 64, 64, true}, lists, ElementMask::band(100, 0));
    const AttentionOutput banded = block_sparse_attention_forward(own, q, k, v);
    const float empty_lse = banded.lse.to(Device::cpu()).to_vector<float>()[2 * 64];  // head 0, query 128
    std::cout << "own lists: " << own.describe() << "; lse of a row without keys = " << empty_lse << "\n";
    if (!(std::isinf(empty_lse) && empty_lse < 0)) {
      std::cerr << "error: a row without keys should have lse = -inf\n";
      return 1;
    }

    // 4. The mask file (PyTorch reads it with safetensors: u8 'layout' (heads, Qb, Kb)).
    save_block_mask("block_sparse_mask.safetensors", mask);
    const BlockMask loaded = load_block_mask("block_sparse_mask.safetensors");
    std::cout << "wrote block_sparse_mask.safetensors (" << loaded.listed_blocks() << " blocks)\n";
    return loaded.lists() == mask.lists() ? 0 : 1;
  } catch (const Error& error) {
    std::cerr << "error: " << error.what() << "\n";
    return 1;
  }
}
