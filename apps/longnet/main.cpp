// `longnet`: the command-line program (DESIGN section 4). Errors from the library are
// printed as one line and give exit status 1; usage errors give CLI11's status.
#include <iostream>
#include <vector>

#include "commands.hpp"
#include "longnet/core/build_info.hpp"
#include "longnet/core/error.hpp"

int main(int argc, char** argv) {
  CLI::App app{"longnet: LongNet's dilated attention, block-sparse and dense attention, and the LongNet model"};
  app.set_version_flag("--version", std::string("longnet ") + longnet::build_info::version);
  app.require_subcommand(1);
  app.fallthrough();

  const std::vector<longnet::cli::Command> commands = {
      longnet::cli::add_info_command(app),     longnet::cli::add_plan_command(app),
      longnet::cli::add_attn_command(app),     longnet::cli::add_mask_command(app),
      longnet::cli::add_bench_command(app),    longnet::cli::add_train_command(app),
      longnet::cli::add_generate_command(app), longnet::cli::add_eval_command(app),
  };

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& error) {
    return app.exit(error);
  }
  try {
    for (const auto& command : commands) {
      if (command.subcommand->parsed()) return command.run();
    }
  } catch (const longnet::Error& error) {
    std::cerr << "longnet: error: " << error.what() << "\n";
    return 1;
  } catch (const std::exception& error) {
    std::cerr << "longnet: unexpected error: " << error.what() << "\n";
    return 1;
  }
  return 0;
}
