// Where a tensor lives: the host (CPU) or one CUDA device, and what CUDA devices exist.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

namespace longnet {

enum class DeviceType { cpu, cuda };

struct Device {
  DeviceType type = DeviceType::cpu;
  int index = 0;

  static Device cpu() { return {DeviceType::cpu, 0}; }
  static Device cuda(int index = 0) { return {DeviceType::cuda, index}; }
  bool is_cpu() const { return type == DeviceType::cpu; }
  bool is_cuda() const { return type == DeviceType::cuda; }
  friend bool operator==(const Device&, const Device&) = default;
};

// "cpu" or "cuda:N".
std::string to_string(Device device);
// Parses "cpu", "cuda" (device 0) or "cuda:N"; throws Error naming `argument` otherwise.
Device parse_device(std::string_view text, std::string_view argument = "device");

// What the build and the machine offer.
bool cuda_compiled();  // was the CUDA backend built?

struct CudaDeviceInfo {
  int index = 0;
  std::string name;
  std::size_t total_memory = 0;  // bytes
  int compute_major = 0;
  int compute_minor = 0;
  int multiprocessors = 0;
};

// The CUDA devices present; empty when the backend is not built or no device/driver is
// found, in which case `why_none` (if given) receives a one-line reason.
std::vector<CudaDeviceInfo> cuda_devices(std::string* why_none = nullptr);
int cuda_device_count();  // 0 when none (never throws)
// The properties of CUDA device `index`, queried once per process and kept (the query
// takes about a millisecond: kernels that choose a path by device look here). Throws Error
// when there is no such device.
const CudaDeviceInfo& cuda_device_info(int index);

// Throws Error unless `device` exists (the CUDA backend is built and the index is valid).
void require_device_available(Device device, std::string_view argument = "device");

}  // namespace longnet
