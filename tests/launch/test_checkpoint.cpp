// test_checkpoint.cpp: HDF5 checkpoints: bit-exact round trip of every dtype, detection of
// truncation and flipped bytes (data and metadata), keep_last pruning, listing, fallback to an
// older checkpoint, and a writer SIGKILLed mid-save leaving the previous checkpoint intact.
#include <gtest/gtest.h>
#include <hdf5.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>

#include "launch/checkpoint.h"

namespace loom::launch {
namespace {
namespace fs = std::filesystem;
using runtime::DType;
using runtime::Tensor;

// A fresh, empty directory removed at scope exit.
struct TempDir {
  std::string path;
  TempDir() {
    static int counter = 0;
    path = testing::TempDir() + "loom_ckpt_" + std::to_string(::getpid()) + "_" + std::to_string(counter++);
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~TempDir() { fs::remove_all(path); }
};

// A tensor of random bits (NaN payloads, denormals, anything): round trips must be bit-exact.
Tensor random_bits(const runtime::Dims& shape, DType dt, uint32_t seed) {
  Tensor t = Tensor::empty(shape, dt);
  std::mt19937 rng(seed);
  auto* p = static_cast<uint8_t*>(t.raw_data());
  for (size_t i = 0; i < size_t(t.numel()) * t.element_size(); ++i) p[i] = uint8_t(rng());
  return t;
}

CheckpointState sample_state(int64_t step) {
  CheckpointState s;
  s.step = step;
  s.tensors = {
      {"model/model.embed_tokens.weight", random_bits({16, 8}, DType::f32, 1)},
      {"model/model.layers.0.self_attn.q_proj.weight", random_bits({8, 8}, DType::bf16, 2)},
      {"model/model.layers.0.mlp.up_proj.weight", random_bits({3, 4, 5}, DType::f16, 3)},
      {"model/lm_head.weight", random_bits({16, 8}, DType::f64, 4)},
      {"optim/model.norm.weight/exp_avg", random_bits({8}, DType::f32, 5)},
      {"optim/model.norm.weight/exp_avg_sq", random_bits({8}, DType::f32, 6)},
      {"data/perm", random_bits({33}, DType::i64, 7)},
      {"data/lengths", random_bits({2, 3}, DType::i32, 8)},
      {"rng/state", random_bits({40}, DType::u8, 9)},
      {"scalar", random_bits({}, DType::f64, 10)},
      {"empty", Tensor::empty({0, 4}, DType::f32)},
  };
  s.strings = {{"config", "model:\n  n_layers: 2\n"}, {"empty", ""}, {"model.name", "tiny-llama"},
               {"marker", "UNIQUE_METADATA_MARKER_0123456789"}, {"big", std::string(100000, 'x')}};
  s.ints = {{"data/cursor", 123456789012345}, {"neg", -7}};
  s.floats = {{"loss_scale", 65536.0}, {"best_loss", 2.5e-3}, {"inf", HUGE_VAL}};
  return s;
}

void expect_same(const CheckpointState& a, const CheckpointState& b) {
  EXPECT_EQ(a.step, b.step);
  ASSERT_EQ(a.tensors.size(), b.tensors.size());
  for (size_t i = 0; i < a.tensors.size(); ++i) {
    const auto& [na, ta] = a.tensors[i];
    const auto& [nb, tb] = b.tensors[i];
    EXPECT_EQ(na, nb);
    ASSERT_EQ(ta.dtype(), tb.dtype()) << na;
    ASSERT_EQ(ta.shape(), tb.shape()) << na;
    Tensor ca = ta.contiguous();
    EXPECT_EQ(std::memcmp(ca.raw_data(), tb.raw_data(), size_t(ca.numel()) * ca.element_size()), 0) << na;
  }
  EXPECT_EQ(a.strings, b.strings);
  EXPECT_EQ(a.ints, b.ints);
  EXPECT_EQ(a.floats, b.floats);
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const CheckpointError& e) {
    return e.what();
  }
  return "";
}

std::string copy_of(const std::string& path, const std::string& to) {
  fs::copy_file(path, to, fs::copy_options::overwrite_existing);
  return to;
}

void flip_byte(const std::string& path, uint64_t offset) {
  std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
  f.seekg(std::streamoff(offset));
  char c;
  f.read(&c, 1);
  c = char(c ^ 0x40);
  f.seekp(std::streamoff(offset));
  f.write(&c, 1);
}

TEST(Checkpoint, RoundTripAllDtypesBitExact) {
  TempDir d;
  CheckpointState s = sample_state(100);
  std::string path = save_checkpoint(d.path, s, 0);
  EXPECT_EQ(path, d.path + "/step_00000100.h5");
  EXPECT_EQ(path, checkpoint_path(d.path, 100));
  CheckpointState r = load_checkpoint(path);
  expect_same(s, r);
  EXPECT_TRUE(r.find("optim/model.norm.weight/exp_avg").defined());
  EXPECT_FALSE(r.find("nope").defined());
  EXPECT_NO_THROW(verify_checkpoint(path));
  // No temporary left behind.
  for (const auto& e : fs::directory_iterator(d.path)) EXPECT_EQ(e.path().filename(), "step_00000100.h5");
}

TEST(Checkpoint, SavesNonContiguousViews) {
  TempDir d;
  CheckpointState s;
  s.step = 1;
  Tensor base = random_bits({4, 6}, DType::f32, 11);
  s.tensors = {{"t", base.transpose(0, 1)}, {"n", base.narrow(1, 2, 3)}};
  CheckpointState r = load_checkpoint(save_checkpoint(d.path, s));
  EXPECT_EQ(r.tensors[0].second.shape(), (runtime::Dims{6, 4}));
  EXPECT_EQ(r.tensors[0].second.to_vector<float>(), base.transpose(0, 1).to_vector<float>());
  EXPECT_EQ(r.tensors[1].second.to_vector<float>(), base.narrow(1, 2, 3).to_vector<float>());
}

TEST(Checkpoint, RejectsBadTensorNames) {
  TempDir d;
  auto save_named = [&](std::vector<std::string> names) {
    CheckpointState s;
    for (const auto& n : names) s.tensors.push_back({n, Tensor::zeros({2})});
    return error_of([&] { save_checkpoint(d.path, s); });
  };
  EXPECT_NE(save_named({"a", "a"}).find("tensor 'a' appears twice"), std::string::npos);
  EXPECT_NE(save_named({"a", "a/b"}).find("tensor 'a' is also a group of tensor 'a/b'"), std::string::npos);
  EXPECT_NE(save_named({"a//b"}).find("invalid tensor name 'a//b'"), std::string::npos);
  EXPECT_NE(save_named({"/a"}).find("invalid tensor name"), std::string::npos);
  EXPECT_NE(save_named({"x/../y"}).find("invalid tensor name"), std::string::npos);
  EXPECT_TRUE(list_checkpoints(d.path).empty());
}

TEST(Checkpoint, DetectsTruncation) {
  TempDir d;
  std::string good = save_checkpoint(d.path, sample_state(5));
  uint64_t size = fs::file_size(good);
  for (uint64_t keep : {uint64_t(0), uint64_t(100), size / 2, size - 1}) {
    std::string bad = copy_of(good, d.path + "/truncated.h5");
    fs::resize_file(bad, keep);
    std::string e = error_of([&] { load_checkpoint(bad); });
    EXPECT_EQ(e.rfind("checkpoint '" + bad + "': ", 0), 0u) << "size " << keep << ": " << e;
    EXPECT_NE(error_of([&] { verify_checkpoint(bad); }), "");
  }
  EXPECT_NO_THROW(load_checkpoint(good));
}

// File offset of a dataset's raw data (contiguous layout).
uint64_t data_offset(const std::string& path, const std::string& dataset) {
  hid_t f = H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
  hid_t ds = H5Dopen2(f, ("tensors/" + dataset).c_str(), H5P_DEFAULT);
  haddr_t off = H5Dget_offset(ds);
  H5Dclose(ds);
  H5Fclose(f);
  return off;
}

TEST(Checkpoint, DetectsFlippedDataByte) {
  TempDir d;
  CheckpointState s = sample_state(7);
  std::string good = save_checkpoint(d.path, s);
  const std::string name = "model/model.layers.0.self_attn.q_proj.weight";
  std::string bad = copy_of(good, d.path + "/flipped.h5");
  flip_byte(bad, data_offset(bad, name) + 37);
  std::string e = error_of([&] { load_checkpoint(bad); });
  EXPECT_EQ(e.rfind("checkpoint '" + bad + "': checksum mismatch in dataset '" + name + "'", 0), 0u) << e;
  EXPECT_NE(error_of([&] { verify_checkpoint(bad); }).find(name), std::string::npos);
  // Without verification the (wrong) data loads.
  CheckpointState r = load_checkpoint(bad, false);
  EXPECT_EQ(r.tensors.size(), s.tensors.size());
}

TEST(Checkpoint, LargeTensorBlockedChecksum) {
  // 9 MiB + 3 bytes: ten checksum blocks, hashed in parallel; a flip in the short last block
  // and one in a middle block are both caught.
  TempDir d;
  CheckpointState s;
  s.tensors = {{"big", random_bits({9 * (1 << 20) + 3}, DType::u8, 12)}};
  std::string good = save_checkpoint(d.path, s);
  expect_same(s, load_checkpoint(good));
  for (uint64_t at : {uint64_t(9 * (1 << 20) + 1), uint64_t(4 * (1 << 20) + 17)}) {
    std::string bad = copy_of(good, d.path + "/bad.h5");
    flip_byte(bad, data_offset(bad, "big") + at);
    EXPECT_NE(error_of([&] { load_checkpoint(bad); }).find("checksum mismatch in dataset 'big'"), std::string::npos);
  }
}

TEST(Checkpoint, DetectsCorruptMetadata) {
  TempDir d;
  std::string good = save_checkpoint(d.path, sample_state(7));
  // A flipped byte in an attribute: caught (here by HDF5's own object-header checksum).
  std::ifstream in(good, std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  size_t pos = bytes.find("UNIQUE_METADATA_MARKER");
  ASSERT_NE(pos, std::string::npos);
  std::string bad = copy_of(good, d.path + "/meta.h5");
  flip_byte(bad, pos + 3);
  std::string e = error_of([&] { load_checkpoint(bad); });
  EXPECT_EQ(e.rfind("checkpoint '" + bad + "': group 'strings': ", 0), 0u) << e;

  // A value rewritten behind our back (valid HDF5): caught by the metadata checksum.
  std::string tampered = copy_of(good, d.path + "/tampered.h5");
  hid_t f = H5Fopen(tampered.c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
  ASSERT_GE(H5Adelete_by_name(f, "ints", "neg", H5P_DEFAULT), 0);
  hid_t g = H5Gopen2(f, "ints", H5P_DEFAULT);
  hid_t space = H5Screate(H5S_SCALAR);
  hid_t a = H5Acreate2(g, "neg", H5T_STD_I64LE, space, H5P_DEFAULT, H5P_DEFAULT);
  int64_t v = -8;
  ASSERT_GE(H5Awrite(a, H5T_NATIVE_INT64, &v), 0);
  H5Aclose(a), H5Sclose(space), H5Gclose(g), H5Fclose(f);
  EXPECT_EQ(error_of([&] { load_checkpoint(tampered); }),
            "checkpoint '" + tampered + "': checksum mismatch in metadata (step, strings, ints, floats)");
  EXPECT_EQ(load_checkpoint(tampered, false).ints.at("neg"), -8);
}

TEST(Checkpoint, RejectsFilesThatAreNotCheckpoints) {
  TempDir d;
  std::string text = d.path + "/step_00000001.h5";
  std::ofstream(text) << "this is not an HDF5 file";
  EXPECT_NE(error_of([&] { load_checkpoint(text); }).find("checkpoint '" + text + "': not an HDF5 file"), std::string::npos);
  EXPECT_NE(error_of([&] { load_checkpoint(d.path + "/missing.h5"); }).find("no such file"), std::string::npos);

  // A valid HDF5 file without our format attribute.
  std::string other = d.path + "/other.h5";
  hid_t f = H5Fcreate(other.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
  H5Fclose(f);
  EXPECT_EQ(error_of([&] { load_checkpoint(other); }),
            "checkpoint '" + other + "': missing attribute 'format' (not a Loom checkpoint)");
}

TEST(Checkpoint, DetectsMissingDatasetAttribute) {
  TempDir d;
  std::string path = save_checkpoint(d.path, sample_state(3));
  hid_t f = H5Fopen(path.c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
  H5Adelete_by_name(f, "tensors/data/perm", "checksum", H5P_DEFAULT);
  H5Fclose(f);
  EXPECT_EQ(error_of([&] { load_checkpoint(path); }),
            "checkpoint '" + path + "': dataset 'data/perm': missing attribute 'checksum'");
}

TEST(Checkpoint, ListsByStepAndIgnoresOtherFiles) {
  TempDir d;
  CheckpointState s;
  for (int64_t step : {100, 99, 1000000000, 5}) {
    s.step = step;
    save_checkpoint(d.path, s);
  }
  std::ofstream(d.path + "/.step_00000200.h5.tmp-123") << "partial";
  std::ofstream(d.path + "/step_abc.h5") << "x";
  std::ofstream(d.path + "/notes.txt") << "x";
  std::vector<std::string> want = {checkpoint_path(d.path, 5), checkpoint_path(d.path, 99), checkpoint_path(d.path, 100),
                                   checkpoint_path(d.path, 1000000000)};
  EXPECT_EQ(list_checkpoints(d.path), want);
  EXPECT_EQ(latest_checkpoint(d.path), checkpoint_path(d.path, 1000000000));
  EXPECT_TRUE(list_checkpoints(d.path + "/nope").empty());
  EXPECT_EQ(latest_checkpoint(d.path + "/nope"), std::nullopt);
  // The next save removes the stray temporary.
  s.step = 1000000001;
  save_checkpoint(d.path, s);
  EXPECT_FALSE(fs::exists(d.path + "/.step_00000200.h5.tmp-123"));
}

TEST(Checkpoint, KeepLastPrunesOldest) {
  TempDir d;
  CheckpointState s = sample_state(0);
  for (int64_t step = 1; step <= 5; ++step) {
    s.step = step * 10;
    save_checkpoint(d.path, s, 2);
  }
  EXPECT_EQ(list_checkpoints(d.path), (std::vector<std::string>{checkpoint_path(d.path, 40), checkpoint_path(d.path, 50)}));
  // Re-saving an older step never deletes the file just written.
  s.step = 20;
  save_checkpoint(d.path, s, 1);
  EXPECT_EQ(list_checkpoints(d.path), (std::vector<std::string>{checkpoint_path(d.path, 20)}));
  // keep_last <= 0 keeps everything.
  for (int64_t step : {30, 40, 50}) {
    s.step = step;
    save_checkpoint(d.path, s, 0);
  }
  EXPECT_EQ(list_checkpoints(d.path).size(), 4u);
}

TEST(Checkpoint, LatestFallsBackOnlyWhenAsked) {
  TempDir d;
  CheckpointState s = sample_state(0);
  s.step = 1;
  save_checkpoint(d.path, s);
  s.step = 2;
  std::string newest = save_checkpoint(d.path, s);
  fs::resize_file(newest, fs::file_size(newest) / 2);

  std::string e = error_of([&] { latest_checkpoint(d.path, false); });
  EXPECT_EQ(e.rfind("checkpoint '" + newest + "'", 0), 0u) << e;

  testing::internal::CaptureStderr();
  std::optional<std::string> got = latest_checkpoint(d.path, true);
  std::string err = testing::internal::GetCapturedStderr();
  EXPECT_EQ(got, checkpoint_path(d.path, 1));
  EXPECT_NE(err.find("warning"), std::string::npos) << err;
  EXPECT_NE(err.find(newest), std::string::npos) << err;

  // Every checkpoint bad: an error, never a silent fresh start.
  fs::resize_file(checkpoint_path(d.path, 1), 10);
  testing::internal::CaptureStderr();
  e = error_of([&] { latest_checkpoint(d.path, true); });
  testing::internal::GetCapturedStderr();
  EXPECT_NE(e.find("no usable checkpoint"), std::string::npos) << e;
}

TEST(Checkpoint, KilledMidSaveLeavesPreviousCheckpointIntact) {
  TempDir d;
  CheckpointState first = sample_state(100);
  std::string good = save_checkpoint(d.path, first, 1);

  pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    // Child: SIGKILLed by the test hook after 3 of the tensors reach the temporary file.
    ::setenv("LOOM_TEST_KILL_IN_SAVE", "3", 1);
    CheckpointState second = sample_state(200);
    try {
      save_checkpoint(d.path, second, 1);
    } catch (...) {
    }
    ::_exit(3);  // reached only if the hook did not fire
  }
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFSIGNALED(status)) << "child exited with " << WEXITSTATUS(status);
  EXPECT_EQ(WTERMSIG(status), SIGKILL);

  // The partial temporary is there, ignored; the previous checkpoint is intact.
  int temps = 0;
  for (const auto& e : fs::directory_iterator(d.path))
    if (e.path().filename().string().rfind(".step_00000200.h5.tmp-", 0) == 0) ++temps;
  EXPECT_EQ(temps, 1);
  EXPECT_EQ(list_checkpoints(d.path), std::vector<std::string>{good});
  EXPECT_EQ(latest_checkpoint(d.path, false), good);
  expect_same(first, load_checkpoint(good));

  // The next save cleans the temporary up and prunes as usual.
  std::string next = save_checkpoint(d.path, sample_state(200), 1);
  EXPECT_EQ(list_checkpoints(d.path), std::vector<std::string>{next});
  for (const auto& e : fs::directory_iterator(d.path)) EXPECT_EQ(e.path().filename(), "step_00000200.h5");
}

}  // namespace
}  // namespace loom::launch
