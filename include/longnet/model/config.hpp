// The configurations of LongNet's language models, validated (DESIGN 6) and written to /
// read from JSON (checkpoint metadata).
//
// LongNetLMConfig: decoder-only (embedding, `layers` decoder layers, final LayerNorm, LM
// head). LongNetConfig adds `encoder_layers` for the encoder-decoder model (`layers` are
// then the decoder's). Every attention uses the same dilated patterns; decoder
// self-attention is causal, the encoder's and the cross-attention are not.
// MAGNETO's initialisation scale gamma (torchscale with subln): sqrt(log 2L) for a
// decoder-only model; sqrt(log 3L_dec) for the decoder and sqrt(log(3L_dec) log(2L_enc)/3)
// for the encoder of an encoder-decoder model; applied to v_proj, out_proj, fc1 and fc2.
// Mixed precision (CUDA): dtype f32 with compute_dtype bf16 keeps f32 master weights,
// gradients and AdamW state, and computes the step in bf16 (nn/parameter.hpp).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "longnet/attention/dilated_attention.hpp"
#include "longnet/nn/positional.hpp"
#include "longnet/nn/transformer_layers.hpp"

namespace longnet::model {

struct LongNetLMConfig {
  std::int64_t vocab_size = 256;
  std::int64_t d_model = 256;
  std::int64_t heads = 4;
  std::int64_t kv_heads = 0;  // 0: equal to heads
  std::int64_t layers = 4;
  std::int64_t ffn_dim = 1024;
  std::vector<std::int64_t> segment_lengths{64, 128, 256};
  std::vector<std::int64_t> dilation_rates{1, 2, 4};
  DilatedMode mode = DilatedMode::longnet;
  nn::PositionalEncoding positional = nn::PositionalEncoding::xpos;
  double rope_base = 10000.0;
  double xpos_scale_base = 512.0;
  double dropout = 0.0;
  double activation_dropout = 0.0;
  bool tie_embeddings = false;
  bool fused_qkv = false;
  bool bias = true;
  bool sub_layer_norm = true;
  bool scale_embedding = false;  // multiply embeddings by sqrt(d_model) (torchscale: off)
  double layer_norm_eps = 1e-5;
  DType dtype = DType::f32;          // parameters (master weights), gradients, optimizer state
  DType compute_dtype = DType::f32;  // activations and GEMM weights: dtype, or bf16 on CUDA with f32 dtype

  void validate() const;
  // A decoder layer's configuration with MAGNETO gamma `gamma`.
  nn::TransformerLayerConfig layer_config(double gamma, bool cross_attention) const;
  nn::ParameterOptions parameter_options(Device device, std::uint64_t seed) const;
};

struct LongNetConfig : LongNetLMConfig {
  std::int64_t encoder_layers = 4;
  void validate() const;
};

// A note naming the patterns whose offsets some rows get no head for, or "" when every row
// takes part in every pattern. In LongNet mode head h takes offset floor(h / ceil(H / r_i))
// (DESIGN 2.1), so a rate above the heads, or one that does not divide them, leaves offsets
// without a head: the rows there never attend through that pattern. Such a model is valid
// but learns to reach across the pattern slowly, if at all (the passkey task at dilation 16
// with 4 or 8 heads learnt nothing; docs/guides/training.md). Head-groups mode gives each
// pattern one offset by definition and gets no note.
std::string uncovered_offsets_note(const LongNetLMConfig& config);

// JSON with every field; "architecture" is "longnet_lm" or "longnet".
std::string to_json(const LongNetLMConfig& config);
std::string to_json(const LongNetConfig& config);
// The architecture named in a JSON configuration (`source` names it in errors).
std::string architecture_of(std::string_view json, std::string_view source);
// Parse and validate; unknown keys and wrong types are errors naming `source` and the key.
LongNetLMConfig lm_config_from_json(std::string_view json, std::string_view source);
LongNetConfig longnet_config_from_json(std::string_view json, std::string_view source);

}  // namespace longnet::model
