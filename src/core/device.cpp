// Device names and the CUDA device query (which never throws when no GPU is present).
#include "longnet/core/device.hpp"

#include <charconv>

#include "longnet/core/error.hpp"

#ifdef LONGNET_WITH_CUDA
#include <cuda_runtime.h>
#endif

namespace longnet {

std::string to_string(Device device) { return device.is_cpu() ? std::string("cpu") : str("cuda:", device.index); }

Device parse_device(std::string_view text, std::string_view argument) {
  if (text == "cpu") return Device::cpu();
  if (text == "cuda") return Device::cuda(0);
  if (text.substr(0, 5) == "cuda:") {
    const std::string_view digits = text.substr(5);
    int index = -1;
    const auto [end, error] = std::from_chars(digits.data(), digits.data() + digits.size(), index);
    if (error == std::errc() && end == digits.data() + digits.size() && index >= 0 && !digits.empty()) {
      return Device::cuda(index);
    }
  }
  throw Error(str(argument, " = '", text, "': must be cpu, cuda or cuda:N"));
}

bool cuda_compiled() {
#ifdef LONGNET_WITH_CUDA
  return true;
#else
  return false;
#endif
}

std::vector<CudaDeviceInfo> cuda_devices(std::string* why_none) {
  std::vector<CudaDeviceInfo> devices;
#ifdef LONGNET_WITH_CUDA
  int count = 0;
  const cudaError_t status = cudaGetDeviceCount(&count);
  if (status != cudaSuccess) {
    (void)cudaGetLastError();
    if (why_none) *why_none = str("no CUDA device found (", cudaGetErrorString(status), ")");
    return devices;
  }
  for (int i = 0; i < count; ++i) {
    cudaDeviceProp properties{};
    if (cudaGetDeviceProperties(&properties, i) != cudaSuccess) continue;
    devices.push_back({i, properties.name, properties.totalGlobalMem, properties.major, properties.minor,
                       properties.multiProcessorCount});
  }
  if (devices.empty() && why_none) *why_none = "no CUDA device found";
#else
  if (why_none) *why_none = "no CUDA device: this build has no CUDA backend (LONGNET_WITH_CUDA=OFF)";
#endif
  return devices;
}

const CudaDeviceInfo& cuda_device_info(int index) {
  static const std::vector<CudaDeviceInfo> devices = cuda_devices();
  for (const CudaDeviceInfo& info : devices) {
    if (info.index == index) return info;
  }
  throw Error(str("CUDA device ", index, " does not exist (", devices.size(), " found)"));
}

int cuda_device_count() {
#ifdef LONGNET_WITH_CUDA
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    (void)cudaGetLastError();
    return 0;
  }
  return count;
#else
  return 0;
#endif
}

void require_device_available(Device device, std::string_view argument) {
  if (device.is_cpu()) return;
  require(cuda_compiled(), argument, " = ", to_string(device),
          ": this build has no CUDA backend (configure with LONGNET_WITH_CUDA=ON)");
  const int count = cuda_device_count();
  require(device.index >= 0 && device.index < count, argument, " = ", to_string(device), ": no such CUDA device (",
          count, " present)");
}

}  // namespace longnet
