// The projection fits of tools/learned_fit (see its head for the methods), as a header so the
// tests can run the same code on tests/data.
#pragma once

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

namespace fit {

using Mat = std::vector<double>;  // n x n row-major

// Symmetric eigendecomposition by cyclic Jacobi rotations: A = V diag(w) V^T, w descending,
// eigenvectors in the columns of V.
inline void eigh(Mat A, int n, std::vector<double> &w, Mat &V) {
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
inline Mat sym_power(const Mat &S, int n, double power) {
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

inline Mat matmul(const Mat &A, const Mat &B, int n) {
  Mat C(size_t(n * n), 0.0);
  for (int i = 0; i < n; ++i)
    for (int k = 0; k < n; ++k)
      for (int j = 0; j < n; ++j) C[size_t(i * n + j)] += A[size_t(i * n + k)] * B[size_t(k * n + j)];
  return C;
}

// Second moment of rows x [count][n] (centred when asked).
inline Mat moment(const std::vector<const float *> &rows, int n, bool centre) {
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

// Rows of Wq and Wk ([d][D] each) for one KV head (see the file's head); centre: fit the keys'
// covariance (rankings) rather than their second moment (absolute logits).
inline void fit_head(const std::vector<const float *> &queries, const std::vector<const float *> &keys, int D, int d,
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

}  // namespace fit
