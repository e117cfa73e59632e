// Training a LongNetLM from C++ (the "From C++" section of docs/guides/training.md, made
// small enough to run in seconds on a CPU): byte tokens of a text, a Trainer with AdamW,
// warmup + cosine and clipping, a checkpoint, the model loaded back from it, evaluation and
// generation with the bounded KV cache. The text is sums written out ("17 + 25 = 42."), so
// what the model learns is easy to see in its samples. Exits non-zero unless the loss falls
// and the loaded model reproduces the trained one's validation loss bit for bit, so the
// example doubles as a test. On the GPU when there is one (bf16 with f32 master weights).
#include <cmath>
#include <filesystem>
#include <iomanip>
#include <iostream>
#include <longnet/longnet.hpp>
#include <string>

namespace {

using namespace longnet;

// "a + b = c." sentences, a and b from a fixed stream of pseudo-random numbers below 50.
std::string sums_text(int sentences) {
  std::string text;
  std::uint64_t state = 12345;
  const auto next = [&state] {
    state = state * 6364136223846793005ull + 1442695040888963407ull;
    return static_cast<int>((state >> 33) % 50);
  };
  for (int i = 0; i < sentences; ++i) {
    const int a = next(), b = next();
    text += std::to_string(a) + " + " + std::to_string(b) + " = " + std::to_string(a + b) + ". ";
  }
  return text;
}

}  // namespace

int main() {
  try {
    const Device device = cuda_device_count() > 0 ? Device::cuda(0) : Device::cpu();

    // 1. The model: two causal decoder layers, every head on two dilated patterns.
    model::LongNetLMConfig config;  // every field has a default; validate() checks them
    config.d_model = 64;
    config.heads = 4;
    config.kv_heads = 2;  // grouped-query attention
    config.layers = 2;
    config.ffn_dim = 256;
    config.segment_lengths = {16, 64};
    config.dilation_rates = {1, 4};
    if (device.is_cuda()) config.compute_dtype = DType::bf16;  // f32 master weights
    model::LongNetLM lm(config, device, /*seed=*/1);

    // 2. Data and training: 64-byte windows of the text, 5 % held out for validation.
    model::LanguageModelingData data(model::byte_tokens(sums_text(3000)), /*validation_fraction=*/0.05,
                                     /*batch_size=*/8, /*seq_len=*/64, /*seed=*/1);
    model::TrainingConfig training;
    training.steps = 400;
    training.lr = 3e-3;
    training.min_lr = 3e-4;
    training.warmup_steps = 40;
    model::Trainer trainer(lm, data, training);
    const double initial_loss = trainer.evaluate(/*batches=*/4);
    // step(true): the next step is queued before this one's loss is read (on a GPU the device
    // then never waits for the host); none is queued past the last step, so the checkpoint
    // below finds nothing queued ahead.
    while (trainer.step_queued_ahead() || trainer.steps_done() < training.steps) {
      const model::StepResult r = trainer.step(true);  // loss, learning rate, gradient norm, tokens
      if ((r.step + 1) % 100 == 0) {
        std::cout << "step " << r.step + 1 << ": loss " << std::fixed << std::setprecision(3) << r.loss
                  << ", lr " << std::scientific << std::setprecision(2) << r.lr << ", grad norm " << std::fixed
                  << r.grad_norm << "\n";
      }
    }
    const double validation_loss = trainer.evaluate(/*batches=*/4);
    std::cout << "validation loss " << std::setprecision(3) << initial_loss << " -> " << validation_loss
              << " nats a byte\n";

    // 3. A checkpoint (model + optimizer state, written atomically), and the model back
    //    from it: its configuration comes from the file.
    const std::filesystem::path checkpoint = "language_model_example.safetensors";
    trainer.save_checkpoint(checkpoint);
    std::unique_ptr<model::LongNetLM> loaded = model::load_longnet_lm(checkpoint, device);
    const model::Evaluation evaluation = model::evaluate(*loaded, data, /*batches=*/4);
    std::cout << "loaded: loss " << evaluation.loss() << ", next byte right " << std::setprecision(1)
              << 100 * evaluation.token_accuracy() << " %\n";

    // 4. Generation: greedy, against KV caches bounded by the segment lengths.
    const std::string prompt = "12 + 30 = ";
    const model::GenerationResult g =
        model::generate(*loaded, model::byte_tokens(prompt), 40, {.temperature = 0.0, .seed = 1});
    std::cout << "generated: " << prompt << model::bytes_of(g.tokens) << "\n  (" << std::setprecision(0)
              << g.tokens_per_second() << " tokens/s, KV cache " << g.cache_bytes << " bytes)\n";

    // The checks that make this a test: training learnt something (from log 256 = 5.5 to
    // below 2 nats), and the checkpoint holds exactly the trained model.
    bool ok = true;
    if (!(validation_loss < 2.0 && validation_loss < initial_loss - 2.0)) {
      std::cerr << "the validation loss did not fall below 2 nats\n";
      ok = false;
    }
    if (evaluation.loss() != validation_loss) {
      std::cerr << "the loaded model's loss " << std::setprecision(17) << evaluation.loss()
                << " differs from the trained model's " << validation_loss << "\n";
      ok = false;
    }
    return ok ? 0 : 1;
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  }
}
