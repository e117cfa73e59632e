// Tensors and files: make tensors, take strided views, convert dtypes, move to the GPU
// when there is one, and round-trip everything through a safetensors file.
#include <iostream>
#include <longnet/longnet.hpp>

int main() {
  using namespace longnet;
  try {
    // (batch, sequence, heads, head_dim), the layout attention uses.
    const Tensor q = Tensor::randn({1, 16, 4, 8}, /*seed=*/1);
    // Every second position of head 0: a strided view, no copy.
    const Tensor every_other = q.select(2, 0).slice(1, 0, 16, 2);
    std::cout << "view " << every_other.description() << " strides (" << every_other.stride(0) << ", "
              << every_other.stride(1) << ", " << every_other.stride(2) << ")\n";

    const Device device = cuda_device_count() > 0 ? Device::cuda(0) : Device::cpu();
    const Tensor on_device = q.to(device, DType::bf16);
    std::cout << "on " << to_string(device) << ": " << on_device.description() << "\n";

    save_safetensors("example.safetensors", {{"q", q}, {"q_bf16", on_device}, {"view", every_other}},
                     {{"made_by", "examples/tensors_and_files"}});
    const SafetensorsReader file("example.safetensors");
    for (const auto& entry : file.entries()) {
      std::cout << "  " << entry.name << " " << dtype_name(entry.dtype) << " " << shape_to_string(entry.shape) << "\n";
    }
    const bool same = file.load("view").to_vector<float>() == every_other.to_vector<float>();
    const MemoryStats host = host_memory_pool().stats();
    std::cout << "host pool: " << host.in_use << " bytes in use, peak " << host.peak_in_use << ", " << host.allocations
              << " allocations\n";
    std::cout << (same ? "round trip ok\n" : "round trip differs\n");
    return same ? 0 : 1;
  } catch (const Error& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  }
}
