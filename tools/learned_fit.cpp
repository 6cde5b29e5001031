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
// --indexer also writes lightning-indexer weights built from the same projections: one indexer
// head per query head j (KV head h = j / G), indexer key z = [Wk_0 k_0; ...; Wk_{H_kv-1} k_{H_kv-1}]
// (d_index = H_kv * d), indexer query u_j = Wq_h q_j placed in KV head h's block, so u_j . z
// approximates q_j . k_h; constant head weights (head_weights zero, head_bias = 1 / the spread of
// head j's approximate logits on training pairs), so the score is sum_j b_j ReLU(approximate
// logit of head j): one list per token for all heads. ReLU and the sum over heads see absolute
// logits, so the indexer's projections come from a second fit with uncentred keys (measured
// better than the centred fit, and than the centred fit with the mean key direction removed).
//
//   build/tools/learned_fit DATA_DIR OUT.safetensors D_SEARCH [pca|bilinear] [--indexer] [--train-end N] [layers...]
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "npy_f16.hpp"

namespace {

using Mat = std::vector<double>;  // n x n row-major

// Symmetric eigendecomposition by cyclic Jacobi rotations: A = V diag(w) V^T, w descending,
// eigenvectors in the columns of V.
void eigh(Mat A, int n, std::vector<double> &w, Mat &V) {
  V.assign(size_t(n * n), 0.0);
  for (int i = 0; i < n; ++i) V[size_t(i * n + i)] = 1;
  for (int sweep = 0; sweep < 60; ++sweep) {
    double off = 0;
    for (int p = 0; p < n; ++p)
      for (int q = p + 1; q < n; ++q) off += A[size_t(p * n + q)] * A[size_t(p * n + q)];
    if (off < 1e-22) break;
    for (int p = 0; p < n; ++p)
      for (int q = p + 1; q < n; ++q) {
        const double apq = A[size_t(p * n + q)];
        if (std::fabs(apq) < 1e-300) continue;
        const double theta = (A[size_t(q * n + q)] - A[size_t(p * n + p)]) / (2 * apq);
        const double t = (theta >= 0 ? 1 : -1) / (std::fabs(theta) + std::sqrt(theta * theta + 1));
        const double c = 1 / std::sqrt(t * t + 1), s = t * c;
        for (int k = 0; k < n; ++k) {  // A <- J^T A J
          const double akp = A[size_t(k * n + p)], akq = A[size_t(k * n + q)];
          A[size_t(k * n + p)] = c * akp - s * akq;
          A[size_t(k * n + q)] = s * akp + c * akq;
        }
        for (int k = 0; k < n; ++k) {
          const double apk = A[size_t(p * n + k)], aqk = A[size_t(q * n + k)];
          A[size_t(p * n + k)] = c * apk - s * aqk;
          A[size_t(q * n + k)] = s * apk + c * aqk;
        }
        for (int k = 0; k < n; ++k) {
          const double vkp = V[size_t(k * n + p)], vkq = V[size_t(k * n + q)];
          V[size_t(k * n + p)] = c * vkp - s * vkq;
          V[size_t(k * n + q)] = s * vkp + c * vkq;
        }
      }
  }
  std::vector<int> order(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) order[size_t(i)] = i;
  std::sort(order.begin(), order.end(), [&](int a, int b) { return A[size_t(a * n + a)] > A[size_t(b * n + b)]; });
  Mat Vs(size_t(n * n));
  w.resize(size_t(n));
  for (int j = 0; j < n; ++j) {
    w[size_t(j)] = A[size_t(order[size_t(j)] * (n + 1))];
    for (int i = 0; i < n; ++i) Vs[size_t(i * n + j)] = V[size_t(i * n + order[size_t(j)])];
  }
  V = Vs;
}

// S^p for a symmetric positive semi-definite S (eigenvalues floored at 1e-6 of the largest).
Mat sym_power(const Mat &S, int n, double power) {
  std::vector<double> w;
  Mat V;
  eigh(S, n, w, V);
  const double floor = std::max(w[0], 1e-30) * 1e-6;
  Mat out(size_t(n * n), 0.0);
  for (int k = 0; k < n; ++k) {
    const double f = std::pow(std::max(w[size_t(k)], floor), power);
    for (int i = 0; i < n; ++i)
      for (int j = 0; j < n; ++j) out[size_t(i * n + j)] += V[size_t(i * n + k)] * f * V[size_t(j * n + k)];
  }
  return out;
}

Mat matmul(const Mat &A, const Mat &B, int n) {
  Mat C(size_t(n * n), 0.0);
  for (int i = 0; i < n; ++i)
    for (int k = 0; k < n; ++k)
      for (int j = 0; j < n; ++j) C[size_t(i * n + j)] += A[size_t(i * n + k)] * B[size_t(k * n + j)];
  return C;
}

// Second moment of rows x [count][n] (centred when asked).
Mat moment(const std::vector<const float *> &rows, int n, bool centre) {
  std::vector<double> mean(size_t(n), 0.0);
  if (centre)
    for (const float *r : rows)
      for (int i = 0; i < n; ++i) mean[size_t(i)] += r[i] / double(rows.size());
  Mat S(size_t(n * n), 0.0);
  for (const float *r : rows)
    for (int i = 0; i < n; ++i)
      for (int j = 0; j < n; ++j) S[size_t(i * n + j)] += (r[i] - mean[size_t(i)]) * (r[j] - mean[size_t(j)]);
  for (double &x : S) x /= double(rows.size());
  return S;
}

void append_f32(std::string &data, const std::vector<float> &v) {
  data.append(reinterpret_cast<const char *>(v.data()), v.size() * 4);  // little-endian host
}

// Rows of Wq and Wk ([d][D] each) for one KV head (see the file's head); centre: fit the keys'
// covariance (rankings) rather than their second moment (absolute logits).
void fit_head(const std::vector<const float *> &queries, const std::vector<const float *> &keys, int D, int d,
              const std::string &method, bool centre, Mat &A, Mat &B) {
  A.assign(size_t(d * D), 0.0);
  B.assign(size_t(d * D), 0.0);
  const Mat Sk = moment(keys, D, centre);
  if (method == "pca") {
    std::vector<double> w;
    Mat V;
    eigh(Sk, D, w, V);
    for (int j = 0; j < d; ++j)
      for (int i = 0; i < D; ++i) A[size_t(j * D + i)] = B[size_t(j * D + i)] = V[size_t(i * D + j)];
  } else {
    const Mat Sq = moment(queries, D, false);
    const Mat Sq_half = sym_power(Sq, D, 0.5), Sk_half = sym_power(Sk, D, 0.5);
    const Mat Sq_ihalf = sym_power(Sq, D, -0.5), Sk_ihalf = sym_power(Sk, D, -0.5);
    const Mat C = matmul(Sq_half, Sk_half, D);
    Mat CtC(size_t(D * D), 0.0);
    for (int i = 0; i < D; ++i)
      for (int j = 0; j < D; ++j)
        for (int r = 0; r < D; ++r) CtC[size_t(i * D + j)] += C[size_t(r * D + i)] * C[size_t(r * D + j)];
    std::vector<double> lam;
    Mat V;
    eigh(CtC, D, lam, V);
    for (int j = 0; j < d; ++j) {
      const double sigma = std::sqrt(std::max(lam[size_t(j)], 1e-300));
      std::vector<double> u(size_t(D), 0.0);  // u_j = C v_j / sigma_j
      for (int r = 0; r < D; ++r)
        for (int i = 0; i < D; ++i) u[size_t(r)] += C[size_t(r * D + i)] * V[size_t(i * D + j)] / sigma;
      const double root = std::sqrt(sigma);
      for (int i = 0; i < D; ++i) {  // row j of S^1/2 U^T Sq^-1/2 and of S^1/2 V^T Sk^-1/2
        double a = 0, b = 0;
        for (int r = 0; r < D; ++r) {
          a += u[size_t(r)] * Sq_ihalf[size_t(r * D + i)];
          b += V[size_t(r * D + j)] * Sk_ihalf[size_t(r * D + i)];
        }
        A[size_t(j * D + i)] = root * a;
        B[size_t(j * D + i)] = root * b;
      }
    }
  }
}

}  // namespace

