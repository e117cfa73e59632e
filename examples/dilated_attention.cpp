// Dilated attention from C++: which rows each head attends (the worked example of
// docs/guides/dilated-attention.md: N = 8, H = 2, one pattern (w, r) = (4, 2)), then a
// forward and an exact backward in LongNet mode and in head-groups mode through the
// factory, on the GPU when there is one. Checks one identity on the way (a single
// pattern whose segment covers the sequence with rate 1 is dense attention) and exits
// non-zero if it fails, so the example doubles as a test. Leaves its inputs in
// dilated_attention_inputs.safetensors for `longnet attn` (scripts/main.sh runs both).
#include <cmath>
#include <iostream>
#include <longnet/longnet.hpp>

namespace {

using namespace longnet;

// Prints, for each head, the virtual sequences (rows s*w + o + r*j) it attends within.
void print_attended_rows(std::int64_t N, std::int64_t H, DilationPattern pattern, DilatedMode mode) {
  std::cout << "N = " << N << ", H = " << H << ", pattern (w, r) = (" << pattern.segment_length << ", "
            << pattern.dilation_rate << "), " << to_string(mode) << " mode\n";
  for (std::int64_t h = 0; h < H; ++h) {
    const std::int64_t offset = kernels::pattern_offset(mode, 0, 1, pattern.dilation_rate, h, H);
    std::cout << "  head " << h << " (offset " << offset << "):";
    for (std::int64_t s = 0; s < kernels::segment_count(N, pattern.segment_length); ++s) {
      const kernels::VirtualSequence vs = kernels::virtual_sequence(N, pattern, offset, s);
      std::cout << " {";
      for (std::int64_t j = 0; j < vs.length; ++j) std::cout << (j ? ", " : "") << vs.first_row + j * vs.row_step;
      std::cout << "}";
    }
    std::cout << "\n";
  }
}

double max_abs_difference(const Tensor& a, const Tensor& b) {
  const std::vector<float> x = a.to_vector<float>(), y = b.to_vector<float>();
  double worst = 0;
  for (std::size_t i = 0; i < x.size(); ++i) worst = std::max(worst, std::fabs(static_cast<double>(x[i] - y[i])));
  return worst;
}

}  // namespace

int main() {
  try {
    // 1. The worked example: rows {0, 2}, {4, 6} for head 0 and {1, 3}, {5, 7} for head 1.
    print_attended_rows(8, 2, {4, 2}, DilatedMode::longnet);

    // 2. LongNet mode through the factory: q (B, N, H, D), k and v (B, N, Hk, D).
    const Device device = cuda_device_count() > 0 ? Device::cuda(0) : Device::cpu();
    const DType dtype = device.is_cuda() ? DType::bf16 : DType::f32;
    const std::int64_t B = 1, N = 1000, H = 8, Hk = 4, D = 32;
    const Tensor q = Tensor::randn({B, N, H, D}, 1, dtype, device);
    const Tensor k = Tensor::randn({B, N, Hk, D}, 2, dtype, device);
    const Tensor v = Tensor::randn({B, N, Hk, D}, 3, dtype, device);
    const Tensor dout = Tensor::randn({B, N, H, D}, 4, dtype, device);

    DilatedAttentionConfig config;
    config.segment_lengths = {128, 256, 512};
    config.dilation_rates = {1, 2, 4};
    config.causal = true;
    auto attention = make_attention("auto", config);
    const AttentionOutput result = attention->forward(q, k, v);  // out (B, N, H, D), lse (B, H, N)
    const AttentionGradients grads = attention->backward(dout);  // dq, dk, dv
    std::cout << attention->name() << " on " << to_string(device) << ": out " << result.out.description() << ", lse "
              << result.lse.description() << ", dk " << grads.dk.description() << ", "
              << dilated_attention_forward_flops(config, B, N, H, D) << " FLOP forward\n";

    // 3. Head-groups mode (the Python package's DilatedAttention): group i uses pattern i only.
    config.mode = DilatedMode::head_groups;
    const AttentionOutput groups = dilated_attention_forward(config, q, k, v);
    std::cout << "head_groups: out " << groups.out.description() << "\n";

    // 4. One segment covering the sequence at rate 1 is dense causal attention.
    DilatedAttentionConfig whole;
    whole.segment_lengths = {N};
    whole.dilation_rates = {1};
    whole.causal = true;
    const AttentionOutput dilated = dilated_attention_forward(whole, q, k, v);
    const AttentionOutput dense = dilated_attention_forward(DilatedAttentionConfig::dense(true), q, k, v);
    const double difference = max_abs_difference(dilated.out, dense.out);
    std::cout << "pattern (N, 1) vs dense: max |difference| = " << difference << "\n";
    save_safetensors("dilated_attention_inputs.safetensors", {{"q", q}, {"k", k}, {"v", v}, {"do", dout}});
    std::cout << "wrote q, k, v, do to dilated_attention_inputs.safetensors\n";
    // Bitwise equal on the CPU; the GPU computes in bf16 and may round the two differently.
    return difference <= (device.is_cuda() ? 1e-2 : 0.0) ? 0 : 1;
  } catch (const Error& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  }
}
