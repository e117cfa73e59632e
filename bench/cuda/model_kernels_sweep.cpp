// Times the model's memory-bound kernels on a CUDA device at the shapes of one layer of
// issue 5's training configuration (32768 rows, d_model 768, ffn 3072, 12 heads of 64, bf16):
// LayerNorm forward/backward (d-wide, and of GELU over the feed-forward's rows), the
// Linear backward (dx, dW and the bias gradient), xPos forward/backward, and the q/k/v
// projection with xPos: cuBLASLt's GEMM then the rotary pass, against the fused kernel
// (Hopper). Medians of
// CUDA-event times after warm-up; GB/s from the bytes each call must move (reads +
// writes of the activations; parameters and partial sums left out).
// Usage: cuda_model_kernels_sweep [--rows N] [--repeat R]
#include <cuda_runtime.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include "bench/cuda/cuda_timing.hpp"
#include "longnet/kernels/layer_norm.hpp"
#include "longnet/kernels/linear.hpp"
#include "longnet/kernels/projection_rotary.hpp"
#include "longnet/kernels/rotary.hpp"
#include "longnet/longnet.hpp"

namespace {

using namespace longnet;

// After three untimed calls (the first GEMM of a shape picks its algorithm).
template <class F>
double median_ms(int repeat, F&& body) {
  return bench::median_ms(repeat, body, 3);
}


void report(const char* name, const std::string& shape, double ms, double bytes) {
  std::printf("%-28s %-18s %9.4f ms %8.0f GB/s\n", name, shape.c_str(), ms, bytes / (ms * 1e-3) / 1e9);
}

// dx_sums: dx's column sums too (the model's pre-LayerNorms: the previous Linear's bias
// gradient), the backward alone.
void time_layer_norm(std::int64_t rows, std::int64_t columns, bool gelu, bool dresidual, int repeat,
                     bool dx_sums = false) {
  const Device gpu = Device::cuda(0);
  const Tensor x = Tensor::randn({rows, columns}, 1, DType::bf16, gpu);
  const Tensor dout = Tensor::randn({rows, columns}, 2, DType::bf16, gpu);
  const Tensor residual = Tensor::randn({rows, columns}, 3, DType::bf16, gpu);
  Tensor out = Tensor::empty({rows, columns}, DType::bf16, gpu), dx = Tensor::empty({rows, columns}, DType::bf16, gpu);
  Tensor weight = Tensor::full({columns}, 1.0, DType::f32, gpu), bias = Tensor::zeros({columns}, DType::f32, gpu);
  Tensor dweight = Tensor::zeros({columns}, DType::f32, gpu), dbias = Tensor::zeros({columns}, DType::f32, gpu);
  Tensor mean = Tensor::empty({rows}, DType::f32, gpu), rstd = Tensor::empty({rows}, DType::f32, gpu);
  kernels::LayerNormParams p;
  p.rows = rows;
  p.columns = columns;
  p.dtype = DType::bf16;
  p.input = gelu ? kernels::LayerNormInput::gelu : kernels::LayerNormInput::identity;
  p.x = x.data();
  p.x_row_stride = columns;
  p.weight = weight.data();
  p.bias = bias.data();
  p.out = out.data();
  p.out_row_stride = columns;
  p.mean = mean.data();
  p.rstd = rstd.data();
  p.dout = dout.data();
  p.dout_row_stride = columns;
  p.dx = dx.data();
  p.dx_row_stride = columns;
  if (dresidual) {
    p.dresidual = residual.data();
    p.dresidual_row_stride = columns;
  }
  p.dweight = dweight.data();
  p.dbias = dbias.data();
  const Tensor dx_column_sums = dx_sums ? Tensor::zeros({columns}, DType::f32, gpu) : Tensor();
  if (dx_sums) p.dx_column_sums = dx_column_sums.data();
  const double row_bytes = 2.0 * rows * columns;
  const std::string shape = std::to_string(rows) + "x" + std::to_string(columns);
  const std::string what = gelu ? "layer_norm(gelu)" : "layer_norm";
  if (!dx_sums) {
    report((what + " forward").c_str(), shape, median_ms(repeat, [&] { kernels::layer_norm_forward_cuda(p); }),
           2 * row_bytes);
  }
  report((what + " backward" + (dresidual ? "+dres" : "") + (dx_sums ? "+dxsums" : "")).c_str(), shape,
         median_ms(repeat, [&] { kernels::layer_norm_backward_cuda(p); }), (dresidual ? 4 : 3) * row_bytes);
}

void time_linear_backward(std::int64_t rows, std::int64_t in, std::int64_t out, int repeat) {
  const Device gpu = Device::cuda(0);
  const Tensor x = Tensor::randn({rows, in}, 1, DType::bf16, gpu);
  const Tensor w = Tensor::randn({out, in}, 2, DType::bf16, gpu);
  const Tensor dy = Tensor::randn({rows, out}, 3, DType::bf16, gpu);
  Tensor dx = Tensor::empty({rows, in}, DType::bf16, gpu);
  Tensor dw = Tensor::zeros({out, in}, DType::f32, gpu), db = Tensor::zeros({out}, DType::f32, gpu);
  kernels::LinearParams p;
  p.rows = rows;
  p.in_features = in;
  p.out_features = out;
  p.dtype = DType::bf16;
  p.x = x.data();
  p.x_row_stride = in;
  p.weight = w.data();
  p.dy = dy.data();
  p.dy_row_stride = out;
  p.dx = dx.data();
  p.dx_row_stride = in;
  p.dweight = dw.data();
  const std::string shape = std::to_string(rows) + "x" + std::to_string(in) + "->" + std::to_string(out);
  const double flops = 4.0 * rows * in * out;
  const double without = median_ms(repeat, [&] { kernels::linear_backward_cuda(p); });
  p.dbias = db.data();
  const double with = median_ms(repeat, [&] { kernels::linear_backward_cuda(p); });
  std::printf("%-28s %-18s %9.4f ms %8.0f TFLOP/s   with bias: %9.4f ms (+%.4f)\n", "linear backward", shape.c_str(),
              without, flops / (without * 1e-3) / 1e12, with, with - without);
}

void time_rotary(std::int64_t rows, std::int64_t heads, std::int64_t head_dim, int repeat) {
  const Device gpu = Device::cuda(0);
  const Tensor x = Tensor::randn({1, rows, heads, head_dim}, 1, DType::bf16, gpu);
  Tensor out = Tensor::empty({1, rows, heads, head_dim}, DType::bf16, gpu);
  kernels::RotaryParams p;
  p.batch = 1;
  p.seq_len = rows;
  p.heads = heads;
  p.head_dim = head_dim;
  p.dtype = DType::bf16;
  p.kind = kernels::RotaryKind::xpos;
  p.center = static_cast<double>((rows + 1) / 2);
  p.x = {x.data(), rows * heads * head_dim, heads * head_dim, head_dim};
  p.out = {out.data(), rows * heads * head_dim, heads * head_dim, head_dim};
  const std::string shape = std::to_string(rows) + "x" + std::to_string(heads) + "x" + std::to_string(head_dim);
  const double bytes = 2.0 * 2 * rows * heads * head_dim;
  report("xpos forward", shape, median_ms(repeat, [&] { kernels::rotary_apply_cuda(p); }), bytes);
  // q and k (the same count of heads) in one launch, against the two launches it replaces.
  Tensor key_out = Tensor::empty({1, rows, heads, head_dim}, DType::bf16, gpu);
  kernels::RotaryParams key = p;
  key.downscale = true;
  key.out = {key_out.data(), rows * heads * head_dim, heads * head_dim, head_dim};
  report("xpos forward (q, k: two)", shape,
         median_ms(repeat,
                   [&] {
                     kernels::rotary_apply_cuda(p);
                     kernels::rotary_apply_cuda(key);
                   }),
         2 * bytes);
  report("xpos forward (q, k: one)", shape, median_ms(repeat, [&] { kernels::rotary_apply_query_key_cuda(p, key); }),
         2 * bytes);
  p.transpose = true;
  p.downscale = true;
  report("xpos backward (keys)", shape, median_ms(repeat, [&] { kernels::rotary_apply_cuda(p); }), bytes);
}

// The attention's q/k/v projection with xPos as the model runs it (cuBLASLt's GEMM with
// its bias, then q and k rotated in place in one launch) and fused (projection_rotary.hpp,
// Hopper only); TFLOP/s of the GEMM's 2 rows in out.
void time_qkv_projection(std::int64_t rows, std::int64_t in, std::int64_t heads, std::int64_t head_dim, int repeat) {
  const Device gpu = Device::cuda(0);
  const std::int64_t out = 3 * heads * head_dim;
  const Tensor x = Tensor::randn({rows, in}, 1, DType::bf16, gpu);
  const Tensor w = Tensor::randn({out, in}, 2, DType::bf16, gpu);
  const Tensor b = Tensor::randn({out}, 3, DType::bf16, gpu);
  Tensor y = Tensor::empty({rows, out}, DType::bf16, gpu);
  kernels::LinearParams linear;
  linear.rows = rows, linear.in_features = in, linear.out_features = out, linear.dtype = DType::bf16;
  linear.x = x.data(), linear.x_row_stride = in, linear.weight = w.data(), linear.bias = b.data();
  linear.y = y.data(), linear.y_row_stride = out;
  kernels::RotaryParams query;
  query.batch = 1, query.seq_len = rows, query.heads = heads, query.head_dim = head_dim, query.dtype = DType::bf16;
  query.kind = kernels::RotaryKind::xpos, query.center = static_cast<double>((rows + 1) / 2);
  query.x = query.out = {y.data(), rows * out, out, head_dim};
  kernels::RotaryParams key = query;
  key.downscale = true;
  key.x = key.out = {static_cast<char*>(y.data()) + heads * head_dim * 2, rows * out, out, head_dim};
  const std::string shape = std::to_string(rows) + "x" + std::to_string(in) + "->" + std::to_string(out);
  const double flops = 2.0 * rows * in * out;
  const auto line = [&](const char* name, double ms) {
    std::printf("%-28s %-18s %9.4f ms %8.0f TFLOP/s\n", name, shape.c_str(), ms, flops / (ms * 1e-3) / 1e12);
  };
  line("qkv projection (GEMM)", median_ms(repeat, [&] { kernels::linear_forward_cuda(linear); }));
  line("qkv projection + xpos", median_ms(repeat, [&] {
         kernels::linear_forward_cuda(linear);
         kernels::rotary_apply_query_key_cuda(query, key);
       }));
  kernels::ProjectionRotaryParams fused;
  fused.rows = rows, fused.in_features = in, fused.out_features = out, fused.dtype = DType::bf16;
  fused.x = x.data(), fused.x_row_stride = in, fused.weight = w.data(), fused.bias = b.data();
  fused.y = y.data(), fused.y_row_stride = out, fused.query_columns = fused.key_columns = heads * head_dim;
  fused.query_map = query;
  if (!kernels::projection_rotary_supported(fused)) {
    std::printf("%-28s %-18s (not on this GPU or build)\n", "qkv projection, fused xpos", shape.c_str());
    return;
  }
  line("qkv projection, fused xpos", median_ms(repeat, [&] { kernels::projection_rotary_cuda(fused); }));
  fused.query_columns = fused.key_columns = 0;
  line("qkv projection, fused none", median_ms(repeat, [&] { kernels::projection_rotary_cuda(fused); }));
}

}  // namespace

