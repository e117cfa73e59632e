// The subcommands of the `longnet` program. Each add_*_command registers its options on
// the CLI11 app and returns the subcommand with the function that runs it; no library
// logic lives in apps/.
#pragma once

#include <CLI/CLI.hpp>
#include <functional>

namespace longnet::cli {

struct Command {
  CLI::App* subcommand = nullptr;
  std::function<int()> run;
};

Command add_info_command(CLI::App& app);
Command add_plan_command(CLI::App& app);
Command add_attn_command(CLI::App& app);
Command add_mask_command(CLI::App& app);
Command add_bench_command(CLI::App& app);
Command add_bench_train(CLI::App& bench);  // `longnet bench train`, under add_bench_command's `bench`
Command add_bench_sequence_parallel(CLI::App& bench);  // `longnet bench sequence-parallel`
Command add_train_command(CLI::App& app);
Command add_generate_command(CLI::App& app);
Command add_eval_command(CLI::App& app);

}  // namespace longnet::cli
