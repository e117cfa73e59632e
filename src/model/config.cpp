// Model configurations: validation, layer configurations, JSON (config.hpp).
#include "longnet/model/config.hpp"

#include <cmath>
#include <nlohmann/json.hpp>
#include <set>

#include "longnet/kernels/dilation.hpp"

namespace longnet::model {

void LongNetLMConfig::validate() const {
  require(vocab_size >= 1, "vocab_size = ", vocab_size, ": must be >= 1");
  require(vocab_size <= INT32_MAX, "vocab_size = ", vocab_size, ": must fit int32 token ids");
  require(d_model >= 1, "d_model = ", d_model, ": must be >= 1");
  require(heads >= 1, "heads = ", heads, ": must be >= 1");
  require(layers >= 1, "layers = ", layers, ": must be >= 1");
  require(ffn_dim >= 1, "ffn_dim = ", ffn_dim, ": must be >= 1");
  require(dtype == DType::f32 || dtype == DType::f64, "dtype = ", dtype_name(dtype), ": must be f32 or f64");
  require(compute_dtype == dtype || (dtype == DType::f32 && compute_dtype == DType::bf16),
          "compute_dtype = ", dtype_name(compute_dtype), " with dtype = ", dtype_name(dtype),
          ": must equal dtype, or be bf16 with dtype f32 (mixed precision, CUDA only)");
  layer_config(1.0, false).validate();  // d_model % heads, kv_heads, patterns, positional, dropout
}

void LongNetConfig::validate() const {
  LongNetLMConfig::validate();
  require(encoder_layers >= 1, "encoder_layers = ", encoder_layers, ": must be >= 1");
}

nn::TransformerLayerConfig LongNetLMConfig::layer_config(double gamma, bool cross_attention) const {
  nn::TransformerLayerConfig c;
  c.attention.d_model = d_model;
  c.attention.heads = heads;
  c.attention.kv_heads = kv_heads;
  c.attention.attention.segment_lengths = segment_lengths;
  c.attention.attention.dilation_rates = dilation_rates;
  c.attention.attention.mode = mode;
  c.attention.positional = {positional, rope_base, xpos_scale_base};
  c.attention.fused_qkv = fused_qkv;
  c.attention.bias = bias;
  c.attention.sub_layer_norm = sub_layer_norm;
  c.attention.layer_norm_eps = layer_norm_eps;
  c.attention.gamma = gamma;
  c.ffn = {.d_model = d_model,
           .ffn_dim = ffn_dim,
           .bias = bias,
           .sub_layer_norm = sub_layer_norm,
           .layer_norm_eps = layer_norm_eps,
           .dropout = dropout,
           .activation_dropout = activation_dropout,
           .gamma = gamma};
  c.dropout = dropout;
  c.layer_norm_eps = layer_norm_eps;
  c.cross_attention = cross_attention;
  return c;
}

nn::ParameterOptions LongNetLMConfig::parameter_options(Device device, std::uint64_t seed) const {
  nn::ParameterOptions o;
  o.dtype = dtype;
  o.compute_dtype = compute_dtype;
  o.device = device;
  o.seed = seed;
  return o;
}

namespace {

using Json = nlohmann::json;

Json common_json(const LongNetLMConfig& c) {
  return Json{{"vocab_size", c.vocab_size},
              {"d_model", c.d_model},
              {"heads", c.heads},
              {"kv_heads", c.kv_heads},
              {"layers", c.layers},
              {"ffn_dim", c.ffn_dim},
              {"segment_lengths", c.segment_lengths},
              {"dilation_rates", c.dilation_rates},
              {"mode", std::string(to_string(c.mode))},
              {"positional", std::string(nn::to_string(c.positional))},
              {"rope_base", c.rope_base},
              {"xpos_scale_base", c.xpos_scale_base},
              {"dropout", c.dropout},
              {"activation_dropout", c.activation_dropout},
              {"tie_embeddings", c.tie_embeddings},
              {"fused_qkv", c.fused_qkv},
              {"bias", c.bias},
              {"sub_layer_norm", c.sub_layer_norm},
              {"scale_embedding", c.scale_embedding},
              {"layer_norm_eps", c.layer_norm_eps},
              {"dtype", std::string(dtype_name(c.dtype))},
              {"compute_dtype", std::string(dtype_name(c.compute_dtype))}};
}

Json parse_object(std::string_view text, std::string_view source) {
  Json json;
  try {
    json = Json::parse(text);
  } catch (const Json::exception& e) {
    throw Error(str(source, ": the model configuration is not valid JSON (", e.what(), ")"));
  }
  require(json.is_object(), source, ": the model configuration must be a JSON object");
  return json;
}

// Reads the fields of `json` into `c`, rejecting unknown keys and wrong types.
class Reader {
 public:
  Reader(const Json& json, std::string_view source, std::set<std::string> extra_keys) : json_(json), source_(source) {
    static const std::set<std::string> common = {"architecture",
                                                 "vocab_size",
                                                 "d_model",
                                                 "heads",
                                                 "kv_heads",
                                                 "layers",
                                                 "ffn_dim",
                                                 "segment_lengths",
                                                 "dilation_rates",
                                                 "mode",
                                                 "positional",
                                                 "rope_base",
                                                 "xpos_scale_base",
                                                 "dropout",
                                                 "activation_dropout",
                                                 "tie_embeddings",
                                                 "fused_qkv",
                                                 "bias",
                                                 "sub_layer_norm",
                                                 "scale_embedding",
                                                 "layer_norm_eps",
                                                 "dtype",
                                                 "compute_dtype"};
    for (const auto& [key, value] : json.items()) {
      require(common.count(key) || extra_keys.count(key), source, ": unknown model configuration key '", key, "'");
    }
  }

