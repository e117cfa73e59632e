// A model of your own from the nn layers, trained by the library's Trainer: a small
// attention-only language model (embedding, two pre-norm blocks of causal multi-head dilated
// attention with a residual, a final LayerNorm and a linear head). It implements
// model::LanguageModel — queue_forward_loss and backward, each layer's backward called by
// hand in reverse order — which is all the Trainer (AdamW, schedule, clipping, gradient
// accumulation, checkpoints) needs. Checks the hand-written backward against central
// differences of the loss on a few parameters, trains for a few seconds and exits non-zero
// unless both hold, so the example doubles as a test (CPU, f64 for the check, f32 to train).
#include <cmath>
#include <iomanip>
#include <iostream>
#include <longnet/longnet.hpp>
#include <memory>
#include <string>
#include <vector>

namespace {

using namespace longnet;

class AttentionOnlyLM final : public model::LanguageModel {
 public:
  AttentionOnlyLM(std::int64_t d_model, std::int64_t blocks, const nn::ParameterOptions& options)
      : options_(options),
        embed_("embed_tokens", model::kByteVocabulary, d_model, /*scale=*/1.0, options),
        final_norm_("layer_norm", d_model, 1e-5, options),
        head_("lm_head", d_model, model::kByteVocabulary, /*bias=*/false, options) {
    nn::MultiheadDilatedAttentionConfig attention;
    attention.d_model = d_model;
    attention.heads = 4;
    attention.kv_heads = 2;
    attention.attention.segment_lengths = {8, 32};  // local, and a dilated reach across the window
    attention.attention.dilation_rates = {1, 4};
    attention.attention.causal = true;  // a language model sees only the past
    for (std::int64_t b = 0; b < blocks; ++b) {
      const std::string name = "blocks." + std::to_string(b);
      norms_.push_back(std::make_unique<nn::LayerNorm>(name + ".norm", d_model, 1e-5, options));
      attention_.push_back(std::make_unique<nn::MultiheadDilatedAttention>(name + ".attn", attention, options));
    }
  }

  // logits = head(norm(x_L)), x_{b+1} = x_b + attn_b(norm_b(x_b)), x_0 = embed(tokens).
  model::PendingLoss queue_forward_loss(const model::Batch& batch, const nn::ForwardContext& context) override {
    Tensor x = embed_.forward(batch.inputs);
    for (std::size_t b = 0; b < attention_.size(); ++b) {
      const Tensor normed = norms_[b]->forward(x);
      x = attention_[b]->forward(normed, context, /*residual=*/&x);
    }
    const Tensor logits = head_.forward(final_norm_.forward(x));
    return loss_.forward(logits, batch.targets);
  }

  // The same chain backwards: each layer returns its input's gradient and adds its
  // parameters' gradients into Parameter::grad.
  void backward(double loss_scale) override {
    Tensor dx = final_norm_.backward(head_.backward(loss_.backward(loss_scale)));
    for (std::size_t b = attention_.size(); b-- > 0;) {
      const Tensor dnormed = attention_[b]->backward(dx);
      dx = norms_[b]->backward(dnormed, /*dresidual=*/&dx);  // + the residual's gradient
    }
    embed_.backward(dx);
  }

  void collect_parameters(std::vector<nn::ParameterPtr>& out) const override {
    embed_.collect_parameters(out);
    for (std::size_t b = 0; b < attention_.size(); ++b) {
      norms_[b]->collect_parameters(out);
      attention_[b]->collect_parameters(out);
    }
    final_norm_.collect_parameters(out);
    head_.collect_parameters(out);
  }
  std::string config_json() const override { return R"({"architecture": "attention_only_example"})"; }
  Device device() const override { return options_.device; }

