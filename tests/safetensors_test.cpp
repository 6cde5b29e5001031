// The weights reader, through sa_index_create with a learned selector: valid files in every
// float dtype load; crafted bad files are refused with SA_ERR_FORMAT (or the documented code)
// and a message naming the file and the problem, and nothing is written to *out.
#include <gtest/gtest.h>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <future>
#include <string>
#include <vector>

#include "test_util.hpp"
#include "weights_file.hpp"

namespace {

using wf::raw_file;

constexpr int kHkv = 2, kD = 8, kS = 4;
sa_index *const kSentinel = reinterpret_cast<sa_index *>(uintptr_t(0x5678));

// 2 * 4 * 8 f32 values of 0.5 per projection: 256 bytes each.
std::string half_floats(size_t n) {
  std::string s;
  for (size_t i = 0; i < n; ++i) s += std::string("\x00\x00\x00\x3f", 4);
  return s;
}
const std::string kData = half_floats(128);

std::string entry(const std::string &name, const std::string &dtype, const std::string &shape, long long b, long long e) {
  return "\"" + name + "\":{\"dtype\":\"" + dtype + "\",\"shape\":" + shape + ",\"data_offsets\":[" + std::to_string(b) +
         "," + std::to_string(e) + "]}";
}
// The valid header, from its two entries.
std::string header(const std::string &q, const std::string &k) { return "{" + q + "," + k + "}"; }
const std::string kQ = entry("layers.0.q_proj", "F32", "[2,4,8]", 0, 256);
const std::string kK = entry("layers.0.k_proj", "F32", "[2,4,8]", 256, 512);
const std::string kValid = raw_file(header(kQ, kK), kData);

sa_status create(const std::string &path, int layer, sa_index **out, sa_selector_kind kind = SA_SELECTOR_LEARNED) {
  auto ctx = sat::make_context(1);
  sa_index_options o = wf::learned_options(kind, path, layer, kHkv, kD);
  return sa_index_create(ctx.get(), &o, out);
}

TEST(Safetensors, ValidFilesLoadInEveryFloatDtype) {
  for (const char *dtype : {"F32", "F16", "BF16"}) {
    sat::Rng rng(5);
    std::vector<wf::Entry> e = {
        {"layers.3.q_proj", dtype, {kHkv, kS, kD}, wf::random_values(rng, kHkv * kS * kD), ""},
        {"layers.3.k_proj", dtype, {kS, kD}, wf::random_values(rng, kS * kD), ""},
        {"layers.4.q_proj", dtype, {0, kS, kD}, {}, ""},  // empty tensor: zero bytes at the end
    };
    std::string path = wf::write_file(wf::file_bytes(e, "{\"format\":\"pt\",\"note\":\"\\u00e9\\ud83d\\ude00\"}"));
    sa_index *ix = nullptr;
    EXPECT_SA_OK(create(path, 3, &ix));
    sa_index_destroy(&ix);
  }
  // Spaces after the JSON pad the header; escapes in names are decoded.
  std::string padded = raw_file(header(kQ, entry("layers.0.k\\u005fproj", "F32", "[2,4,8]", 256, 512)) + "      ", kData);
  sa_index *ix = nullptr;
  EXPECT_SA_OK(create(wf::write_file(padded), 0, &ix));
  sa_index_destroy(&ix);
}

struct BadFile {
  std::string name;
  std::string bytes;
  sa_status want;
  std::string mentions;
};
void PrintTo(const BadFile &b, std::ostream *os) { *os << b.name; }

std::vector<BadFile> bad_files() {
  const std::string kBig = raw_file(header(kQ, kK), kData).substr(8);  // header + data
  std::vector<BadFile> c;
  auto add = [&](std::string name, std::string bytes, std::string mentions, sa_status want = SA_ERR_FORMAT) {
    c.push_back({std::move(name), std::move(bytes), want, std::move(mentions)});
  };
  auto with_header = [&](const std::string &h, const std::string &data = kData) { return raw_file(h, data); };
  // Sizes and lengths.
  add("Empty", "", "shorter than the 8-byte header length");
  add("SevenBytes", "\x10\0\0\0\0\0\0", "shorter than the 8-byte header length");
  add("HeaderLengthHuge", wf::le64(uint64_t(1) << 63) + kBig, "exceeds");
  add("HeaderLengthAllOnes", wf::le64(~uint64_t(0)) + kBig, "exceeds");
  add("HeaderLengthOverCap", wf::le64((uint64_t(100) << 20) + 1) + kBig, "exceeds");
  add("HeaderLengthPastEnd", wf::le64(kBig.size() + 1) + kBig, "runs past the end");
  add("HeaderLengthZero", wf::le64(0) + kBig, "does not start with '{'");
  add("TruncatedInData", kValid.substr(0, kValid.size() - 100), "run past the data section");
  add("TruncatedInHeader", kValid.substr(0, 40), "runs past the end");
  add("ExtraBytesAfterData", kValid + "xyz", "belong to no tensor");
  // JSON.
  add("HeaderNotObject", with_header("[1,2]"), "does not start with '{'");
  add("UnclosedObject", with_header("{" + kQ + "," + kK), "malformed JSON");
  add("TrailingComma", with_header("{" + kQ + "," + kK + ",}"), "malformed JSON");
  add("GarbageAfterObject", with_header(header(kQ, kK) + "x"), "unexpected bytes after");
  add("SingleQuotes", with_header("{'a':1}"), "malformed JSON");
  add("LeadingZero", with_header("{" + kQ + "," + entry("layers.0.k_proj", "F32", "[02,4,8]", 256, 512) + "}"), "malformed JSON");
  add("BadEscape", with_header("{\"a\\x\":1}"), "invalid escape");
  add("LoneSurrogate", with_header("{\"\\ud800\":1}"), "surrogate");
  add("ControlCharInString", with_header("{\"a\nb\":1}"), "control character");
  add("InvalidUtf8", with_header("{\"\xc3\x28\":1}"), "UTF-8");
  add("OverlongUtf8", with_header("{\"\xc0\xaf\":1}"), "UTF-8");
  add("NulByteInHeader", with_header(std::string("{\"a\0\":1}", 8)), "control character");
  add("DeepNesting", with_header("{\"__metadata__\":" + std::string(200, '[') + std::string(200, ']') + "}"), "nesting");
  add("DuplicateTensor", with_header("{" + kQ + "," + kK + "," + kQ + "}"), "duplicate key");
  // Entries.
  add("TensorNotObject", with_header("{\"layers.0.q_proj\":[1]," + kK + "}"), "expected an object");
  add("MissingDtype", with_header("{\"layers.0.q_proj\":{\"shape\":[2,4,8],\"data_offsets\":[0,256]}," + kK + "}"), "lacks \"dtype\"");
  add("UnknownField", with_header("{\"layers.0.q_proj\":{\"dtype\":\"F32\",\"shape\":[2,4,8],\"data_offsets\":[0,256],\"x\":1}," + kK + "}"), "unknown field");
  add("UnknownDtype", with_header(header(entry("layers.0.q_proj", "F31", "[2,4,8]", 0, 256), kK)), "unknown dtype");
  add("IntegerDtype", with_header(header(entry("layers.0.q_proj", "I32", "[2,4,8]", 0, 256), kK)), "reads F32, F16 or BF16");
  add("F64Dtype", with_header(header(entry("layers.0.q_proj", "F64", "[2,4,4]", 0, 256), kK)), "reads F32, F16 or BF16");
  add("ShapeSizeMismatch", with_header(header(entry("layers.0.q_proj", "F32", "[2,4,9]", 0, 256), kK)), "need 288 bytes");
  add("DtypeSizeMismatch", with_header(header(entry("layers.0.q_proj", "F16", "[2,4,8]", 0, 256), kK)), "need 128 bytes");
  add("ShapeOverflow", with_header(header(entry("layers.0.q_proj", "F32", "[4294967296,4294967296,16]", 0, 256), kK)), "overflows");
  add("ShapeBytesOverflow", with_header(header(entry("layers.0.q_proj", "F32", "[4611686018427387904,2]", 0, 256), kK)), "overflows");
  add("NegativeShape", with_header(header(entry("layers.0.q_proj", "F32", "[-2,4,8]", 0, 256), kK)), "non-negative integers");
  add("FractionalShape", with_header(header(entry("layers.0.q_proj", "F32", "[2.5,4,8]", 0, 256), kK)), "non-negative integers");
  add("HugeShapeNumber", with_header(header(entry("layers.0.q_proj", "F32", "[99999999999999999999,4,8]", 0, 256), kK)), "non-negative integers");
  add("ShapeNotArray", with_header(header(entry("layers.0.q_proj", "F32", "\"2x4x8\"", 0, 256), kK)), "shape is not an array");
  add("OffsetsPastEnd", with_header(header(kQ, entry("layers.0.k_proj", "F32", "[2,4,8]", 512, 768))), "run past the data section");
  add("OffsetsOverlap", with_header(header(kQ, entry("layers.0.k_proj", "F32", "[2,4,8]", 128, 384)), kData.substr(0, 384)), "overlap");
  add("OffsetsGap", with_header(header(entry("layers.0.q_proj", "F32", "[2,4,8]", 0, 256), entry("layers.0.k_proj", "F32", "[2,4,8]", 260, 516)), kData + "1234"), "belong to no tensor");
  add("OffsetsReversed", with_header(header(entry("layers.0.q_proj", "F32", "[2,4,8]", 256, 0), kK)), "data_offsets");
  add("OffsetsThree", with_header("{\"layers.0.q_proj\":{\"dtype\":\"F32\",\"shape\":[2,4,8],\"data_offsets\":[0,128,256]}," + kK + "}"), "data_offsets");
  add("OffsetsNegative", with_header(header(entry("layers.0.q_proj", "F32", "[2,4,8]", -256, 0), kK)), "data_offsets");
  add("MetadataNotStrings", with_header("{\"__metadata__\":{\"a\":1}," + kQ + "," + kK + "}"), "__metadata__");
  add("MetadataNotObject", with_header("{\"__metadata__\":[]," + kQ + "," + kK + "}"), "__metadata__");
  // Values and content.
  std::string nan_data = kData;
  nan_data.replace(20, 4, std::string("\x00\x00\xc0\x7f", 4));
  add("NanWeight", with_header(header(kQ, kK), nan_data), "non-finite");
  add("MissingLayer", with_header(header(entry("layers.1.q_proj", "F32", "[2,4,8]", 0, 256), entry("layers.7.k_proj", "F32", "[2,4,8]", 256, 512))),
      "layers in the file: 1, 7");
  add("MissingKeyProjection", with_header(header(kQ, entry("layers.0.other", "F32", "[2,4,8]", 256, 512))), "no tensor \"layers.0.k_proj\"");
  // Shapes that disagree with the index: SA_ERR_SHAPE.
  add("WrongHeadDim", with_header(header(entry("layers.0.q_proj", "F32", "[2,8,4]", 0, 256), kK)), "head_dim", SA_ERR_SHAPE);
  add("SearchDimsDisagree", with_header(header(entry("layers.0.q_proj", "F32", "[4,2,8]", 0, 256), kK)), "must agree", SA_ERR_SHAPE);
  add("KeyProjectionThreeSets", with_header(header(kQ, entry("layers.0.k_proj", "F32", "[3,4,8]", 256, 640)), kData + half_floats(32)),
      "multiple of num_kv_heads", SA_ERR_SHAPE);
  add("KeyProjectionFourSets", with_header(header(entry("layers.0.q_proj", "F32", "[1,8,8]", 0, 256), entry("layers.0.k_proj", "F32", "[4,8,8]", 256, 1280)), kData + kData + half_floats(64)), "num_kv_heads", SA_ERR_SHAPE);
  add("Rank4Projection", with_header(header(entry("layers.0.q_proj", "F32", "[1,2,4,8]", 0, 256), kK)), "rank 3 or 2", SA_ERR_SHAPE);
  add("Rank1Projection", with_header(header(entry("layers.0.q_proj", "F32", "[64]", 0, 256), kK)), "rank 3 or 2", SA_ERR_SHAPE);
  add("ZeroSearchDims", with_header(header(entry("layers.0.q_proj", "F32", "[2,0,8]", 0, 0), entry("layers.0.k_proj", "F32", "[2,0,8]", 0, 0)), ""), "no search dimensions", SA_ERR_SHAPE);
  return c;
}

class BadWeights : public ::testing::TestWithParam<BadFile> {};

TEST_P(BadWeights, RefusedWithMessageNamingFileAndProblem) {
  const BadFile &b = GetParam();
  const std::string path = wf::write_file(b.bytes, b.name);
  sa_index *ix = kSentinel;
  const sa_status s = create(path, 0, &ix);
  const std::string msg = sa_last_error();
  EXPECT_EQ(s, b.want) << sa_status_name(s) << ": " << msg;
  EXPECT_EQ(ix, kSentinel) << "*out written on failure";
  EXPECT_NE(msg.find(path), std::string::npos) << "message does not name the file: " << msg;
  EXPECT_NE(msg.find("opt->learned.weights_path"), std::string::npos) << msg;
  EXPECT_NE(msg.find(b.mentions), std::string::npos) << "message: " << msg;
  if (s == SA_OK) sa_index_destroy(&ix);
}

INSTANTIATE_TEST_SUITE_P(Table, BadWeights, ::testing::ValuesIn(bad_files()),
                         [](const ::testing::TestParamInfo<BadFile> &info) { return info.param.name; });

TEST(Safetensors, BaselineOfTheBadTableLoads) {
  sa_index *ix = nullptr;
  EXPECT_SA_OK(create(wf::write_file(kValid), 0, &ix));
  sa_index_destroy(&ix);
}

TEST(Safetensors, PathsThatAreNotFiles) {
  sa_index *ix = kSentinel;
  const std::string missing = ::testing::TempDir() + "sa_no_such_file.safetensors";
  EXPECT_SA_ERR(SA_ERR_INVALID_ARGUMENT, create(missing, 0, &ix));
  EXPECT_NE(std::string(sa_last_error()).find("cannot open"), std::string::npos) << sa_last_error();
  EXPECT_SA_ERR(SA_ERR_INVALID_ARGUMENT, create(::testing::TempDir(), 0, &ix));
  EXPECT_NE(std::string(sa_last_error()).find("not a regular file"), std::string::npos) << sa_last_error();
  EXPECT_EQ(ix, kSentinel);
}

// A FIFO as weights_path is refused at once: the open must not wait for a writer (it blocked
// for ever). If it does hang, the test fails and opens the write end itself to let it finish.
TEST(Safetensors, FifoIsRefusedWithoutBlocking) {
  const std::string fifo = wf::temp_path("fifo");
  ASSERT_EQ(mkfifo(fifo.c_str(), 0600), 0) << std::strerror(errno);
  std::string message;
  auto call = std::async(std::launch::async, [&] {
    sa_index *ix = kSentinel;
    const sa_status s = create(fifo, 0, &ix);
    message = sa_last_error();
    return std::make_pair(s, ix);
  });
  if (call.wait_for(std::chrono::seconds(20)) != std::future_status::ready) {
    ADD_FAILURE() << "sa_index_create blocked on a FIFO";
    const int w = open(fifo.c_str(), O_WRONLY);
    if (w >= 0) close(w);
  }
  const auto [status, ix] = call.get();
  EXPECT_EQ(status, SA_ERR_INVALID_ARGUMENT) << sa_status_name(status);
  EXPECT_NE(message.find("not a regular file"), std::string::npos) << message;
  EXPECT_EQ(ix, kSentinel);
  unlink(fifo.c_str());
}

// Every prefix of a valid file is refused, never read out of bounds (the suite also runs
// under ASan in CI).
TEST(Safetensors, EveryTruncationIsRefused) {
  const std::string path = wf::temp_path("trunc");
  for (size_t n = 0; n < kValid.size(); n += (n < 300 ? 1 : 37)) {
    FILE *f = std::fopen(path.c_str(), "wb");
    ASSERT_NE(f, nullptr);
    std::fwrite(kValid.data(), 1, n, f);
    std::fclose(f);
    sa_index *ix = kSentinel;
    EXPECT_EQ(create(path, 0, &ix), SA_ERR_FORMAT) << "prefix of " << n << " bytes: " << sa_last_error();
    EXPECT_EQ(ix, kSentinel);
  }
}

}  // namespace
