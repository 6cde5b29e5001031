// Fits learned-selector projections (head_dim -> d_search) on tinylm-qkv and writes them as a
// safetensors file (layers.{L}.q_proj [H_kv, d, D], layers.{L}.k_proj [H_kv, d, D]).
//
// Method "bilinear" (default): the rank-d matrix M = Wq^T Wk minimising the expected squared
// error of the attention logit, E[(q^T (I - M) k)^2], over queries (second moment Sq, per KV
// head's query group) and keys (covariance Sk, centred: a shift of every key by the same
// vector moves all of a query's logits equally and changes no ranking). With C = Sq^1/2 Sk^1/2
// = U S V^T: Wq = S_d^1/2 U_d^T Sq^-1/2, Wk = S_d^1/2 V_d^T Sk^-1/2.
// Method "pca": Wq = Wk = the top-d principal directions of the centred keys.
// Only tokens before --train-end are used, so late queries are held out.
//
// --indexer also writes lightning-indexer weights built from uncentred projections of rank
// --indexer-d per KV head (default D_SEARCH): two indexer heads per query head forming a leaky
// ReLU of its approximate logit, slope --leak (default 0.1) below 0 (construction and why:
// tools/indexer_fit.hpp). Every layer's indexer is checked on held-out query positions
// (--train-end and later, up to 64 of them; decode setting: window 64, K 64): zero-score share,
// recall and attention mass against exact top-K and against the best single list are printed.
// It is degenerate when more than --max-zero-share (default 0.5) of the scored keys score
// exactly 0 or its recall against the best single list is below --min-recall (default 0.25);
// then it is refitted at twice the rank, up to head_dim, and if still degenerate the tool
// writes nothing and exits with status 1. The check is of the indexer's own scores (its first
// stage; the library rescores the best learned.rescore x K exactly by default), which need a
// larger rank than the learned selector's (measured recall against the best single list at
// K 64, d 16: 0.18-0.42 over tinylm-qkv layers 1-7).
//
// Data: q{L}.npy [Tq, H_q, D] and k{L}.npy [T, H_kv, D]; with Tq < T the queries are the last
// Tq positions (tests/data).
//
//   build/tools/learned_fit DATA_DIR OUT.safetensors D_SEARCH [pca|bilinear] [--indexer]
//       [--indexer-d N] [--leak E] [--train-end N] [--min-recall R] [--max-zero-share Z] [layers...]
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "indexer_fit.hpp"
#include "npy_f16.hpp"

namespace {

void append_f32(std::string &data, const std::vector<float> &v) {
  data.append(reinterpret_cast<const char *>(v.data()), v.size() * 4);  // little-endian host
}

}  // namespace