 private:
  nn::ParameterOptions options_;
  nn::Embedding embed_;
  std::vector<std::unique_ptr<nn::LayerNorm>> norms_;
  std::vector<std::unique_ptr<nn::MultiheadDilatedAttention>> attention_;
  nn::LayerNorm final_norm_;
  nn::Linear head_;
  model::TokenLoss loss_;
};

// Text in which the next byte often depends on one far back: "name: Ada ... name: Ada".
std::string repeating_text(int lines) {
  const char* names[] = {"Ada", "Grace", "Edsger", "Barbara", "Donald", "Frances"};
  std::string text;
  for (int i = 0; i < lines; ++i) {
    const std::string name = names[(i * 7 + i / 3) % 6];
    text += "name: " + name + ", seen " + std::to_string(i % 10) + " times; again, name: " + name + ".\n";
  }
  return text;
}

// The largest relative error of backward's gradient against (L(p + h) - L(p - h)) / 2h on
// a few entries of every parameter (f64: the difference quotient is accurate to ~1e-8).
double gradient_check(AttentionOnlyLM& model, const model::Batch& batch) {
  model.zero_grad();
  model.forward_loss(batch, {});
  model.backward(1.0);
  double worst = 0;
  for (const nn::ParameterPtr& p : model.parameters()) {
    Tensor& value = p->value;
    const std::vector<double> grad = p->grad.to_vector<double>();
    for (std::int64_t i = 0; i < value.numel(); i += std::max<std::int64_t>(1, value.numel() / 3)) {
      double* entry = value.data<double>() + i;
      const double original = *entry, h = 1e-5;
      *entry = original + h;
      const double up = model.forward_loss(batch, {}).loss;
      *entry = original - h;
      const double down = model.forward_loss(batch, {}).loss;
      *entry = original;
      const double numeric = (up - down) / (2 * h), analytic = grad[static_cast<std::size_t>(i)];
      worst = std::max(worst, std::fabs(numeric - analytic) / std::max(1e-6, std::fabs(numeric) + std::fabs(analytic)));
    }
  }
  return worst;
}

}  // namespace

int main() {
  try {
    const std::string text = repeating_text(400);
    bool ok = true;

    // 1. The hand-written backward against finite differences, in f64 on a short batch.
    {
      AttentionOnlyLM model(16, 2, {.dtype = DType::f64, .compute_dtype = DType::f64, .seed = 3});
      model::LanguageModelingData data(model::byte_tokens(text), 0.1, /*batch_size=*/2, /*seq_len=*/24, /*seed=*/3);
      const double worst = gradient_check(model, data.train_batch(0, 0));
      std::cout << "gradient check: largest relative error " << std::scientific << std::setprecision(1) << worst
                << "\n";
      if (!(worst < 1e-5)) {
        std::cerr << "the backward does not match the finite differences\n";
        ok = false;
      }
    }

    // 2. Training it with the library's Trainer, in f32.
    AttentionOnlyLM model(64, 2, {.dtype = DType::f32, .compute_dtype = DType::f32, .seed = 1});
    model::LanguageModelingData data(model::byte_tokens(text), 0.05, /*batch_size=*/8, /*seq_len=*/64, /*seed=*/1);
    model::TrainingConfig training;
    training.steps = 300;
    training.lr = 3e-3;
    training.min_lr = 3e-4;
    training.warmup_steps = 30;
    model::Trainer trainer(model, data, training);
    const double before = trainer.evaluate(4);
    while (trainer.steps_done() < training.steps) {
      const model::StepResult r = trainer.step();
      if ((r.step + 1) % 100 == 0)
        std::cout << "step " << r.step + 1 << ": loss " << std::fixed << std::setprecision(3) << r.loss << "\n";
    }
    const double after = trainer.evaluate(4);
    std::cout << "validation loss " << before << " -> " << after << " nats a byte\n";
    trainer.save_checkpoint("custom_model_example.safetensors");  // names from the layers
    if (!(after < 1.5)) {
      std::cerr << "the validation loss did not fall below 1.5 nats\n";
      ok = false;
    }
    return ok ? 0 : 1;
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  }
}
