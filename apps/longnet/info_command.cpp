// `longnet info`: what this build contains and what the machine offers.
#include <iomanip>
#include <iostream>

#include "commands.hpp"
#include "longnet/core/build_info.hpp"
#include "longnet/core/device.hpp"
#include "longnet/core/parallel.hpp"

namespace longnet::cli {

Command add_info_command(CLI::App& app) {
  auto* command = app.add_subcommand("info", "Show build options, CPU threads and CUDA devices");
  return {
      command, [] {
        namespace bi = build_info;
        std::cout << "longnet " << bi::version << " (" << bi::build_type << ", " << bi::cxx_compiler << ")\n";
        std::cout << "build:\n";
        std::cout << "  CUDA backend   "
                  << (bi::with_cuda ? std::string("yes (") + bi::cuda_compiler + ", sm_" + bi::cuda_architectures + ")"
                                    : std::string("no"))
                  << "\n";
        std::cout << "  MPI            " << (bi::with_mpi ? "yes" : "no") << "\n";
        std::cout << "  NCCL           " << (bi::with_nccl ? "yes" : "no") << "\n";
        std::cout << "  OpenBLAS       " << (bi::openblas_openmp ? "OpenMP build" : "yes") << "\n";
        std::cout << "  sanitizers     " << (bi::sanitizers ? "address, undefined" : "no") << "\n";
        std::cout << "CPU threads: " << num_threads() << "\n";
        std::string why_none;
        const auto devices = cuda_devices(&why_none);
        if (devices.empty()) {
          std::cout << "CUDA devices: none (" << why_none << ")\n";
        } else {
          std::cout << "CUDA devices: " << devices.size() << "\n";
          for (const auto& d : devices) {
            std::cout << "  cuda:" << d.index << "  " << d.name << ", " << std::fixed << std::setprecision(1)
                      << static_cast<double>(d.total_memory) / (1024.0 * 1024.0 * 1024.0) << " GiB, compute capability "
                      << d.compute_major << "." << d.compute_minor << ", " << d.multiprocessors << " SMs\n";
          }
        }
        return 0;
      }};
}

}  // namespace longnet::cli
