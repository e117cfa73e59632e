// The bandwidth-bound CUDA model kernels against the CPU kernels on the shapes that pick
// their different paths: LayerNorm rows held in registers by teams of 1 to 8 warps and the
// streaming kernels for longer rows, 16-byte packs and single elements (odd column counts,
// misaligned row strides), row counts that leave partial chunks, and the column sums of dx
// on each path; the Linear bias gradient's column sums; the embedding backward with skewed
// tokens (runs longer than a chunk, pieces across chunk boundaries); rotary on strided
// (fused qkv) and in-place rows. The reference
// is the CPU kernel in f64 on the same inputs rounded to the tested dtype; bf16 outputs
// are held to a few bf16 roundings (relative L2), f32 outputs (and the f32 gradients and
// statistics under bf16) to f32 accuracy. Skipped without a CUDA device.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <iomanip>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "longnet/kernels/embedding.hpp"
#include "longnet/kernels/layer_norm.hpp"
#include "longnet/kernels/linear.hpp"
#include "longnet/kernels/projection_rotary.hpp"
#include "longnet/kernels/rotary.hpp"
#include "longnet/nn/layer_norm.hpp"
#include "support/dilated_oracle.hpp"

namespace longnet::testing {
namespace {

class ModelKernelsCuda : public ::testing::Test {
 protected:
  void SetUp() override {
    if (cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device";
  }
  const Device gpu = Device::cuda(0);
};

DType accumulation(DType dtype) { return dtype == DType::f64 ? DType::f64 : DType::f32; }

// Values representable in `dtype`, as an f64 CPU tensor.
Tensor random(const Shape& shape, std::uint64_t seed, DType dtype) {
  return Tensor::randn(shape, seed, DType::f64).to(dtype).to(DType::f64);
}

// Relative L2 error allowed for results stored in `dtype`.
double tolerance(DType dtype) {
  if (dtype == DType::f64) return 1e-12;
  if (dtype == DType::f32) return 2e-5;
  return 4e-3;  // bf16: about one rounding (2^-9 relative on average)
}

// The first `columns` columns of a (rows, stride) tensor, as f64 on the CPU.
Tensor columns_of(const Tensor& t, std::int64_t columns) {
  return t.to(Device::cpu(), DType::f64).slice(1, 0, columns).contiguous();
}

void expect_close(const Tensor& actual, const Tensor& expected, double tol, const std::string& what) {
  EXPECT_LE(relative_l2_error(actual.to(Device::cpu(), DType::f64), expected), tol) << what;
}

// Bitwise equality of two f64 vectors; on a mismatch it names how many differ and the first
// (as row, column of rows `columns` wide), which a printout of the whole vectors does not.
void expect_same_values(const std::vector<double>& actual, const std::vector<double>& expected, std::int64_t columns,
                        const std::string& what) {
  ASSERT_EQ(actual.size(), expected.size()) << what;
  std::size_t differing = 0, first = actual.size();
  for (std::size_t i = 0; i < actual.size(); ++i) {
    if (actual[i] != expected[i] && !(std::isnan(actual[i]) && std::isnan(expected[i]))) {
      if (differing++ == 0) first = i;
    }
  }
  EXPECT_EQ(differing, 0u) << what << ": " << differing << " of " << actual.size() << " differ, the first at row "
                           << static_cast<std::int64_t>(first) / columns << " column "
                           << static_cast<std::int64_t>(first) % columns << ": "
                           << (first < actual.size()
                                   ? str(std::setprecision(17), actual[first], " vs ", expected[first])
                                   : std::string());
}

struct LayerNormCase {
  std::int64_t rows, columns, stride;
  bool affine = true;
};

// One case's inputs (f64 CPU tensors of values representable in the tested dtype).
// gelu: the rows are GELU pre-activations (LayerNormInput::gelu); residual: a residual
// gradient is added to dx, as the pre-norms run them.
struct LayerNormInputs {
  LayerNormCase shape;
  bool gelu = false, residual = false;
  Tensor x, dout, dresidual, weight, bias;
  // The gradients (dweight, dbias, dx_column_sums) accumulate onto this.
  Tensor start;
};

LayerNormInputs layer_norm_inputs(const LayerNormCase& c, DType dtype, bool gelu, bool residual) {
  const DType acc = accumulation(dtype);
  return {c,
          gelu,
          residual,
          random({c.rows, c.stride}, 1, dtype),
          random({c.rows, c.stride}, 2, dtype),
          random({c.rows, c.stride}, 6, dtype),
          random({c.columns}, 3, acc),
          random({c.columns}, 4, acc),
          random({c.columns}, 5, acc)};
}

struct LayerNormResults {
  Tensor out, mean, rstd, dx, dweight, dbias, dx_column_sums;  // dx_column_sums: when asked for
};

// Forward and backward on tensors of one device and dtype.
LayerNormResults run_layer_norm(const LayerNormInputs& in, Device device, DType type, bool dx_column_sums) {
  const LayerNormCase& c = in.shape;
  const DType a = accumulation(type);
  // The accumulated gradients start as clones: to() returns the tensor itself when it is
  // already on that device in that dtype.
  LayerNormResults r{Tensor::zeros({c.rows, c.stride}, type, device),
                     Tensor::zeros({c.rows}, a, device),
                     Tensor::zeros({c.rows}, a, device),
                     Tensor::zeros({c.rows, c.stride}, type, device),
                     in.start.to(device, a).clone(),
                     in.start.to(device, a).clone(),
                     in.start.to(device, a).clone()};
  const Tensor xd = in.x.to(device, type), dd = in.dout.to(device, type), rd = in.dresidual.to(device, type);
  const Tensor wd = in.weight.to(device, a), bd = in.bias.to(device, a);
  kernels::LayerNormParams p;
  p.rows = c.rows, p.columns = c.columns, p.dtype = type;
  p.input = in.gelu ? kernels::LayerNormInput::gelu : kernels::LayerNormInput::identity;
  p.x = xd.data(), p.x_row_stride = c.stride;
  p.weight = c.affine ? wd.data() : nullptr, p.bias = c.affine ? bd.data() : nullptr;
  p.out = r.out.data(), p.out_row_stride = c.stride, p.mean = r.mean.data(), p.rstd = r.rstd.data();
  p.dout = dd.data(), p.dout_row_stride = c.stride, p.dx = r.dx.data(), p.dx_row_stride = c.stride;
  p.dweight = c.affine ? r.dweight.data() : nullptr, p.dbias = c.affine ? r.dbias.data() : nullptr;
  if (in.residual) p.dresidual = rd.data(), p.dresidual_row_stride = c.stride;
  p.dx_column_sums = dx_column_sums ? r.dx_column_sums.data() : nullptr;
  if (device.is_cuda()) {
    kernels::layer_norm_forward_cuda(p);
    kernels::layer_norm_backward_cuda(p);
  } else {
    kernels::layer_norm_forward_cpu(p);
    kernels::layer_norm_backward_cpu(p);
  }
  return r;
}

TEST_F(ModelKernelsCuda, LayerNormMatchesTheCpuOnEveryPath) {
  const LayerNormCase cases[] = {
      {33, 40, 40},         // one warp, packs for bf16 and f32; f64 2-element packs
      {33, 40, 43, false},  // misaligned rows: single elements; no affine transform
      {100, 770, 773},      // single elements past the registers (P = 1)
      {50, 500, 503},       // single elements, 6 warps, partial last chunk
      {70, 768, 776},       // packs with a row stride
      {1, 768, 768},        // one row
      {67, 3072, 3072},     // bf16: 4 warps; f32: 8 warps; f64: streaming
      {9, 4100, 4100},      // single elements past the registers (bf16), f32/f64 past them too
      {40, 9000, 9000},     // streaming with packs
  };
  // fused: the rows are GELU pre-activations and a residual gradient is added to dx, as the
  // feed-forward's sub-LayerNorm and the pre-norms run them.
  for (const bool fused : {false, true}) {
    for (DType dtype : {DType::f32, DType::f64, DType::bf16}) {
      for (const LayerNormCase& c : cases) {
        SCOPED_TRACE(str(dtype_name(dtype), " rows ", c.rows, " columns ", c.columns, " stride ", c.stride,
                         c.affine ? "" : " no affine", fused ? " gelu input, residual gradient" : ""));
        const LayerNormInputs in = layer_norm_inputs(c, dtype, fused, fused);
        const LayerNormResults expected = run_layer_norm(in, Device::cpu(), DType::f64, false);
        const LayerNormResults actual = run_layer_norm(in, gpu, dtype, false);
        const double tol = tolerance(dtype), tol_acc = tolerance(accumulation(dtype));
        expect_close(columns_of(actual.out, c.columns), columns_of(expected.out, c.columns), tol, "out");
        expect_close(actual.mean, expected.mean, tol_acc, "mean");
        expect_close(actual.rstd, expected.rstd, tol_acc, "rstd");
        expect_close(columns_of(actual.dx, c.columns), columns_of(expected.dx, c.columns), tol, "dx");
        if (c.affine) {
          expect_close(actual.dweight, expected.dweight, tol_acc, "dweight");
          expect_close(actual.dbias, expected.dbias, tol_acc, "dbias");
        }
        // The padding columns of a strided output are left alone.
        if (c.stride > c.columns) {
          EXPECT_EQ(
              actual.out.to(Device::cpu(), DType::f64).slice(1, c.columns, c.stride).contiguous().to_vector<double>(),
              std::vector<double>(static_cast<std::size_t>(c.rows * (c.stride - c.columns)), 0.0));
        }
        // Deterministic: a second run gives the same bits.
        EXPECT_EQ(run_layer_norm(in, gpu, dtype, false).dweight.to(Device::cpu()).to_vector<double>(),
                  actual.dweight.to(Device::cpu()).to_vector<double>());
      }
    }
  }
}

// out_ones_column: each output row followed by 1, 0, ..., 0 (what a Linear's backward takes
// its bias gradient from), the rows themselves the bits of a forward without it, on each
// path (one warp, team rows, GELU input, single elements, streaming); no room: an error.
TEST_F(ModelKernelsCuda, LayerNormWritesTheOnesColumnAfterEachRow) {
  const std::int64_t kOnes = kernels::kOnesColumns;
  const LayerNormCase cases[] = {{33, 40, 40 + kOnes},
                                 {70, 768, 768 + kOnes},
                                 {9, 770, 770 + kOnes + 3},
                                 {67, 3072, 3072 + kOnes},
                                 {5, 9000, 9000 + kOnes}};
  for (const bool gelu : {false, true}) {
    for (DType dtype : {DType::f32, DType::f64, DType::bf16}) {
      for (const LayerNormCase& c : cases) {
        SCOPED_TRACE(str(dtype_name(dtype), " rows ", c.rows, " columns ", c.columns, " stride ", c.stride,
                         gelu ? " gelu input" : ""));
        const LayerNormInputs in = layer_norm_inputs(c, dtype, gelu, false);
        const DType a = accumulation(dtype);
        const Tensor x = in.x.to(gpu, dtype), w = in.weight.to(gpu, a), b = in.bias.to(gpu, a);
        const auto forward = [&](bool ones) {
          Tensor out = Tensor::full({c.rows, c.stride}, 7.0, dtype, gpu);
          const Tensor mean = Tensor::zeros({c.rows}, a, gpu), rstd = Tensor::zeros({c.rows}, a, gpu);
          kernels::LayerNormParams p;
          p.rows = c.rows, p.columns = c.columns, p.dtype = dtype;
          p.input = gelu ? kernels::LayerNormInput::gelu : kernels::LayerNormInput::identity;
          p.x = x.data(), p.x_row_stride = c.stride, p.weight = w.data(), p.bias = b.data();
          p.out = out.data(), p.out_row_stride = c.stride, p.out_ones_column = ones;
          p.mean = mean.data(), p.rstd = rstd.data();
          kernels::layer_norm_forward_cuda(p);
          return out.to(Device::cpu(), DType::f64);
        };
        const Tensor with = forward(true), without = forward(false);
        EXPECT_EQ(with.slice(1, 0, c.columns).contiguous().to_vector<double>(),
                  without.slice(1, 0, c.columns).contiguous().to_vector<double>());
        std::vector<double> pad;
        for (std::int64_t r = 0; r < c.rows; ++r) {
          for (std::int64_t j = 0; j < c.stride - c.columns; ++j) pad.push_back(j == 0 ? 1 : j < kOnes ? 0 : 7);
        }
        EXPECT_EQ(with.slice(1, c.columns, c.stride).contiguous().to_vector<double>(), pad);
      }
    }
  }
  kernels::LayerNormParams p;
  p.rows = 2, p.columns = 16, p.dtype = DType::f32, p.out_row_stride = 20, p.out_ones_column = true;
  try {
    kernels::layer_norm_forward_cuda(p);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("out_row_stride = 20"), std::string::npos) << e.what();
  }
}

// dx_column_sums (a Linear's bias gradient summed by the LayerNorm backward that writes its
// output gradient) on each path: the sums of the dx written, as stored (bf16: rounded),
// accumulated onto what the vector held, with dx, dweight and dbias as without them.
TEST_F(ModelKernelsCuda, LayerNormSumsTheColumnsOfDxOnEveryPath) {
  struct Case {
    DType dtype;
    LayerNormCase shape;
    bool gelu, residual;
    const char* path;
  };
  const Case cases[] = {
      {DType::bf16, {100, 768, 768}, false, true, "one-warp teams, staged on sm_90 (the pre-norms)"},
      {DType::bf16, {75, 768, 776}, false, false, "one-warp teams, no residual (the final norm)"},
      {DType::bf16, {67, 3072, 3072}, true, true, "a 4-warp block team, GELU"},
      {DType::f32, {70, 768, 768}, false, true, "a 2-warp block team"},
      {DType::f32, {45, 8192, 8192}, false, true, "streaming rows, packs"},
      {DType::bf16, {20, 9000, 9003}, true, false, "streaming rows, single elements"},
      {DType::f32, {50, 500, 503}, false, true, "single elements, a 6-warp block team"},
      {DType::f32, {33, 40, 43, false}, false, true, "one-warp teams, no affine (no parameter sums)"},
      {DType::f64, {41, 40, 40}, true, true, "f64 2-element packs"},
  };
  for (const Case& k : cases) {
    const LayerNormCase& c = k.shape;
    SCOPED_TRACE(
        str(dtype_name(k.dtype), " rows ", c.rows, " columns ", c.columns, " stride ", c.stride, ": ", k.path));
    const LayerNormInputs in = layer_norm_inputs(c, k.dtype, k.gelu, k.residual);
    const LayerNormResults with_sums = run_layer_norm(in, gpu, k.dtype, true);
    const LayerNormResults without = run_layer_norm(in, gpu, k.dtype, false);
    const double tol_acc = tolerance(accumulation(k.dtype));
    // The column sums of the dx this launch wrote, in fp64, onto the start.
    const Tensor dx = columns_of(with_sums.dx, c.columns);
    const std::vector<double> dxv = dx.to_vector<double>(), start = in.start.to_vector<double>();
    std::vector<double> sums = start;
    for (std::int64_t r = 0; r < c.rows; ++r) {
      for (std::int64_t col = 0; col < c.columns; ++col) {
        sums[static_cast<std::size_t>(col)] += dxv[static_cast<std::size_t>(r * c.columns + col)];
      }
    }
    expect_close(with_sums.dx_column_sums, Tensor::from_vector(sums, {c.columns}), tol_acc, "dx_column_sums");
    // Against the CPU's in fp64 (bf16: its dx rounded, about a rounding of the sums).
    const LayerNormResults expected = run_layer_norm(in, Device::cpu(), DType::f64, true);
    expect_close(with_sums.dx_column_sums, expected.dx_column_sums, tolerance(k.dtype), "dx_column_sums vs CPU");
    // Nothing else changes.
    expect_same_values(dxv, columns_of(without.dx, c.columns).to_vector<double>(), c.columns, "dx");
    expect_same_values(with_sums.dweight.to(Device::cpu()).to_vector<double>(),
                       without.dweight.to(Device::cpu()).to_vector<double>(), c.columns, "dweight");
    expect_same_values(with_sums.dbias.to(Device::cpu()).to_vector<double>(),
                       without.dbias.to(Device::cpu()).to_vector<double>(), c.columns, "dbias");
    // Deterministic: a second run gives the same bits.
    EXPECT_EQ(run_layer_norm(in, gpu, k.dtype, true).dx_column_sums.to(Device::cpu()).to_vector<double>(),
              with_sums.dx_column_sums.to(Device::cpu()).to_vector<double>());
  }
}

TEST_F(ModelKernelsCuda, LinearBiasGradientIsAColumnSum) {
  struct Case {
    std::int64_t rows, columns, stride;
  };
  const Case cases[] = {{300, 40, 40}, {300, 770, 770}, {129, 768, 776}, {64, 24, 27}, {1, 3072, 3072}};
  for (DType dtype : {DType::f32, DType::f64, DType::bf16}) {
    for (const Case& c : cases) {
      SCOPED_TRACE(str(dtype_name(dtype), " rows ", c.rows, " columns ", c.columns, " stride ", c.stride));
      const DType acc = accumulation(dtype);
      const Tensor dy = random({c.rows, c.stride}, 1, dtype), start = random({c.columns}, 2, acc);
      const auto run = [&](Device device, DType type) {
        const Tensor dyd = dy.to(device, type), dbias = start.to(device, accumulation(type)).clone();
        kernels::LinearParams p;
        p.rows = c.rows, p.in_features = 5, p.out_features = c.columns, p.dtype = type;
        p.dy = dyd.data(), p.dy_row_stride = c.stride, p.dbias = dbias.data();
        if (device.is_cuda()) {
          kernels::linear_backward_cuda(p);
        } else {
          kernels::linear_backward_cpu(p);
        }
        return dbias;
      };
      expect_close(run(gpu, dtype), run(Device::cpu(), DType::f64), tolerance(acc), "dbias");
    }
  }
}

// dweight and dbias in one backward (the training path): both gradients accumulate onto
// what they held, for bf16, f32 and f64, a dy with padded rows and the training layer's
// shapes (the last two cases), with x plain or followed by the ones column (dW's GEMM then
// gives db: linear.hpp's x_ones_column; the CPU oracle sums dy); a second run gives the
// same bits.
TEST_F(ModelKernelsCuda, LinearWeightAndBiasGradientsTogether) {
  struct Case {
    std::int64_t rows, in, out, stride;
  };
  const Case cases[] = {{300, 64, 40, 40},       {256, 96, 768, 776},     {129, 32, 24, 24}, {1, 16, 3072, 3072},
                        {2048, 768, 2304, 2304}, {1024, 768, 3072, 3072}, {70, 30, 20, 20}};  // (in % 4 != 0: the ones
                                                                                              // column's scalar adds)
  for (DType dtype : {DType::f32, DType::f64, DType::bf16}) {
    for (const Case& c : cases) {
      for (const bool ones : {false, true}) {
        SCOPED_TRACE(str(dtype_name(dtype), " rows ", c.rows, " in ", c.in, " out ", c.out, " stride ", c.stride,
                         ones ? " ones column" : ""));
        const DType acc = accumulation(dtype);
        // With the ones column: rows of in + kOnesColumns, column `in` 1 and the rest 0.
        const std::int64_t x_stride = ones ? c.in + kernels::kOnesColumns : c.in;
        std::vector<double> x_values = random({c.rows, x_stride}, 4, dtype).to_vector<double>();
        for (std::int64_t r = 0; ones && r < c.rows; ++r) {
          for (std::int64_t j = 0; j < kernels::kOnesColumns; ++j) x_values[r * x_stride + c.in + j] = j == 0 ? 1 : 0;
        }
        const Tensor dy = random({c.rows, c.stride}, 3, dtype), x = Tensor::from_vector(x_values, {c.rows, x_stride});
        const Tensor w = random({c.out, c.in}, 5, dtype);
        const Tensor bias_start = random({c.out}, 6, acc), weight_start = random({c.out, c.in}, 7, acc);
        const auto run = [&](Device device, DType type) {
          const Tensor dyd = dy.to(device, type), xd = x.to(device, type), wd = w.to(device, type);
          Tensor dbias = bias_start.to(device, accumulation(type)).clone();
          Tensor dweight = weight_start.to(device, accumulation(type)).clone();
          kernels::LinearParams p;
          p.rows = c.rows, p.in_features = c.in, p.out_features = c.out, p.dtype = type;
          p.x = xd.data(), p.x_row_stride = x_stride, p.x_ones_column = ones, p.weight = wd.data();
          p.dy = dyd.data(), p.dy_row_stride = c.stride, p.dbias = dbias.data(), p.dweight = dweight.data();
          if (device.is_cuda()) {
            kernels::linear_backward_cuda(p);
          } else {
            kernels::linear_backward_cpu(p);
          }
          return std::make_pair(dbias, dweight);
        };
        const auto [bias_gpu, weight_gpu] = run(gpu, dtype);
        const auto [bias_cpu, weight_cpu] = run(Device::cpu(), DType::f64);
        expect_close(bias_gpu, bias_cpu, tolerance(acc), "dbias");
        expect_close(weight_gpu, weight_cpu, tolerance(acc), "dweight");
        const auto [bias_again, weight_again] = run(gpu, dtype);
        EXPECT_EQ(bias_again.to(Device::cpu()).to_vector<double>(), bias_gpu.to(Device::cpu()).to_vector<double>());
        EXPECT_EQ(weight_again.to(Device::cpu()).to_vector<double>(), weight_gpu.to(Device::cpu()).to_vector<double>());
      }
    }
  }
}

// The ones column's rule: a row stride with room for it, else a clear error (both backends).
TEST_F(ModelKernelsCuda, LinearOnesColumnNeedsRoomInTheRowStride) {
  const Tensor x = Tensor::zeros({4, 20}, DType::f32, gpu), dy = Tensor::zeros({4, 6}, DType::f32, gpu);
  Tensor dweight = Tensor::zeros({6, 16}, DType::f32, gpu), dbias = Tensor::zeros({6}, DType::f32, gpu);
  kernels::LinearParams p;
  p.rows = 4, p.in_features = 16, p.out_features = 6, p.dtype = DType::f32;
  p.x = x.data(), p.x_row_stride = 20, p.x_ones_column = true;
  p.dy = dy.data(), p.dy_row_stride = 6, p.dweight = dweight.data(), p.dbias = dbias.data();
  try {
    kernels::linear_backward_cuda(p);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("x_row_stride = 20"), std::string::npos) << e.what();
  }
}

TEST_F(ModelKernelsCuda, EmbeddingBackwardWithSkewedTokens) {
  const std::int64_t count = 1000, vocab = 50;
  std::vector<std::int32_t> ids(count);
  for (std::int64_t i = 0; i < count; ++i) {
    // Token 3 most of the time (a run of ~700 rows: 11+ chunks), the rest spread thin.
    ids[static_cast<std::size_t>(i)] = (i * 7) % 10 < 7 ? 3 : static_cast<std::int32_t>((i * 13) % vocab);
  }
  std::vector<std::int32_t> order;
  std::vector<std::int64_t> run_starts;
  kernels::embedding_sort_rows(ids.data(), count, order, run_starts);
  const Tensor tokens = Tensor::from_vector(ids, {count});
  const Tensor tokens_gpu = tokens.to(gpu), order_gpu = Tensor::from_vector(order, {count}).to(gpu);
  const Tensor runs_gpu = Tensor::from_vector(run_starts, {static_cast<std::int64_t>(run_starts.size())}).to(gpu);
  for (DType dtype : {DType::f32, DType::f64, DType::bf16}) {
    for (std::int64_t dim : {16, 40, 770}) {  // packs (bf16: 16, f32: 16 and 40) and single elements
      SCOPED_TRACE(str(dtype_name(dtype), " dim ", dim));
      const DType acc = accumulation(dtype);
      const Tensor dout = random({count, dim}, 1, dtype), start = random({vocab, dim}, 2, acc);
      const auto run = [&](Device device, DType type) {
        const Tensor doutd = dout.to(device, type), dtable = start.to(device, accumulation(type)).clone();
        kernels::EmbeddingParams p;
        p.count = count, p.vocab = vocab, p.dim = dim, p.scale = 1.5, p.dtype = type;
        p.dout = doutd.data(), p.dtable = dtable.data();
        if (device.is_cuda()) {
          p.tokens = tokens_gpu.data<std::int32_t>();
          p.order = order_gpu.data<std::int32_t>();
          p.run_starts = runs_gpu.data<std::int64_t>();
          p.runs = static_cast<std::int64_t>(run_starts.size()) - 1;
          kernels::embedding_backward_cuda(p);
        } else {
          p.tokens = tokens.data<std::int32_t>();
          kernels::embedding_backward_cpu(p);
        }
        return dtable;
      };
      const Tensor actual = run(gpu, dtype);
      expect_close(actual, run(Device::cpu(), DType::f64), tolerance(acc), "dtable");
      EXPECT_EQ(run(gpu, dtype).to(Device::cpu()).to_vector<double>(), actual.to(Device::cpu()).to_vector<double>());
    }
  }
}

TEST_F(ModelKernelsCuda, RotaryOnStridedAndInPlaceRows) {
  const std::int64_t batch = 2, seq = 37, heads = 3;
  for (DType dtype : {DType::f32, DType::f64, DType::bf16}) {
    for (std::int64_t head_dim : {64, 6}) {  // packs, and (bf16, f32) single pairs
      for (bool in_place : {false, true}) {
        SCOPED_TRACE(str(dtype_name(dtype), " head_dim ", head_dim, in_place ? " in place" : ""));
        // x: the q part of a fused (batch, seq, 3, heads, head_dim) projection.
        const Tensor qkv = random({batch, seq, 3, heads, head_dim}, 1, dtype);
        const auto run = [&](Device device, DType type) {
          const Tensor xd = qkv.to(device, type).clone();
          Tensor out = in_place ? xd : Tensor::zeros({batch, seq, heads, head_dim}, type, device);
          kernels::RotaryParams p;
          p.batch = batch, p.seq_len = seq, p.heads = heads, p.head_dim = head_dim, p.dtype = type;
          p.kind = kernels::RotaryKind::xpos, p.scale_base = 16.0, p.position_start = 100, p.center = 9.0;
          p.downscale = true, p.transpose = true;
          p.x = {xd.data(), seq * 3 * heads * head_dim, 3 * heads * head_dim, head_dim};
          p.out = in_place ? p.x : kernels::RowTensor{out.data(), seq * heads * head_dim, heads * head_dim, head_dim};
          if (device.is_cuda()) {
            kernels::rotary_apply_cuda(p);
          } else {
            kernels::rotary_apply_cpu(p);
          }
          return in_place ? xd.view({batch * seq, 3 * heads * head_dim}) : out.view({batch * seq, heads * head_dim});
        };
        expect_close(run(gpu, dtype), run(Device::cpu(), DType::f64), tolerance(dtype), "rotary");
      }
    }
  }
}

// Long positions (angles of 10^5 radians and more, reduced by whole turns on CUDA), xPos
// distances far from the centre (factors far from 1), RoPE, and forward and transposed
// maps, with more heads than the kernel loads at once (6: a group of 4 and one of 2).
TEST_F(ModelKernelsCuda, RotaryAtLongPositions) {
  const std::int64_t batch = 1, seq = 29, heads = 6, head_dim = 64;
  struct Case {
    kernels::RotaryKind kind;
    std::int64_t position_start;
    double center, scale_base;
    bool downscale, transpose;
  };
  const Case cases[] = {
      {kernels::RotaryKind::rope, 1000003, 0.0, 512.0, false, false},
      {kernels::RotaryKind::rope, 123457, 0.0, 512.0, false, true},
      {kernels::RotaryKind::xpos, 32000, 16384.0, 512.0, false, false},   // factors zeta^31
      {kernels::RotaryKind::xpos, 500000, 500010.0, 512.0, true, true},  // long positions, factors near 1
      {kernels::RotaryKind::xpos, 0, 16384.0, 512.0, true, false},       // negative distances, keys
  };
  for (DType dtype : {DType::f32, DType::bf16}) {
    for (const Case& c : cases) {
      SCOPED_TRACE(str(dtype_name(dtype), c.kind == kernels::RotaryKind::xpos ? " xpos" : " rope", " start ",
                       c.position_start, " center ", c.center, c.downscale ? " downscale" : "",
                       c.transpose ? " transpose" : ""));
      const Tensor x = random({batch, seq, heads, head_dim}, 3, dtype);
      const auto run = [&](Device device, DType type) {
        const Tensor xd = x.to(device, type);
        Tensor out = Tensor::zeros({batch, seq, heads, head_dim}, type, device);
        kernels::RotaryParams p;
        p.batch = batch, p.seq_len = seq, p.heads = heads, p.head_dim = head_dim, p.dtype = type;
        p.kind = c.kind, p.position_start = c.position_start, p.center = c.center, p.scale_base = c.scale_base;
        p.downscale = c.downscale, p.transpose = c.transpose;
        p.x = {xd.data(), seq * heads * head_dim, heads * head_dim, head_dim};
        p.out = {out.data(), seq * heads * head_dim, heads * head_dim, head_dim};
        if (device.is_cuda()) {
          kernels::rotary_apply_cuda(p);
        } else {
          kernels::rotary_apply_cpu(p);
        }
        return out.view({batch * seq, heads * head_dim});
      };
      expect_close(run(gpu, dtype), run(Device::cpu(), DType::f64), tolerance(dtype), "rotary");
    }
  }
}

// A query and key pair in one launch (the attention's forward): the bits of the two
// single-map launches, for q and k as slices of one fused projection (strided rows) with
// fewer kv heads than heads, packs and single pairs, xPos (centred, far from the centre)
// and RoPE.
TEST_F(ModelKernelsCuda, RotaryQueryKeyPairHasTheBitsOfTwoLaunches) {
  const std::int64_t batch = 2, seq = 41, heads = 5, kv_heads = 2;
  for (DType dtype : {DType::bf16, DType::f32, DType::f64}) {
    for (std::int64_t head_dim : {64, 6}) {
      for (kernels::RotaryKind kind : {kernels::RotaryKind::xpos, kernels::RotaryKind::rope}) {
        for (std::int64_t position_start : {std::int64_t{0}, std::int64_t{70001}}) {
          SCOPED_TRACE(str(dtype_name(dtype), " head_dim ", head_dim,
                           kind == kernels::RotaryKind::xpos ? " xpos" : " rope", " start ", position_start));
          const std::int64_t width = (heads + 2 * kv_heads) * head_dim;
          const Tensor qkv = random({batch, seq, heads + 2 * kv_heads, head_dim}, 7, dtype).to(gpu);
          const auto params = [&](std::int64_t first_head, std::int64_t count, const Tensor& out, bool key) {
            kernels::RotaryParams p;
            p.batch = batch, p.seq_len = seq, p.heads = count, p.head_dim = head_dim, p.dtype = dtype;
            p.kind = kind, p.scale_base = 32.0, p.position_start = position_start;
            p.center = static_cast<double>(position_start) + 20.0, p.downscale = key;
            p.x = {static_cast<char*>(qkv.data()) + first_head * head_dim * dtype_size(dtype), seq * width, width,
                   head_dim};
            p.out = {out.data(), seq * count * head_dim, count * head_dim, head_dim};
            return p;
          };
          const auto run = [&](bool paired) {
            const Tensor q = Tensor::zeros({batch, seq, heads, head_dim}, dtype, gpu);
            const Tensor k = Tensor::zeros({batch, seq, kv_heads, head_dim}, dtype, gpu);
            const kernels::RotaryParams query = params(0, heads, q, false), key = params(heads, kv_heads, k, true);
            if (paired) {
              kernels::rotary_apply_query_key_cuda(query, key);
            } else {
              kernels::rotary_apply_cuda(query);
              kernels::rotary_apply_cuda(key);
            }
            return std::pair{q.to(Device::cpu()).to_vector<double>(), k.to(Device::cpu()).to_vector<double>()};
          };
          const auto [q_two, k_two] = run(false);
          const auto [q_one, k_one] = run(true);
          EXPECT_EQ(q_one, q_two);
          EXPECT_EQ(k_one, k_two);
          if (kind == kernels::RotaryKind::xpos) {  // the key factor is the query's inverse: they differ
            EXPECT_NE(q_one, std::vector<double>(q_one.size(), 0.0));
          }
        }
      }
    }
  }
}

// The fused q/k/v projection with its rotary map (Hopper; skipped elsewhere) against an
// f64 oracle (the CPU GEMM, bias and rotary kernels on the same bf16 inputs), next to the
// unfused CUDA path (the projection's GEMM, rounded to bf16, then the rotary pass): rows
// that leave a partial 128-row tile, column counts that leave a partial 256-column tile,
// fewer kv heads than heads, reduced dimensions of one and several 64-wide blocks (and a
// partial one), with and without bias, xPos (centred, far from the centre) and RoPE; and
// more tiles than SMs (each CTA takes several: the ring's phases and the output boxes
// carried across tiles), which the runs under LONGNET_PROJECTION_CLUSTER=2 and
// LONGNET_PROJECTION_STAGGER=1..3 (scripts/gpu/pending/first_call.sh) exercise too. The
// fused path rounds once, so it is held, for q, k and v apart and row by row, to one bf16
// rounding of the oracle (xPos's factors span orders of magnitude along a sequence: a
// whole-tensor error would see only its largest rows), and to no more than the unfused
// path's error.
TEST_F(ModelKernelsCuda, FusedProjectionRotaryMatchesTheGemmThenTheRotaryPass) {
  struct Case {
    std::int64_t batch, seq, in, heads, kv_heads;
  };
  const std::int64_t D = 64;
  for (const Case& c :
       {Case{2, 200, 192, 5, 2}, Case{1, 256, 768, 12, 12}, Case{3, 37, 72, 4, 1}, Case{4, 2048, 136, 12, 4}}) {
    for (const bool bias : {true, false}) {
      for (const kernels::RotaryKind kind : {kernels::RotaryKind::xpos, kernels::RotaryKind::rope}) {
        for (const std::int64_t position_start : {std::int64_t{0}, std::int64_t{70001}}) {
          SCOPED_TRACE(str("batch ", c.batch, " seq ", c.seq, " in ", c.in, " heads ", c.heads, "/", c.kv_heads,
                           bias ? " bias" : "", kind == kernels::RotaryKind::xpos ? " xpos" : " rope", " start ",
                           position_start));
          const std::int64_t rows = c.batch * c.seq, out = (c.heads + 2 * c.kv_heads) * D;
          const Tensor x = random({rows, c.in}, 11, DType::bf16), w = random({out, c.in}, 12, DType::bf16);
          const Tensor b = random({out}, 13, DType::bf16);
          kernels::RotaryParams map;
          map.batch = c.batch, map.seq_len = c.seq, map.head_dim = D, map.kind = kind, map.scale_base = 32.0;
          map.position_start = position_start, map.center = static_cast<double>(position_start) + 20.0;

          // The maps on a (rows, out) tensor's q and k columns, in place.
          const auto rotate = [&](const Tensor& y, DType dtype, bool on_gpu) {
            kernels::RotaryParams query = map, key = map;
            query.dtype = key.dtype = dtype, query.heads = c.heads, key.heads = c.kv_heads, key.downscale = true;
            char* data = static_cast<char*>(y.data());
            query.x = query.out = {data, c.seq * out, out, D};
            key.x = key.out = {data + c.heads * D * dtype_size(dtype), c.seq * out, out, D};
            on_gpu ? kernels::rotary_apply_query_key_cuda(query, key) : kernels::rotary_apply_query_key_cpu(query, key);
          };
          const auto linear = [&](const Tensor& xs, const Tensor& ws, const Tensor& bs, const Tensor& y, DType dtype) {
            kernels::LinearParams p;
            p.rows = rows, p.in_features = c.in, p.out_features = out, p.dtype = dtype;
            p.x = xs.data(), p.x_row_stride = c.in, p.weight = ws.data(), p.bias = bias ? bs.data() : nullptr;
            p.y = y.data(), p.y_row_stride = out;
            dtype == DType::f64 ? kernels::linear_forward_cpu(p) : kernels::linear_forward_cuda(p);
          };
          const Tensor oracle = Tensor::zeros({rows, out}, DType::f64);
          linear(x, w, b, oracle, DType::f64);
          rotate(oracle, DType::f64, false);

          const Tensor xg = x.to(gpu, DType::bf16), wg = w.to(gpu, DType::bf16), bg = b.to(gpu, DType::bf16);
          const Tensor unfused = Tensor::zeros({rows, out}, DType::bf16, gpu);
          linear(xg, wg, bg, unfused, DType::bf16);
          rotate(unfused, DType::bf16, true);

          const Tensor fused = Tensor::zeros({rows, out}, DType::bf16, gpu);
          kernels::ProjectionRotaryParams p;
          p.rows = rows, p.in_features = c.in, p.out_features = out, p.dtype = DType::bf16;
          p.x = xg.data(), p.x_row_stride = c.in, p.weight = wg.data(), p.bias = bias ? bg.data() : nullptr;
          p.y = fused.data(), p.y_row_stride = out, p.query_columns = c.heads * D, p.key_columns = c.kv_heads * D;
          p.query_map = map;
          if (!kernels::projection_rotary_supported(p)) GTEST_SKIP() << "no Hopper GPU or no sm_90a kernels";
          kernels::projection_rotary_cuda(p);

          const std::vector<double> fused_values = fused.to(Device::cpu(), DType::f64).to_vector<double>();
          const std::vector<double> unfused_values = unfused.to(Device::cpu(), DType::f64).to_vector<double>();
          const std::vector<double> expected = oracle.to_vector<double>();
          // Per part (q, k, v columns): the whole part's relative L2 error, and its worst row's.
          const std::int64_t q_end = c.heads * D, k_end = (c.heads + c.kv_heads) * D;
          for (const auto& [name, first, last] :
               {std::tuple{"q", std::int64_t{0}, q_end}, {"k", q_end, k_end}, {"v", k_end, out}}) {
            double fused_diff = 0, unfused_diff = 0, norm = 0, worst_row = 0;
            std::int64_t worst = -1;
            for (std::int64_t r = 0; r < rows; ++r) {
              double row_diff = 0, row_norm = 0;
              for (std::int64_t j = first; j < last; ++j) {
                const auto i = static_cast<std::size_t>(r * out + j);
                row_diff += (fused_values[i] - expected[i]) * (fused_values[i] - expected[i]);
                row_norm += expected[i] * expected[i];
                unfused_diff += (unfused_values[i] - expected[i]) * (unfused_values[i] - expected[i]);
              }
              fused_diff += row_diff, norm += row_norm;
              const double row_error = std::sqrt(row_diff / std::max(row_norm, 1e-300));
              if (row_error > worst_row) worst_row = row_error, worst = r;
            }
            const double fused_error = std::sqrt(fused_diff / norm), unfused_error = std::sqrt(unfused_diff / norm);
            // One rounding to bf16 (unit roundoff 2^-8) bounds every row's relative error.
            EXPECT_LE(worst_row, 4.5e-3) << name << " row " << worst;
            EXPECT_LE(fused_error, 4e-3) << name;
            EXPECT_LE(fused_error, unfused_error * 1.05 + 1e-6) << name << ": unfused " << unfused_error;
          }
        }
      }
    }
  }
}

// Bad parameters get an error naming the rule, before anything runs.
TEST_F(ModelKernelsCuda, FusedProjectionRotaryNamesTheRuleItBreaks) {
  kernels::ProjectionRotaryParams p;
  p.rows = 128, p.in_features = 64, p.out_features = 100, p.x_row_stride = 64, p.y_row_stride = 100;
  EXPECT_FALSE(kernels::projection_rotary_supported(p));
  try {
    kernels::projection_rotary_cuda(p);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find("projection_rotary_cuda"), std::string::npos) << message;
    // On a Hopper GPU with the sm_90a kernels the first rule broken is the column count's.
    if (message.find("Hopper") == std::string::npos && message.find("sm_90a") == std::string::npos) {
      EXPECT_NE(message.find("out_features a multiple of 8"), std::string::npos) << message;
    }
  }
}