  template <class T>
  void read(const char* key, T& out) const {
    if (!json_.contains(key)) return;  // keeps the default
    const Json& v = json_.at(key);
    try {
      if constexpr (std::is_same_v<T, bool>) {
        require(v.is_boolean(), "");
      } else if constexpr (std::is_integral_v<T>) {
        require(v.is_number_integer(), "");
      } else if constexpr (std::is_floating_point_v<T>) {
        require(v.is_number(), "");
      }
      out = v.get<T>();
    } catch (const std::exception&) {
      throw Error(str(source_, ": model configuration key '", key, "' has the wrong type (", v.dump(), ")"));
    }
  }

  void read_list(const char* key, std::vector<std::int64_t>& out) const {
    if (!json_.contains(key)) return;
    const Json& v = json_.at(key);
    require(v.is_array(), source_, ": model configuration key '", key, "' must be a list of integers");
    out.clear();
    for (const Json& e : v) {
      require(e.is_number_integer(), source_, ": model configuration key '", key, "' must be a list of integers");
      out.push_back(e.get<std::int64_t>());
    }
  }

  std::string read_string(const char* key, const std::string& fallback) const {
    if (!json_.contains(key)) return fallback;
    const Json& v = json_.at(key);
    require(v.is_string(), source_, ": model configuration key '", key, "' must be a string");
    return v.get<std::string>();
  }

