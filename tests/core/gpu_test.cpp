// Gpu: every shipped file loads and obeys the datasheet relations it encodes; peak() falls back to wider dtypes;
// one test per class of bad input.
#include "core/spec/gpu.hpp"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "core/common/error.hpp"

namespace parasol::spec {
namespace {

const std::string kGpus = std::string(PARASOL_DATA_DIR) + "/topologies/gpus/";
const std::vector<std::string> kShipped{"a100-sxm-80gb", "h100-sxm", "h200-sxm", "b200", "gb200", "mi300x"};

Gpu load(const std::string& name) {
  return load_gpu_file(kGpus + name + ".yaml");
}

std::string read_text(const std::string& path) {
  std::ifstream in(path);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string mutate(std::string text, const std::string& from, const std::string& to) {
  const auto pos = text.find(from);
  EXPECT_NE(pos, std::string::npos) << "test setup: '" << from << "' not in the file";
  if (pos != std::string::npos) text.replace(pos, from.size(), to);
  return text;
}

void expect_config_error(const std::string& text, const std::string& key_path, const std::string& needle = "") {
  try {
    load_gpu(yaml::load_string(text, "mutated.yaml"));
    ADD_FAILURE() << "no error; expected one at '" << key_path << "'";
  } catch (const ConfigError& e) {
    EXPECT_GT(e.line(), 0) << e.what();
    EXPECT_EQ(e.key_path(), key_path) << e.what();
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

TEST(GpuShipped, EveryFileInTheFolderLoadsUnderItsOwnName) {
  size_t n = 0;
  for (const auto& entry : std::filesystem::directory_iterator(kGpus)) {
    if (entry.path().extension() != ".yaml") continue;
    const Gpu g = load_gpu_file(entry.path().string());
    EXPECT_EQ(g.name, entry.path().stem().string());  // clusters refer to GPUs by file name
    EXPECT_GT(g.hbm_bytes, 0);
    EXPECT_GT(g.hbm_bw_Bps, 0);
    EXPECT_GT(g.scaleup_bw_Bps, 0);
    EXPECT_LT(g.idle_W, g.tdp_W);
    EXPECT_NO_THROW(to_json(g).dump());
    ++n;
  }
  EXPECT_GE(n, kShipped.size());
  for (const auto& name : kShipped) EXPECT_NO_THROW(load(name)) << name;
}

TEST(GpuShipped, DatasheetRelationsHold) {
  for (const auto& name : kShipped) {
    const Gpu g = load(name);
    // Tensor-core generations since Ampere: fp16 = bf16, tf32 = bf16 / 2, int8 = 2 x bf16; fp8 (where present) = 2 x
    // bf16; the tensor-core bf16 rate is far above plain fp32.
    EXPECT_DOUBLE_EQ(g.peak(DType::kFp16), g.peak(DType::kBf16)) << name;
    EXPECT_NEAR(g.tf32_flops / g.peak(DType::kBf16), 0.5, 1e-3) << name;
    EXPECT_NEAR(g.peak(DType::kInt8) / g.peak(DType::kBf16), 2.0, 1e-3) << name;
    if (g.peak_flops.count(DType::kFp8)) {
      EXPECT_NEAR(g.peak(DType::kFp8) / g.peak(DType::kBf16), 2.0, 1e-3) << name;
    }
    EXPECT_GT(g.peak(DType::kBf16), 4.0 * g.peak(DType::kFp32)) << name;
  }
  // The H200 is an H100 with more and faster memory.
  const Gpu h100 = load("h100-sxm"), h200 = load("h200-sxm");
  EXPECT_EQ(h100.peak_flops, h200.peak_flops);
  EXPECT_GT(h200.hbm_bytes, h100.hbm_bytes);
  EXPECT_GT(h200.hbm_bw_Bps, h100.hbm_bw_Bps);
}

TEST(GpuShipped, UnitsParseToSi) {
  const Gpu g = load("h100-sxm");
  EXPECT_DOUBLE_EQ(g.peak(DType::kBf16), 989.5e12);
  EXPECT_DOUBLE_EQ(g.hbm_bytes, 80.0 * 1024 * 1024 * 1024);  // "80 GiB": HBM vendors' GB are binary
  EXPECT_DOUBLE_EQ(g.hbm_bw_Bps, 3.35e12);                   // bandwidths are decimal
  EXPECT_DOUBLE_EQ(g.scaleup_bw_Bps, 450e9);
  EXPECT_DOUBLE_EQ(g.tdp_W, 700.0);
}

TEST(GpuPeak, MissingDtypeFallsBackToTheNextWider) {
  const Gpu a100 = load("a100-sxm-80gb");
  EXPECT_EQ(a100.peak_flops.count(DType::kFp8), 0u);
  EXPECT_DOUBLE_EQ(a100.peak(DType::kFp8), a100.peak(DType::kBf16));
  const Gpu h100 = load("h100-sxm");
  EXPECT_DOUBLE_EQ(h100.peak(DType::kInt4), h100.peak(DType::kInt8));
  Gpu only_fp32;
  only_fp32.peak_flops[DType::kFp32] = 1e12;
  EXPECT_DOUBLE_EQ(only_fp32.peak(DType::kFp8), 1e12);
  EXPECT_THROW(Gpu{}.peak(DType::kBf16), Error);
}

// --- bad input, one test per class -------------------------------------------------------------------------------

TEST(GpuBadInput, MissingKeyNamesIt) {
  const std::string t = read_text(kGpus + "h100-sxm.yaml");
  expect_config_error(mutate(t, "hbm_bw: \"3.35 TB/s\"", ""), "hbm_bw", "required");
  expect_config_error(mutate(t, "  bf16: \"989.5 TFLOP/s\"", ""), "peak_flops.bf16", "required");
}

TEST(GpuBadInput, UnknownKeySuggestsTheClosest) {
  const std::string t = read_text(kGpus + "h100-sxm.yaml");
  expect_config_error(mutate(t, "hbm_bw:", "hbm_bww:"), "hbm_bww", "did you mean 'hbm_bw'");
  expect_config_error(mutate(t, "  fp8:", "  fp9:"), "peak_flops.fp9", "did you mean");
}

TEST(GpuBadInput, WrongTypeIsRejected) {
  const std::string t = read_text(kGpus + "h100-sxm.yaml");
  expect_config_error(mutate(t, "  comm_efficiency: 0.812868", "  comm_efficiency: high"), "efficiency.comm_efficiency",
                      "number");
  expect_config_error(mutate(t, "vendor: nvidia", "vendor: [nvidia]"), "vendor", "one of");
}

TEST(GpuBadInput, BadOrMissingUnitIsRejected) {
  const std::string t = read_text(kGpus + "h100-sxm.yaml");
  expect_config_error(mutate(t, "\"3.35 TB/s\"", "\"3.35 TB\""), "hbm_bw", "bandwidth");
  expect_config_error(mutate(t, "\"80 GiB\"", "80"), "hbm", "size");
  expect_config_error(mutate(t, "\"989.5 TFLOP/s\"", "\"989.5 TB/s\""), "peak_flops.bf16", "rate");
}

TEST(GpuBadInput, OutOfRangeValuesAreRejected) {
  const std::string t = read_text(kGpus + "h100-sxm.yaml");
  expect_config_error(mutate(t, "  comm_efficiency: 0.812868", "  comm_efficiency: 1.5"), "efficiency.comm_efficiency",
                      "[0.01, 1]");
  // The kernel sections replaced the old roofline's keys: a file that still sets one is told so.
  expect_config_error(mutate(t, "  comm_efficiency:", "  max_compute: 0.75\n  comm_efficiency:"), "efficiency.max_compute",
                      "comm_efficiency");
  expect_config_error(mutate(t, "\"70 W\"", "\"900 W\""), "idle_power", "TDP");
  expect_config_error(mutate(t, "\"989.5 TFLOP/s\"", "\"989.5 EFLOP/s\""), "peak_flops.bf16", "in [");
}

}  // namespace
}  // namespace parasol::spec
