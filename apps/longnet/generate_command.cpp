// `longnet generate`: text from a LongNetLM checkpoint written by `longnet train`: the
// prompt's bytes go through the model's bounded KV cache (memory bounded by the segment
// lengths), then new bytes are sampled (temperature, top-k, top-p, seeded) and printed as
// they come. Timing (tokens/s) and the cache's size go to stderr.
#include <fstream>
#include <iostream>
#include <iterator>

#include "commands.hpp"
#include "corpus.hpp"
#include "longnet/model/data.hpp"
#include "longnet/model/generation.hpp"
#include "measure.hpp"

namespace longnet::cli {
namespace {

struct GenerateOptions {
  std::string checkpoint = "longnet-run/checkpoint.safetensors";
  std::string prompt = "And God said";
  std::string prompt_file;
  std::int64_t tokens = 200;
  double temperature = 0.8;
  std::int64_t top_k = 0;
  double top_p = 0.95;
  std::uint64_t seed = 0;
  std::string device = "cpu";
};

int run_generate(const GenerateOptions& o) {
  const Device device = parse_device(o.device, "--device");
  require_device_available(device, "--device");
  const std::unique_ptr<model::LongNetLM> lm = load_byte_model(o.checkpoint, device, "longnet generate");
  std::string prompt = o.prompt;
  if (!o.prompt_file.empty()) {
    std::ifstream in(o.prompt_file, std::ios::binary);
    require(in.good(), "--prompt-file ", o.prompt_file, ": cannot open it");
    prompt.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  }
  require(!prompt.empty(), "--prompt is empty: give at least one byte");
  const model::SamplingConfig sampling{o.temperature, o.top_k, o.top_p, o.seed};
  sampling.validate();
  std::cout << prompt << std::flush;
  const model::GenerationResult result = model::generate(
      *lm, model::byte_tokens(prompt), o.tokens, sampling,
      [](std::int32_t token) { std::cout << static_cast<char>(static_cast<unsigned char>(token)) << std::flush; });
  std::cout << "\n";
  std::cerr << "generate: " << result.tokens.size() << " tokens in " << format_ms(result.generation_seconds * 1e3)
            << " ms (" << result.tokens_per_second() << " tokens/s); prompt of " << prompt.size() << " tokens in "
            << format_ms(result.prompt_seconds * 1e3) << " ms; KV cache "
            << format_bytes(static_cast<double>(result.cache_bytes)) << " (bounded by the segment lengths)\n";
  return 0;
}

}  // namespace

Command add_generate_command(CLI::App& app) {
  auto options = std::make_shared<GenerateOptions>();
  CLI::App* c = app.add_subcommand("generate", "Generate text with a LongNetLM checkpoint (KV cache, sampling)");
  c->add_option("--checkpoint", options->checkpoint, "Checkpoint written by `longnet train`")->capture_default_str();
  c->add_option("--prompt", options->prompt, "Prompt text")->capture_default_str();
  c->add_option("--prompt-file", options->prompt_file, "Read the prompt from a file instead");
  c->add_option("--tokens", options->tokens, "Bytes to generate")->capture_default_str();
  c->add_option("--temperature", options->temperature, "Sampling temperature (0: greedy)")->capture_default_str();
  c->add_option("--top-k", options->top_k, "Sample from the k most likely bytes (0: all)")->capture_default_str();
  c->add_option("--top-p", options->top_p, "Nucleus sampling mass")->capture_default_str();
  c->add_option("--seed", options->seed, "Sampling seed")->capture_default_str();
  c->add_option("--device", options->device, "cpu or cuda[:N]")->capture_default_str();
  return {c, [options] { return run_generate(*options); }};
}

}  // namespace longnet::cli