// nn::LayerNorm's segment_dots on CUDA (the attention's delta): the backward kernel takes
// them for one-warp rows whose segments are a power of two of 16-byte groups (bf16 768 =
// 12 heads of 64, f32 256 = 4 of 64, bf16 128 = 2 of 64), a pass of their own otherwise
// (bf16 segments of 48: six groups; rows of 1024: a team of two warps); with and without
// the residual gradient. They equal the returned gradient dot the input in double; the
// gradient is a call's without them, bit for bit.
TEST_F(ModelKernelsCuda, LayerNormSegmentDotsAreTheGradientsDotTheInput) {
  struct Case {
    DType dtype;
    std::int64_t columns, segments;
  };
  const std::int64_t B = 2, N = 67;
  for (const Case& k : {Case{DType::bf16, 768, 12}, Case{DType::f32, 256, 4}, Case{DType::bf16, 128, 2},
                        Case{DType::bf16, 768, 16}, Case{DType::bf16, 1024, 16}}) {
    for (const bool residual : {false, true}) {
      SCOPED_TRACE(str(dtype_name(k.dtype), " ", k.columns, " columns, ", k.segments, " segments",
                       residual ? ", residual gradient" : ""));
      nn::ParameterOptions options;
      options.compute_dtype = k.dtype;
      options.device = gpu;
      nn::LayerNorm norm("ln", k.columns, 1e-5, options);
      norm.parameters()[0]->value.copy_from(Tensor::randn({k.columns}, 3));
      const Tensor x = random({B, N, k.columns}, 1, k.dtype).to(gpu, k.dtype);
      const Tensor dy = random({B, N, k.columns}, 2, k.dtype).to(gpu, k.dtype);
      const Tensor dresidual = random({B, N, k.columns}, 4, k.dtype).to(gpu, k.dtype);
      (void)norm.forward(x);
      const Tensor plain = norm.backward(dy, residual ? &dresidual : nullptr);
      Tensor dots = Tensor::full({B, k.segments, N}, 7.0, DType::f32, gpu);
      const Tensor dx = norm.backward(dy, residual ? &dresidual : nullptr, nullptr, &dots);
      EXPECT_EQ(dx.to_vector<float>(), plain.to_vector<float>());
      const std::vector<double> dxv = dx.to(Device::cpu(), DType::f64).to_vector<double>();
      const std::vector<double> xv = x.to(Device::cpu(), DType::f64).to_vector<double>();
      const std::vector<double> got = dots.to(Device::cpu(), DType::f64).to_vector<double>();
      const std::int64_t width = k.columns / k.segments;
      int wrong = 0;
      for (std::int64_t b = 0; b < B; ++b) {
        for (std::int64_t s = 0; s < k.segments; ++s) {
          for (std::int64_t n = 0; n < N; ++n) {
            double expected = 0, magnitude = 0;
            for (std::int64_t c = s * width; c < (s + 1) * width; ++c) {
              const auto i = static_cast<std::size_t>((b * N + n) * k.columns + c);
              expected += dxv[i] * xv[i];
              magnitude += std::abs(dxv[i] * xv[i]);
            }
            const double actual = got[static_cast<std::size_t>((b * k.segments + s) * N + n)];
            if (!(std::abs(actual - expected) <= 1e-5 * (1 + magnitude)) && ++wrong <= 5) {
              ADD_FAILURE() << "b " << b << " segment " << s << " n " << n << ": " << actual << " vs " << expected;
            }
          }
        }
      }
      EXPECT_EQ(wrong, 0);
    }
  }
}

}  // namespace
}  // namespace longnet::testing
