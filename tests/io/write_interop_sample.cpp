// Writes a safetensors file of known values for the Python interop check.
#include <iostream>

#include "longnet/io/safetensors.hpp"

int main(int argc, char** argv) {
  if (argc != 2) {
    std::cerr << "usage: write_interop_sample OUT.safetensors\n";
    return 2;
  }
  using namespace longnet;
  std::vector<float> ramp(24);
  for (std::size_t i = 0; i < ramp.size(); ++i) ramp[i] = static_cast<float>(i) / 8.0f - 1.0f;
  const Tensor base = Tensor::from_vector(ramp, {2, 3, 4});
  save_safetensors(argv[1],
                   {{"f32", base},
                    {"f64_transposed", base.transpose(0, 2).to(DType::f64)},
                    {"bf16", base.to(DType::bf16)},
                    {"f16", base.to(DType::f16)},
                    {"i64", Tensor::from_vector(std::vector<std::int64_t>{-3, 0, 9}, {3})},
                    {"scalar", Tensor::full({}, 2.5, DType::f32)},
                    {"empty", Tensor::zeros({3, 0}, DType::f32)}},
                   {{"writer", "longnet"}});
  return 0;
}