int main(int argc, char **argv) {
  const char *usage = "usage: %s DATA_DIR OUT.safetensors D_SEARCH [pca|bilinear] [--indexer] [--train-end N] "
                      "[--indexer-d N] [--leak E] [--min-recall R] [--max-zero-share Z] [layers...]\n";
  if (argc < 4) {
    std::fprintf(stderr, usage, argv[0]);
    return 2;
  }
  const std::string dir = argv[1], out_path = argv[2];
  const int d = std::atoi(argv[3]);
  std::string method = "bilinear";
  int64_t train_end = 3072;
  double min_recall = 0.25, max_zero_share = 0.5;
  std::vector<int> layers;
  bool indexer = false;
  int indexer_d = 0;
  double leak = 0.1;
  for (int a = 4; a < argc; ++a) {
    if (!std::strcmp(argv[a], "--indexer")) indexer = true;
    else if (!std::strcmp(argv[a], "pca") || !std::strcmp(argv[a], "bilinear")) method = argv[a];
    else if (!std::strcmp(argv[a], "--train-end") && a + 1 < argc) train_end = std::atoll(argv[++a]);
    else if (!std::strcmp(argv[a], "--indexer-d") && a + 1 < argc) indexer_d = std::atoi(argv[++a]);
    else if (!std::strcmp(argv[a], "--leak") && a + 1 < argc) leak = std::atof(argv[++a]);
    else if (!std::strcmp(argv[a], "--min-recall") && a + 1 < argc) min_recall = std::atof(argv[++a]);
    else if (!std::strcmp(argv[a], "--max-zero-share") && a + 1 < argc) max_zero_share = std::atof(argv[++a]);
    else if (argv[a][0] >= '0' && argv[a][0] <= '9') layers.push_back(std::atoi(argv[a]));
    else {
      std::fprintf(stderr, usage, argv[0]);
      return 2;
    }
  }
  if (layers.empty()) layers = {1, 3, 5, 7};
  if (d < 1 || indexer_d < 0) {
    std::fprintf(stderr, "D_SEARCH and --indexer-d must be >= 1\n");
    return 2;
  }

  std::string header = "{", data;
  std::vector<std::string> refused;
  for (int L : layers) {
    const NpyF16 q = read_npy_f16(dir + "/q" + std::to_string(L) + ".npy");
    const NpyF16 k = read_npy_f16(dir + "/k" + std::to_string(L) + ".npy");
    if (q.shape.size() != 3 || k.shape.size() != 3 || q.shape[2] != k.shape[2] || k.shape[1] < 1 ||
        q.shape[1] % k.shape[1] != 0 || q.shape[0] > k.shape[0] || d > k.shape[2] ||
        indexer_d > k.shape[2]) {
      std::fprintf(stderr, "layer %d: q [Tq, H_q, D] and k [T, H_kv, D] with Tq <= T, H_q a multiple of H_kv and "
                   "D_SEARCH, --indexer-d <= D expected\n", L);
      return 1;
    }
    fit::Layer layer;
    layer.q = q.values.data(), layer.k = k.values.data();
    layer.T = k.shape[0], layer.Tq = q.shape[0], layer.q_pos0 = k.shape[0] - q.shape[0];
    layer.Hq = int(q.shape[1]), layer.Hkv = int(k.shape[1]), layer.D = int(k.shape[2]);
    const int Hkv = layer.Hkv, D = layer.D;
    const int64_t T = std::min<int64_t>(train_end, layer.T);
    const fit::Projections p = fit::fit_projections(layer, d, method, train_end, true);
    auto add = [&](const std::string &name, const std::vector<int64_t> &shape, const std::vector<float> &v) {
      const size_t b = data.size();
      append_f32(data, v);
      std::string dims;
      for (int64_t x : shape) dims += (dims.empty() ? "" : ",") + std::to_string(x);
      if (header.size() > 1) header += ",";
      header += "\"layers." + std::to_string(L) + "." + name + "\":{\"dtype\":\"F32\",\"shape\":[" + dims +
                "],\"data_offsets\":[" + std::to_string(b) + "," + std::to_string(data.size()) + "]}";
    };
    add("q_proj", {Hkv, d, D}, p.wq);
    add("k_proj", {Hkv, d, D}, p.wk);
    std::printf("layer %d: %s, d_search %d, fitted on tokens [0, %lld)\n", L, method.c_str(), d, (long long)T);
    if (!indexer) continue;
    // Fit, check on held-out queries, and refit at twice the rank (up to D) while degenerate.
    constexpr int64_t kWindow = 64, kCheckK = 64, kCheckQueries = 64;
    const int64_t first = std::max(train_end, layer.q_pos0), span = layer.T - first;
    std::vector<int64_t> positions;
    for (int64_t i = 0; i < std::min(span, kCheckQueries); ++i)
      positions.push_back(first + i * span / std::min(span, kCheckQueries));
    fit::IndexerWeights w;
    std::string why;
    for (int d_index = indexer_d > 0 ? indexer_d : d;; d_index = std::min(2 * d_index, D)) {
      w = fit::build_indexer(layer, fit::fit_projections(layer, d_index, method, train_end, false), leak, train_end);
      const fit::IndexerCheck c = fit::check_indexer(w, layer, positions, kCheckK, kWindow);
      std::printf("  indexer d %d, checked on %lld held-out queries (K %lld, window %lld): zero scores %.1f%%, "
                  "recall vs exact %.3f, vs best single list %.3f; mass exact %.4f, best single list %.4f, "
                  "indexer %.4f\n", d_index, (long long)c.queries, (long long)kCheckK, (long long)kWindow,
                  100 * c.zero_share, c.recall_exact, c.recall_one_list, c.mass_exact, c.mass_one_list,
                  c.mass_indexer);
      why = fit::degenerate_reason(c, max_zero_share, min_recall);
      if (why.empty() || d_index == D) break;
      std::printf("  degenerate (%s): refitting at d %d\n", why.c_str(), std::min(2 * d_index, D));
    }
    add("indexer.q_proj", {w.n_heads, w.d_index, w.in_q}, w.q_proj);
    add("indexer.head_weights", {w.n_heads, w.in_q}, w.head_weights);
    add("indexer.head_bias", {w.n_heads}, w.head_bias);
    add("indexer.k_proj", {w.d_index, w.in_k}, w.k_proj);
    if (!why.empty()) refused.push_back("layer " + std::to_string(L) + ": " + why);
  }
  if (!refused.empty()) {  // nothing written: a degenerate indexer would select by tie order
    for (const std::string &r : refused) std::fprintf(stderr, "degenerate indexer, %s\n", r.c_str());
    std::fprintf(stderr, "refusing to write %s\n", out_path.c_str());
    return 1;
  }
  header += "}";
  while (header.size() % 8) header += ' ';
  FILE *f = std::fopen(out_path.c_str(), "wb");
  if (!f) { std::fprintf(stderr, "cannot write %s\n", out_path.c_str()); return 1; }
  uint64_t n = header.size();
  unsigned char len[8];
  for (int i = 0; i < 8; ++i) len[i] = (unsigned char)(n >> (8 * i));
  bool ok = std::fwrite(len, 1, 8, f) == 8;
  ok = ok && std::fwrite(header.data(), 1, header.size(), f) == header.size();
  ok = ok && std::fwrite(data.data(), 1, data.size(), f) == data.size();
  ok = std::fclose(f) == 0 && ok;
  if (!ok) {
    std::fprintf(stderr, "cannot write %s\n", out_path.c_str());
    std::remove(out_path.c_str());
    return 1;
  }
  std::printf("wrote %s\n", out_path.c_str());
  return 0;
}
