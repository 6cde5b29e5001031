// The strict .npy reader of the quality tools (bench/npy.hpp): the files NumPy writes in
// versions 1, 2 and 3 are read, a write/read round trip keeps everything, and every kind of
// malformed file is refused with a message naming the file and the problem.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "npy.hpp"

namespace {

// A .npy file: magic, version, header length (2 bytes for version 1, else 4), header
// (padded with spaces to a multiple of 64 in all, then '\n', unless `pad` is false), data.
std::vector<unsigned char> npy_bytes(int major, int minor, std::string header,
                                     const std::vector<unsigned char> &data, bool pad = true) {
  const size_t len_bytes = major == 1 ? 2 : 4;
  if (pad) {
    while ((8 + len_bytes + header.size() + 1) % 64 != 0) header += ' ';
    header += '\n';
  }
  std::vector<unsigned char> out = {0x93, 'N', 'U', 'M', 'P', 'Y', (unsigned char)major, (unsigned char)minor};
  for (size_t b = 0; b < len_bytes; ++b) out.push_back((unsigned char)((header.size() >> (8 * b)) & 0xff));
  out.insert(out.end(), header.begin(), header.end());
  out.insert(out.end(), data.begin(), data.end());
  return out;
}

std::vector<unsigned char> f32_data(std::initializer_list<float> values) {
  std::vector<unsigned char> out(values.size() * 4);
  size_t i = 0;
  for (float v : values) std::memcpy(&out[4 * i++], &v, 4);
  return out;
}

npy::Array parse(const std::vector<unsigned char> &bytes) { return npy::parse(bytes.data(), bytes.size(), "t.npy"); }

// Parsing fails with a FormatError naming the file and containing `reason`.
void expect_refused(const std::vector<unsigned char> &bytes, const std::string &reason) {
  try {
    parse(bytes);
    ADD_FAILURE() << "accepted a file that should fail with: " << reason;
  } catch (const npy::FormatError &e) {
    const std::string what = e.what();
    EXPECT_EQ(what.rfind("t.npy: ", 0), 0u) << what;
    EXPECT_NE(what.find(reason), std::string::npos) << "message: " << what << "\nexpected to contain: " << reason;
  }
}

const char kHeader23[] = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }";

TEST(Npy, ReadsEveryVersionNumPyWrites) {
  const auto data = f32_data({1, 2, 3, 4, 5, 6.5f});
  for (int major : {1, 2, 3}) {
    npy::Array a = parse(npy_bytes(major, 0, kHeader23, data));
    EXPECT_EQ(a.dtype, npy::Dtype::F32);
    EXPECT_EQ(a.shape, (std::vector<int64_t>{2, 3}));
    ASSERT_EQ(a.numel(), 6);
    EXPECT_EQ(a.at(0), 1.0);
    EXPECT_EQ(a.at(5), 6.5);
  }
}

TEST(Npy, HeaderVariations) {
  // Key order, double quotes, no trailing comma, a 1-D shape and a scalar.
  npy::Array a = parse(npy_bytes(1, 0, "{\"shape\": (3,), \"fortran_order\": False, \"descr\": \"<f4\"}",
                                 f32_data({7, 8, 9})));
  EXPECT_EQ(a.shape, (std::vector<int64_t>{3}));
  EXPECT_EQ(a.at(2), 9.0);
  npy::Array s = parse(npy_bytes(1, 0, "{'descr': '<f4', 'fortran_order': False, 'shape': (), }", f32_data({4})));
  EXPECT_TRUE(s.shape.empty());
  EXPECT_EQ(s.numel(), 1);
  npy::Array e = parse(npy_bytes(1, 0, "{'descr': '<f4', 'fortran_order': False, 'shape': (0, 5), }", {}));
  EXPECT_EQ(e.numel(), 0);
}

TEST(Npy, DecodesHalfPrecision) {
  // 1.0, -2.5, the smallest subnormal, 65504 (largest finite), +inf
  const uint16_t h[] = {0x3c00, 0xc100, 0x0001, 0x7bff, 0x7c00};
  std::vector<unsigned char> data(sizeof h);
  std::memcpy(data.data(), h, sizeof h);
  npy::Array a = parse(npy_bytes(1, 0, "{'descr': '<f2', 'fortran_order': False, 'shape': (5,), }", data));
  EXPECT_EQ(a.dtype, npy::Dtype::F16);
  EXPECT_EQ(a.at(0), 1.0);
  EXPECT_EQ(a.at(1), -2.5);
  EXPECT_EQ(a.at(2), std::ldexp(1.0, -24));
  EXPECT_EQ(a.at(3), 65504.0);
  EXPECT_TRUE(std::isinf(a.at(4)));
  EXPECT_TRUE(std::isnan(npy::f16_to_float(0x7e00)));
}