int main(int argc, char** argv) {
  std::int64_t rows = 32768;
  int repeat = 20;
  const CLI::Range kPositive(std::int64_t{1}, std::int64_t{1} << 40, "POSITIVE");
  CLI::App app{
      "The model's memory-bound kernels (LayerNorm, Linear backward, xPos, the fused q/k/v projection) at issue 5's "
      "shapes"};
  app.add_option("--rows", rows, "rows (tokens a step)")->check(kPositive);
  app.add_option("--repeat", repeat, "CUDA-event timings a median is taken of")->check(kPositive);
  std::string only = "all";
  app.add_option("--only", only, "one group of rows: layer-norm, linear-backward, rotary or qkv (default: all)")
      ->check(CLI::IsMember({"all", "layer-norm", "linear-backward", "rotary", "qkv"}));
  CLI11_PARSE(app, argc, argv);
  const auto wanted = [&](std::string_view group) { return only == "all" || only == group; };
  try {
    if (wanted("layer-norm")) {
      time_layer_norm(rows, 768, false, false, repeat);
      time_layer_norm(rows, 768, false, true, repeat);
      time_layer_norm(rows, 768, false, true, repeat, /*dx_sums=*/true);
      time_layer_norm(rows, 3072, true, false, repeat);
    }
    if (wanted("linear-backward")) {
      time_linear_backward(rows, 768, 768, repeat);
      time_linear_backward(rows, 768, 3072, repeat);
      time_linear_backward(rows, 3072, 768, repeat);
    }
    if (wanted("rotary")) time_rotary(rows, 12, 64, repeat);
    if (wanted("qkv")) time_qkv_projection(rows, 768, 12, 64, repeat);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "cuda_model_kernels_sweep: %s\n", e.what());
    return 1;
  }
  return 0;
}
