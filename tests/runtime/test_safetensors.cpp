// test_safetensors.cpp: runtime/safetensors.{h,cpp}. Round trip of every dtype (and scalars,
// empty and non-contiguous tensors); the byte-exact layout (u64 length prefix, compact header,
// "__metadata__" first, space padding to 8, data without holes); byte equality with the files
// tools/make_golden.py writes; atomic replacement; and one error per malformed file.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <string>
#include <vector>

#include "runtime/ops.h"
#include "runtime/safetensors.h"

namespace loom::runtime {
namespace {

namespace fs = std::filesystem;

class Safetensors : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("loom_safetensors_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::string path(const std::string& name) const { return (dir_ / name).string(); }

  static std::string read_bytes(const std::string& p) {
    std::ifstream in(p, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), {});
  }
  static void write_bytes(const std::string& p, const std::string& bytes) {
    std::ofstream(p, std::ios::binary).write(bytes.data(), std::streamsize(bytes.size()));
  }
  // A file with the given header text (length prefix n, or its true length) and data bytes.
  static std::string file_bytes(const std::string& header, const std::string& data, int64_t n = -1) {
    uint64_t len = n < 0 ? header.size() : uint64_t(n);
    std::string out(8, '\0');
    for (int i = 0; i < 8; ++i) out[size_t(i)] = char((len >> (8 * i)) & 0xffu);
    return out + header + data;
  }
  // Writes the bytes, reads them back and expects a runtime_error naming the file and `what`.
  void expect_error(const std::string& bytes, const std::string& what) {
    std::string p = path("bad.safetensors");
    write_bytes(p, bytes);
    try {
      read_safetensors(p);
      ADD_FAILURE() << "no error; expected one containing \"" << what << "\"";
    } catch (const std::runtime_error& e) {
      std::string msg = e.what();
      EXPECT_NE(msg.find(p), std::string::npos) << "message does not name the file: " << msg;
      EXPECT_NE(msg.find(what), std::string::npos) << "expected \"" << what << "\" in: " << msg;
    }
  }

  fs::path dir_;
};

bool same_bytes(const Tensor& a, const Tensor& b) {
  if (a.dtype() != b.dtype() || a.shape() != b.shape()) return false;
  Tensor ca = a.contiguous(), cb = b.contiguous();
  return std::memcmp(ca.raw_data(), cb.raw_data(), size_t(ca.numel()) * ca.element_size()) == 0;
}

std::string le64(uint64_t v) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i) s[size_t(i)] = char((v >> (8 * i)) & 0xffu);
  return s;
}

// ---- round trip ------------------------------------------------------------------------------

TEST_F(Safetensors, RoundTripEveryDType) {
  std::vector<float> fv = {1.5f, -2.25f, 3.0e-8f, 65504.0f, -0.0f, 7.0f};
  std::vector<bf16> bv;
  std::vector<f16> hv;
  for (float f : fv) {
    bv.push_back(float_to_bf16(f));
    hv.push_back(float_to_f16(f));
  }
  std::vector<std::pair<std::string, Tensor>> ts = {
      {"f32", Tensor::randn({3, 5}, 1, DType::f32)},
      {"f64", Tensor::randn({2, 3, 4}, 2, DType::f64)},
      {"bf16", Tensor::from_vector(bv, {2, 3})},
      {"f16", Tensor::from_vector(hv, {6})},
      {"i32", Tensor::from_vector(std::vector<int32_t>{-7, 0, 2147483647, -2147483647 - 1}, {2, 2})},
      {"i64", Tensor::from_vector(std::vector<int64_t>{int64_t(1) << 62, -1, 42}, {3})},
      {"u8", Tensor::from_vector(std::vector<uint8_t>{0, 1, 255, 128, 7}, {5})},
      {"scalar", Tensor::scalar(3.25, DType::f64)},
      {"empty", Tensor::zeros({0, 3}, DType::f32)},
      {"transposed", Tensor::randn({4, 3}, 3, DType::f32).transpose(0, 1)},  // not contiguous
  };
  std::map<std::string, std::string> meta = {{"format", "pt"}, {"note", "ünïcode ✓"}};
  write_safetensors(path("all.safetensors"), ts, meta);
  SafetensorsFile f = read_safetensors(path("all.safetensors"));
  EXPECT_EQ(f.metadata, meta);
  ASSERT_EQ(f.tensors.size(), ts.size());
  for (size_t i = 0; i < ts.size(); ++i) {
    EXPECT_EQ(f.tensors[i].first, ts[i].first) << "order of tensors";
    EXPECT_TRUE(same_bytes(f.tensors[i].second, ts[i].second)) << ts[i].first;
    EXPECT_TRUE(f.tensors[i].second.is_contiguous());
  }
  EXPECT_EQ(f.at("scalar").dim(), 0);
  EXPECT_EQ(f.at("scalar").item(), 3.25);
  EXPECT_TRUE(f.contains("u8"));
  EXPECT_FALSE(f.contains("nope"));
  EXPECT_THROW(f.at("nope"), std::out_of_range);
}