TEST(Npy, WriteThenReadKeepsEverything) {
  npy::Array a;
  a.dtype = npy::Dtype::F16;
  a.shape = {3, 2, 2};
  for (int i = 0; i < 12; ++i) {
    a.data.push_back((unsigned char)(i * 17));
    a.data.push_back((unsigned char)(0x30 + i));
  }
  const std::string path = ::testing::TempDir() + "npy_roundtrip.npy";
  npy::write(path, a);
  npy::Array b = npy::read(path);
  EXPECT_EQ(b.dtype, a.dtype);
  EXPECT_EQ(b.shape, a.shape);
  EXPECT_EQ(b.data, a.data);
  // As NumPy writes version 1.0: the data starts on a 64-byte boundary.
  std::FILE *f = std::fopen(path.c_str(), "rb");
  ASSERT_NE(f, nullptr);
  std::fseek(f, 0, SEEK_END);
  EXPECT_EQ((std::ftell(f) - long(a.data.size())) % 64, 0);
  std::fclose(f);
  std::remove(path.c_str());

  npy::Array one;
  one.shape = {2};
  one.data = f32_data({1, 2});
  npy::write(path, one);
  EXPECT_EQ(npy::read(path).shape, (std::vector<int64_t>{2}));
  std::remove(path.c_str());
}

TEST(Npy, RefusesMalformedFiles) {
  const auto d6 = f32_data({1, 2, 3, 4, 5, 6});
  auto with = [&](const std::string &header) { return npy_bytes(1, 0, header, d6); };

  std::vector<unsigned char> not_npy = {'P', 'K', 3, 4, 0, 0, 0, 0, 0, 0};
  expect_refused(not_npy, "no \\x93NUMPY magic");
  expect_refused({0x93, 'N', 'U', 'M'}, "no \\x93NUMPY magic");
  expect_refused(npy_bytes(4, 0, kHeader23, d6), "unsupported .npy version 4.0");
  expect_refused(npy_bytes(1, 1, kHeader23, d6), "unsupported .npy version 1.1");
  expect_refused({0x93, 'N', 'U', 'M', 'P', 'Y', 2, 0, 10}, "ends inside the header length");
  {
    auto b = npy_bytes(1, 0, kHeader23, d6);
    b[8] = 0xff, b[9] = 0xff;  // header length past the end
    expect_refused(b, "runs past the end of the file");
  }
  expect_refused(with("{'descr': '>f4', 'fortran_order': False, 'shape': (2, 3), }"), "dtype '>f4' is not supported");
  expect_refused(with("{'descr': '<i4', 'fortran_order': False, 'shape': (2, 3), }"), "dtype '<i4' is not supported");
  expect_refused(with("{'descr': '<f4', 'fortran_order': True, 'shape': (2, 3), }"), "fortran_order is True");
  expect_refused(with("{'descr': '<f4', 'fortran_order': 0, 'shape': (2, 3), }"), "neither True nor False");
  expect_refused(with("{'descr': '<f4', 'fortran_order': False, }"), "no 'shape'");
  expect_refused(with("{'fortran_order': False, 'shape': (2, 3), }"), "no 'descr'");
  expect_refused(with("{'descr': '<f4', 'shape': (2, 3), }"), "no 'fortran_order'");
  expect_refused(with("{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }"), "appears twice");
  expect_refused(with("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), 'x': 1, }"), "unexpected key 'x'");
  expect_refused(with("{'descr': '<f4', 'fortran_order': False, 'shape': (2, -3), }"), "non-negative integers");
  expect_refused(with("{'descr': '<f4', 'fortran_order': False, 'shape': (2; 3), }"), "expected ',' or ')'");
  expect_refused(with("{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999,), }"),
                 "overflows int64");
  expect_refused(with("{'descr': '<f4', 'fortran_order': False, 'shape': (4611686018427387904, 4), }"),
                 "size overflows");
  expect_refused(with("{'descr': '<f4' 'fortran_order': False, 'shape': (2, 3), }"), "expected ',' or '}'");
  expect_refused(with("{'descr: '<f4', 'fortran_order': False, 'shape': (2, 3), }"), "expected ':'");
  expect_refused(with("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), } x"), "after the header dict");
  expect_refused(with("['descr', '<f4']"), "expected '{'");
  expect_refused(npy_bytes(1, 0, std::string(kHeader23) + "   ", d6, /*pad=*/false), "does not end with a newline");
  expect_refused(npy_bytes(1, 0, kHeader23, f32_data({1, 2, 3, 4, 5})), "holds 24 bytes of data but the file has 20");
  expect_refused(npy_bytes(1, 0, kHeader23, f32_data({1, 2, 3, 4, 5, 6, 7})), "the file has 28");
}

TEST(Npy, MissingFileNamesThePath) {
  const std::string path = ::testing::TempDir() + "does/not/exist.npy";
  try {
    npy::read(path);
    ADD_FAILURE() << "read a missing file";
  } catch (const npy::FormatError &e) {
    EXPECT_NE(std::string(e.what()).find(path + ": cannot open"), std::string::npos) << e.what();
  }
}

}  // namespace
