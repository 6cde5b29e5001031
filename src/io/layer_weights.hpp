// The tensors of one layer in a selector's weights file: "layers.{L}.<suffix>", read as f32.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <string>
#include <vector>

#include "io/safetensors.hpp"

namespace sa {

struct WeightTensor {
  std::string name;
  std::vector<int64_t> shape;
  std::vector<float> values;  // row-major
};

class LayerWeights {
 public:
  // Opens the file and checks that it holds tensors of the layer (SA_ERR_FORMAT otherwise,
  // listing the layers it does hold).
  LayerWeights(const std::string &path, int layer);

  // "layers.{L}.<suffix>" with one of the given ranks. Missing, a non-float dtype or a
  // non-finite value: SA_ERR_FORMAT; another rank: SA_ERR_SHAPE.
  WeightTensor get(const std::string &suffix, std::initializer_list<int> ranks) const;

  // Whether "layers.{L}.<suffix>" is in the file (for optional tensors).
  bool has(const std::string &suffix) const;

  const std::string &path() const { return file_.origin(); }
  int layer() const { return layer_; }

 private:
  Safetensors file_;
  int layer_;
};

// "[2, 16, 128]", for messages.
std::string shape_string(const std::vector<int64_t> &shape);

}  // namespace sa