TEST_F(Safetensors, BoolReadsAsU8) {
  std::string header = R"({"m":{"dtype":"BOOL","shape":[3],"data_offsets":[0,3]}})";
  write_bytes(path("b.safetensors"), file_bytes(header, std::string("\x01\x00\x01", 3)));
  SafetensorsFile f = read_safetensors(path("b.safetensors"));
  EXPECT_EQ(f.at("m").dtype(), DType::u8);
  EXPECT_EQ(f.at("m").to_vector<uint8_t>(), (std::vector<uint8_t>{1, 0, 1}));
  EXPECT_TRUE(f.metadata.empty());
}

// Tensors come back in data-offset order whatever the order of the header's keys.
TEST_F(Safetensors, ReadsInOffsetOrder) {
  std::string header = R"({"b":{"dtype":"U8","shape":[1],"data_offsets":[1,2]},)"
                       R"("a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}})";
  write_bytes(path("o.safetensors"), file_bytes(header, "xy"));
  SafetensorsFile f = read_safetensors(path("o.safetensors"));
  ASSERT_EQ(f.tensors.size(), 2u);
  EXPECT_EQ(f.tensors[0].first, "a");
  EXPECT_EQ(f.tensors[0].second.to_vector<uint8_t>()[0], 'x');
  EXPECT_EQ(f.tensors[1].first, "b");
}

// ---- byte-exact layout ----------------------------------------------------------------------

TEST_F(Safetensors, HeaderLayoutIsByteExact) {
  Tensor a = Tensor::from_vector(std::vector<float>{1.0f, 2.0f});                    // 8 bytes
  Tensor b = Tensor::from_vector(std::vector<int64_t>{-1, 2, 3, 4, 5, 6}, {2, 3});  // 48 bytes
  write_safetensors(path("l.safetensors"), {{"w", a}, {"a.idx", b}});
  std::string bytes = read_bytes(path("l.safetensors"));
  std::string json = R"({"__metadata__":{"format":"pt"},)"
                     R"("w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                     R"("a.idx":{"dtype":"I64","shape":[2,3],"data_offsets":[8,56]}})";
  std::string padded = json + std::string((8 - json.size() % 8) % 8, ' ');
  ASSERT_EQ(padded.size() % 8, 0u);
  std::string data(static_cast<const char*>(a.raw_data()), 8);
  data.append(static_cast<const char*>(b.raw_data()), 48);
  EXPECT_EQ(bytes.size() % 8, 0u);
  EXPECT_EQ(bytes, le64(padded.size()) + padded + data);
  // Given order wins over name order ("w" before "a.idx"); no temporary file is left behind.
  EXPECT_EQ(std::distance(fs::directory_iterator(dir_), fs::directory_iterator()), 1);
}

TEST_F(Safetensors, EmptyMetadataIsOmitted) {
  write_safetensors(path("e.safetensors"), {{"x", Tensor::from_vector(std::vector<uint8_t>{9})}}, {});
  std::string json = R"({"x":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}})";
  std::string padded = json + std::string((8 - json.size() % 8) % 8, ' ');
  EXPECT_EQ(read_bytes(path("e.safetensors")), le64(padded.size()) + padded + "\x09");
}

// The Python writer in tools/make_golden.py and ours produce the same bytes for the same content.
TEST_F(Safetensors, RewritesGoldenFileByteIdentical) {
  std::string golden = std::string(LOOM_TEST_DATA_DIR) + "/golden/cross_entropy_f32.safetensors";
  SafetensorsFile f = read_safetensors(golden);
  ASSERT_FALSE(f.tensors.empty());
  write_safetensors(path("copy.safetensors"), f.tensors, f.metadata);
  EXPECT_EQ(read_bytes(path("copy.safetensors")), read_bytes(golden));
}

TEST_F(Safetensors, OverwriteReplacesAtomically) {
  std::string p = path("w.safetensors");
  write_safetensors(p, {{"x", Tensor::full({4}, 1.0)}});
  write_safetensors(p, {{"y", Tensor::full({2}, 2.0, DType::f64)}});
  SafetensorsFile f = read_safetensors(p);
  ASSERT_EQ(f.tensors.size(), 1u);
  EXPECT_EQ(f.tensors[0].first, "y");
  // A refused write leaves the previous file intact and no temporary behind.
  Tensor t = Tensor::full({1}, 3.0);
  EXPECT_THROW(write_safetensors(p, {{"z", t}, {"z", t}}), std::runtime_error);
  EXPECT_THROW(write_safetensors(p, {{"__metadata__", t}}), std::runtime_error);
  EXPECT_EQ(read_safetensors(p).tensors[0].first, "y");
  EXPECT_EQ(std::distance(fs::directory_iterator(dir_), fs::directory_iterator()), 1);
  try {
    write_safetensors(path("no/such/dir/x.safetensors"), {{"x", t}});
    ADD_FAILURE() << "writing into a missing directory succeeded";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("no/such/dir/x.safetensors"), std::string::npos) << e.what();
  }
}

