// Timing and the units reports use: wall-clock time of work on a device (the CPU, or a
// CUDA device synchronised before and after, so the time covers the kernels and not just
// their launch), medians, and human-readable milliseconds, FLOP rates and byte counts.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "longnet/core/device.hpp"

namespace longnet::cli {

// Waits for all work queued on `device` (nothing to wait for on the CPU).
void wait_for(Device device);

// Milliseconds that `work` takes on `device`, from an idle device to an idle device.
double time_ms(Device device, const std::function<void()>& work);

// The same, also giving the milliseconds until `work` returned, before the wait: on a CUDA
// device, the host's time to queue the work (plus any synchronisation inside it). When it
// is close to the total, the device waited for the host: the work is launch-bound.
double time_ms(Device device, const std::function<void()>& work, double& host_ms);

// The median of a non-empty list (the mean of the middle two for even sizes).
double median(std::vector<double> values);

// "12.345" with sensible precision for a time in milliseconds.
std::string format_ms(double ms);
// A FLOP rate in the given unit ("GFLOP/s": 1e9, "TFLOP/s": 1e12), e.g. "78.2".
std::string format_rate(double flop_per_second, double unit);
// Bytes as "512 B", "3.2 MiB", "1.50 GiB".
std::string format_bytes(double bytes);

// Whether stderr is a terminal (progress lines are drawn only then).
bool stderr_is_terminal();

}  // namespace longnet::cli
