#include "io/layer_weights.hpp"

#include <cmath>
#include <cstdio>
#include <set>

#include "core/error.hpp"

namespace sa {

std::string shape_string(const std::vector<int64_t> &shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

LayerWeights::LayerWeights(const std::string &path, int layer) : file_(Safetensors::open(path)), layer_(layer) {
  const std::string prefix = "layers." + std::to_string(layer) + ".";
  std::set<long long> present;
  for (const auto &t : file_.tensors()) {
    if (t.name.compare(0, prefix.size(), prefix) == 0) return;
    long long l;
    int used = 0;
    if (std::sscanf(t.name.c_str(), "layers.%lld.%n", &l, &used) == 1 && used > 0) present.insert(l);
  }
  std::string list;
  for (long long l : present) {
    if (list.size() > 200) { list += ", ..."; break; }
    list += (list.empty() ? "" : ", ") + std::to_string(l);
  }
  fail(SA_ERR_FORMAT, "%s: no tensors for layer %d (\"%s*\"); layers in the file: %s", path.c_str(), layer,
       prefix.c_str(), list.empty() ? "none" : list.c_str());
}

bool LayerWeights::has(const std::string &suffix) const {
  return file_.find("layers." + std::to_string(layer_) + "." + suffix) != nullptr;
}

WeightTensor LayerWeights::get(const std::string &suffix, std::initializer_list<int> ranks) const {
  WeightTensor w;
  w.name = "layers." + std::to_string(layer_) + "." + suffix;
  const SafetensorsEntry *t = file_.find(w.name);
  if (!t) fail(SA_ERR_FORMAT, "%s: no tensor \"%s\"", path().c_str(), w.name.c_str());
  bool rank_ok = false;
  std::string expected;
  for (int r : ranks) {
    rank_ok = rank_ok || int(t->shape.size()) == r;
    expected += (expected.empty() ? "" : " or ") + std::to_string(r);
  }
  if (!rank_ok)
    fail(SA_ERR_SHAPE, "%s: tensor \"%s\" has shape %s; expected rank %s", path().c_str(), w.name.c_str(),
         shape_string(t->shape).c_str(), expected.c_str());
  w.shape = t->shape;
  w.values = file_.read_f32(*t);
  for (size_t i = 0; i < w.values.size(); ++i)
    if (!std::isfinite(w.values[i]))
      fail(SA_ERR_FORMAT, "%s: tensor \"%s\" holds a non-finite value at element %zu", path().c_str(), w.name.c_str(), i);
  return w;
}

}  // namespace sa