// ---- malformed files: one clear error each ----------------------------------------------------

const std::string kF32x2 = R"("dtype":"F32","shape":[2])";

TEST_F(Safetensors, ErrorFileShorterThan8Bytes) { expect_error("abc", "shorter than the 8-byte header length"); }

TEST_F(Safetensors, ErrorHeaderLengthBeyondFile) {
  expect_error(file_bytes("{}", "", 1000), "header length 1000 goes beyond the file");
}

TEST_F(Safetensors, ErrorInvalidJson) { expect_error(file_bytes("{\"a\": [1, ", ""), "invalid JSON header"); }

TEST_F(Safetensors, ErrorHeaderNotObject) { expect_error(file_bytes("[1,2]   ", ""), "not an object"); }

TEST_F(Safetensors, ErrorUnknownDType) {
  expect_error(file_bytes(R"({"a":{"dtype":"F8_E4M3","shape":[2],"data_offsets":[0,2]}})", "xx"),
               "tensor 'a': unknown dtype \"F8_E4M3\"");
}

TEST_F(Safetensors, ErrorMissingField) {
  expect_error(file_bytes(R"({"a":{"dtype":"F32","data_offsets":[0,8]}})", std::string(8, '\0')),
               "tensor 'a': missing \"shape\"");
}

TEST_F(Safetensors, ErrorShapeOffsetMismatch) {
  expect_error(file_bytes(R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", std::string(12, '\0')),
               "tensor 'a': shape [3] of F32 needs 3 x 4 bytes but data_offsets [0,8] span 8");
}

TEST_F(Safetensors, ErrorNegativeShape) {
  expect_error(file_bytes(R"({"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", std::string(8, '\0')),
               "not a non-negative integer");
}

TEST_F(Safetensors, ErrorOffsetsOutsideBuffer) {
  expect_error(file_bytes(R"({"a":{)" + kF32x2 + R"(,"data_offsets":[8,16]}})", std::string(8, '\0')),
               "tensor 'a': data_offsets [8, 16] outside the 8-byte data buffer");
}

TEST_F(Safetensors, ErrorOffsetsReversed) {
  expect_error(file_bytes(R"({"a":{"dtype":"U8","shape":[0],"data_offsets":[4,0]}})", std::string(8, '\0')),
               "end before begin");
}

TEST_F(Safetensors, ErrorOverlappingTensors) {
  expect_error(file_bytes(R"({"a":{)" + kF32x2 + R"(,"data_offsets":[0,8]},"b":{)" + kF32x2 +
                              R"(,"data_offsets":[4,12]}})",
                          std::string(12, '\0')),
               "tensors 'a' [0, 8) and 'b' [4, 12) overlap");
}

TEST_F(Safetensors, ErrorHoleInBuffer) {
  expect_error(file_bytes(R"({"a":{)" + kF32x2 + R"(,"data_offsets":[0,8]},"b":{)" + kF32x2 +
                              R"(,"data_offsets":[12,20]}})",
                          std::string(20, '\0')),
               "hole in the data buffer: bytes [8, 12) belong to no tensor (before 'b')");
}

TEST_F(Safetensors, ErrorTrailingBytes) {
  expect_error(file_bytes(R"({"a":{)" + kF32x2 + R"(,"data_offsets":[0,8]}})", std::string(11, '\0')),
               "3 bytes after the last tensor's data");
}

TEST_F(Safetensors, ErrorTruncatedFile) {
  // A good file cut short anywhere after the header: the last tensor's bytes are missing.
  std::string good = path("good.safetensors");
  write_safetensors(good, {{"a", Tensor::ones({4, 4})}, {"b", Tensor::ones({3})}});
  std::string bytes;
  {
    std::ifstream in(good, std::ios::binary);
    bytes.assign(std::istreambuf_iterator<char>(in), {});
  }
  expect_error(bytes.substr(0, bytes.size() - 5), "tensor 'b': data_offsets [64, 76] outside the 71-byte data buffer");
  expect_error(bytes.substr(0, 20), "goes beyond the file");
}

TEST_F(Safetensors, ErrorDuplicateNames) {
  expect_error(file_bytes(R"({"a":{)" + kF32x2 + R"(,"data_offsets":[0,8]},"a":{)" + kF32x2 +
                              R"(,"data_offsets":[8,16]}})",
                          std::string(16, '\0')),
               "duplicate tensor name 'a'");
}

TEST_F(Safetensors, ErrorMetadataNotStrings) {
  expect_error(file_bytes(R"({"__metadata__":{"step":3}})", ""), "__metadata__ value for 'step' is not a string");
}

TEST_F(Safetensors, ErrorMissingFile) {
  try {
    read_safetensors(path("absent.safetensors"));
    ADD_FAILURE() << "no error";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("absent.safetensors': cannot open"), std::string::npos) << e.what();
  }
}

TEST_F(Safetensors, ErrorNotARegularFile) {
  try {
    read_safetensors(dir_.string());
    ADD_FAILURE() << "no error";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("not a regular file"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace loom::runtime
