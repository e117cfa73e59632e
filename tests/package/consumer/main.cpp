// A program outside the project that uses longnet through its public header only.
#include <iostream>
#include <longnet/longnet.hpp>

int main(int argc, char** argv) {
  if (argc != 2) return 2;
  const longnet::Tensor x = longnet::Tensor::randn({4, 8}, 1);
  longnet::save_safetensors(argv[1], {{"x", x}});
  const longnet::SafetensorsReader reader(argv[1]);
  if (reader.load("x").to_vector<float>() != x.to_vector<float>()) {
    std::cerr << "consumer: round trip differs\n";
    return 1;
  }
  std::cout << "consumer: ok (longnet " << longnet::build_info::version << ")\n";
  return 0;
}