 private:
  const Json& json_;
  std::string source_;
};

void read_common(const Reader& r, LongNetLMConfig& c, std::string_view source) {
  r.read("vocab_size", c.vocab_size);
  r.read("d_model", c.d_model);
  r.read("heads", c.heads);
  r.read("kv_heads", c.kv_heads);
  r.read("layers", c.layers);
  r.read("ffn_dim", c.ffn_dim);
  r.read_list("segment_lengths", c.segment_lengths);
  r.read_list("dilation_rates", c.dilation_rates);
  try {
    c.mode = parse_dilated_mode(r.read_string("mode", std::string(to_string(c.mode))), "mode");
    c.positional = nn::parse_positional_encoding(r.read_string("positional", "xpos"), "positional");
    c.dtype = parse_dtype(r.read_string("dtype", "f32"), "dtype");
    c.compute_dtype = parse_dtype(r.read_string("compute_dtype", std::string(dtype_name(c.dtype))), "compute_dtype");
  } catch (const Error& e) {
    throw Error(str(source, ": ", e.what()));
  }
  r.read("rope_base", c.rope_base);
  r.read("xpos_scale_base", c.xpos_scale_base);
  r.read("dropout", c.dropout);
  r.read("activation_dropout", c.activation_dropout);
  r.read("tie_embeddings", c.tie_embeddings);
  r.read("fused_qkv", c.fused_qkv);
  r.read("bias", c.bias);
  r.read("sub_layer_norm", c.sub_layer_norm);
  r.read("scale_embedding", c.scale_embedding);
  r.read("layer_norm_eps", c.layer_norm_eps);
}

template <class Config>
Config validated(Config c, std::string_view source) {
  try {
    c.validate();
  } catch (const Error& e) {
    throw Error(str(source, ": invalid model configuration: ", e.what()));
  }
  return c;
}

}  // namespace

std::string uncovered_offsets_note(const LongNetLMConfig& config) {
  if (config.mode != DilatedMode::longnet || config.heads <= 0) return "";
  std::string note;
  const auto patterns = config.segment_lengths.size();
  for (std::size_t i = 0; i < patterns && i < config.dilation_rates.size(); ++i) {
    const std::int64_t rate = config.dilation_rates[i];
    std::set<std::int64_t> offsets;
    for (std::int64_t h = 0; h < config.heads; ++h) {
      offsets.insert(kernels::pattern_offset(config.mode, static_cast<std::int64_t>(i),
                                             static_cast<std::int64_t>(patterns), rate, h, config.heads));
    }
    if (static_cast<std::int64_t>(offsets.size()) == rate) continue;
    note += str(note.empty() ? "" : "; ", "pattern ", i, " (segment ", config.segment_lengths[i], ", dilation ", rate,
                ") gives heads to ", offsets.size(), " of its ", rate, " offsets");
  }
  if (note.empty()) return note;
  return str(note, ": the rows at the other offsets never attend through it (LongNet mode gives head h offset ",
             "floor(h / ceil(heads / rate))), and the model learns to reach across it slowly if at all; dilation rates ",
             "that divide the ", config.heads, " heads give every row a head");
}

std::string to_json(const LongNetLMConfig& config) {
  Json json = common_json(config);
  json["architecture"] = "longnet_lm";
  return json.dump();
}

std::string to_json(const LongNetConfig& config) {
  Json json = common_json(config);
  json["architecture"] = "longnet";
  json["encoder_layers"] = config.encoder_layers;
  return json.dump();
}

std::string architecture_of(std::string_view json, std::string_view source) {
  const Json parsed = parse_object(json, source);
  require(parsed.contains("architecture") && parsed.at("architecture").is_string(), source,
          ": the model configuration has no \"architecture\" string");
  return parsed.at("architecture").get<std::string>();
}

LongNetLMConfig lm_config_from_json(std::string_view json, std::string_view source) {
  const Json parsed = parse_object(json, source);
  const Reader reader(parsed, source, {});
  const std::string architecture = reader.read_string("architecture", "longnet_lm");
  require(architecture == "longnet_lm", source, ": architecture = '", architecture, "': expected longnet_lm");
  LongNetLMConfig c;
  read_common(reader, c, source);
  return validated(c, source);
}

LongNetConfig longnet_config_from_json(std::string_view json, std::string_view source) {
  const Json parsed = parse_object(json, source);
  const Reader reader(parsed, source, {"encoder_layers"});
  const std::string architecture = reader.read_string("architecture", "longnet");
  require(architecture == "longnet", source, ": architecture = '", architecture, "': expected longnet");
  LongNetConfig c;
  read_common(reader, c, source);
  reader.read("encoder_layers", c.encoder_layers);
  return validated(c, source);
}

}  // namespace longnet::model
