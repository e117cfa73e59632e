// Finite-difference gradient checks in fp64 for modules with explicit backward.
//
// A check takes a forward function f (re-run on every perturbation), a fixed random
// upstream gradient g, and the analytic gradients the module's backward produced for the
// scalar L = sum(f() * g). Each probed element x_i of a tensor is perturbed by +-h and the
// central difference (L(x_i + h) - L(x_i - h)) / 2h compared with the analytic value.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "longnet/core/tensor.hpp"

namespace longnet::testing {

// L = sum(y * g) in double.
inline double weighted_sum(const Tensor& y, const Tensor& g) {
  const std::vector<double> a = y.to_vector<double>(), b = g.to_vector<double>();
  EXPECT_EQ(a.size(), b.size());
  double s = 0;
  for (std::size_t i = 0; i < std::min(a.size(), b.size()); ++i) s += a[i] * b[i];
  return s;
}

struct GradientProbe {
  std::string name;
  Tensor value;     // contiguous f64 CPU tensor, perturbed in place
  Tensor analytic;  // its gradient from backward
};

// Compares analytic and numeric gradients of up to `max_elements` elements per probe (all
// of them when the tensor is small, else a seeded sample). Returns the largest error
// relative to max(1, |numeric|) so callers can print it.
inline double check_gradients(const std::function<Tensor()>& forward, const Tensor& upstream,
                              const std::vector<GradientProbe>& probes, double tolerance = 1e-6,
                              std::int64_t max_elements = 48, double step = 1e-5) {
  double worst = 0;
  std::mt19937_64 rng(12345);
  for (const GradientProbe& probe : probes) {
    SCOPED_TRACE(probe.name);
    if (!probe.value.is_contiguous() || probe.value.dtype() != DType::f64 || !probe.value.device().is_cpu()) {
      ADD_FAILURE() << probe.name << ": probes must be contiguous f64 CPU tensors";
      continue;
    }
    EXPECT_EQ(probe.analytic.shape(), probe.value.shape()) << probe.name;
    const std::vector<double> analytic = probe.analytic.to_vector<double>();
    double* x = probe.value.data<double>();
    const std::int64_t n = probe.value.numel();
    std::vector<std::int64_t> indices;
    if (n <= max_elements) {
      for (std::int64_t i = 0; i < n; ++i) indices.push_back(i);
    } else {
      for (std::int64_t i = 0; i < max_elements; ++i) {
        indices.push_back(std::uniform_int_distribution<std::int64_t>(0, n - 1)(rng));
      }
    }
    for (std::int64_t i : indices) {
      const double saved = x[i];
      x[i] = saved + step;
      const double plus = weighted_sum(forward(), upstream);
      x[i] = saved - step;
      const double minus = weighted_sum(forward(), upstream);
      x[i] = saved;
      const double numeric = (plus - minus) / (2 * step);
      const double a = analytic[static_cast<std::size_t>(i)];
      const double error = std::abs(numeric - a) / std::max(1.0, std::abs(numeric));
      worst = std::max(worst, error);
      EXPECT_LE(error, tolerance) << probe.name << "[" << i << "]: analytic " << a << " numeric " << numeric;
    }
  }
  return worst;
}

}  // namespace longnet::testing