int main(int argc, char **argv) {
  if (argc < 4) {
    std::fprintf(stderr, "usage: %s DATA_DIR OUT.safetensors D_SEARCH [pca|bilinear] [--indexer] [--train-end N] [layers...]\n",
                 argv[0]);
    return 2;
  }
  const std::string dir = argv[1], out_path = argv[2];
  const int d = std::atoi(argv[3]);
  std::string method = "bilinear";
  int64_t train_end = 3072;
  std::vector<int> layers;
  bool indexer = false;
  for (int a = 4; a < argc; ++a) {
    if (!std::strcmp(argv[a], "--indexer")) { indexer = true; continue; }
    if (!std::strcmp(argv[a], "pca") || !std::strcmp(argv[a], "bilinear")) method = argv[a];
    else if (!std::strcmp(argv[a], "--train-end") && a + 1 < argc) train_end = std::atoll(argv[++a]);
    else layers.push_back(std::atoi(argv[a]));
  }
  if (layers.empty()) layers = {1, 3, 5, 7};

  std::string header = "{", data;
  for (int L : layers) {
    const NpyF16 q = read_npy_f16(dir + "/q" + std::to_string(L) + ".npy");
    const NpyF16 k = read_npy_f16(dir + "/k" + std::to_string(L) + ".npy");
    const int Hq = int(q.shape[1]), Hkv = int(k.shape[1]), D = int(k.shape[2]), G = Hq / Hkv;
    const int64_t T = std::min<int64_t>(train_end, k.shape[0]);
    std::vector<float> wq, wk, wq_index, wk_index;  // [Hkv][d][D]
    for (int h = 0; h < Hkv; ++h) {
      std::vector<const float *> keys, queries;
      for (int64_t t = 0; t < T; ++t) {
        keys.push_back(&k.values[size_t((t * Hkv + h) * D)]);
        for (int g = 0; g < G; ++g) queries.push_back(&q.values[size_t((t * Hq + h * G + g) * D)]);
      }
      Mat A, B;  // rows: Wq, Wk for this head
      fit_head(queries, keys, D, d, method, true, A, B);
      for (double x : A) wq.push_back(float(x));
      for (double x : B) wk.push_back(float(x));
      if (indexer) {  // absolute logits: the indexer's ReLU and its sum over heads see them
        Mat Ai, Bi;
        fit_head(queries, keys, D, d, method, false, Ai, Bi);
        for (double x : Ai) wq_index.push_back(float(x));
        for (double x : Bi) wk_index.push_back(float(x));
      }
    }
    auto add = [&](const std::string &name, const std::vector<int64_t> &shape, const std::vector<float> &v) {
      const size_t b = data.size();
      append_f32(data, v);
      std::string dims;
      for (int64_t x : shape) dims += (dims.empty() ? "" : ",") + std::to_string(x);
      if (header.size() > 1) header += ",";
      header += "\"layers." + std::to_string(L) + "." + name + "\":{\"dtype\":\"F32\",\"shape\":[" + dims +
                "],\"data_offsets\":[" + std::to_string(b) + "," + std::to_string(data.size()) + "]}";
    };
    add("q_proj", {Hkv, d, D}, wq);
    add("k_proj", {Hkv, d, D}, wk);
    if (indexer) {
      const int64_t d_index = int64_t(Hkv) * d, in_q = int64_t(Hq) * D, in_k = int64_t(Hkv) * D;
      std::vector<float> iq(size_t(Hq * d_index * in_q), 0.f), ik(size_t(d_index * in_k), 0.f);
      for (int j = 0; j < Hq; ++j) {
        const int h = j / G;
        for (int r = 0; r < d; ++r)
          for (int i = 0; i < D; ++i)
            iq[size_t((j * d_index + h * d + r) * in_q + j * D + i)] = wq_index[size_t((h * d + r) * D + i)];
      }
      for (int h = 0; h < Hkv; ++h)
        for (int r = 0; r < d; ++r)
          for (int i = 0; i < D; ++i) ik[size_t((h * d + r) * in_k + h * D + i)] = wk_index[size_t((h * d + r) * D + i)];
      add("indexer.q_proj", {Hq, d_index, in_q}, iq);
      add("indexer.head_weights", {Hq, in_q}, std::vector<float>(size_t(Hq * in_q), 0.f));
      // Constant head weights 1 / (spread of the head's approximate logits) over training pairs,
      // so no head's scale drowns the others in the sum.
      std::vector<float> bias(static_cast<size_t>(Hq));
      for (int j = 0; j < Hq; ++j) {
        const int h = j / G;
        double sum = 0, sum2 = 0, count = 0;
        std::vector<double> u(static_cast<size_t>(d));
        for (int64_t t = 0; t < T; t += 16) {
          const float *qv = &q.values[size_t((t * Hq + j) * D)];
          for (int r = 0; r < d; ++r) {
            u[size_t(r)] = 0;
            for (int i = 0; i < D; ++i) u[size_t(r)] += double(wq_index[size_t((h * d + r) * D + i)]) * qv[i];
          }
          for (int64_t s2 = t % 7; s2 < T; s2 += 7) {
            const float *kv = &k.values[size_t((s2 * Hkv + h) * D)];
            double dot = 0;
            for (int r = 0; r < d; ++r) {
              double zr = 0;
              for (int i = 0; i < D; ++i) zr += double(wk_index[size_t((h * d + r) * D + i)]) * kv[i];
              dot += u[size_t(r)] * zr;
            }
            sum += dot, sum2 += dot * dot, count += 1;
          }
        }
        const double var = sum2 / count - (sum / count) * (sum / count);
        bias[size_t(j)] = float(1.0 / std::sqrt(std::max(var, 1e-12)));
      }
      add("indexer.head_bias", {Hq}, bias);
      add("indexer.k_proj", {d_index, in_k}, ik);
    }
    std::printf("layer %d: %s, d_search %d, fitted on tokens [0, %lld)\n", L, method.c_str(), d, (long long)T);
  }
  header += "}";
  while (header.size() % 8) header += ' ';
  FILE *f = std::fopen(out_path.c_str(), "wb");
  if (!f) { std::fprintf(stderr, "cannot write %s\n", out_path.c_str()); return 1; }
  uint64_t n = header.size();
  unsigned char len[8];
  for (int i = 0; i < 8; ++i) len[i] = (unsigned char)(n >> (8 * i));
  std::fwrite(len, 1, 8, f);
  std::fwrite(header.data(), 1, header.size(), f);
  std::fwrite(data.data(), 1, data.size(), f);
  std::fclose(f);
  std::printf("wrote %s\n", out_path.c_str());
  return 0;
}
