#include "exec/weights.hpp"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "core/common/error.hpp"
#include "core/common/hash.hpp"
#include "exec/half.hpp"

namespace parasol::exec {
namespace {

uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

bool contains(const std::string& s, const char* part) { return s.find(part) != std::string::npos; }

void check_slice(const std::string& name, const std::vector<int64_t>& shape, const Slice& s, int64_t& begin,
                 int64_t& end) {
  if (shape.empty() || shape.size() > 2 || s.dim < 0 || s.dim >= static_cast<int>(shape.size()))
    throw ConfigError("weight '" + name + "': slices are of 1-D or 2-D tensors along dim 0 or 1");
  begin = s.begin;
  end = s.end < 0 ? shape[s.dim] : s.end;
  if (begin < 0 || end < begin || end > shape[s.dim])
    throw ConfigError("weight '" + name + "': slice [" + std::to_string(begin) + ", " + std::to_string(end) +
                      ") of dimension " + std::to_string(s.dim) + " outside its " + std::to_string(shape[s.dim]));
}

// Calls fn(out_index, full_index) over the slice, row-major over the slice.
template <class F>
void for_slice(const std::vector<int64_t>& shape, int dim, int64_t begin, int64_t end, F&& fn) {
  int64_t rows = shape[0], cols = shape.size() == 2 ? shape[1] : 1;
  int64_t o = 0;
  if (dim == 0) {
    for (int64_t i = begin * cols; i < end * cols; ++i) fn(o++, i);
  } else {
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = begin; c < end; ++c) fn(o++, r * cols + c);
  }
}

}  // namespace

float SyntheticWeights::value(const std::string& name, const std::vector<int64_t>& shape, int64_t index) const {
  uint64_t h = splitmix64(seed_ ^ fnv1a64(name));
  uint64_t bits = splitmix64(h + static_cast<uint64_t>(index) * 0xd1b54a32d192ed03ull);
  float u = static_cast<float>(static_cast<double>(bits >> 11) * 0x1.0p-53 * 2.0 - 1.0);  // [-1, 1)
  if (contains(name, "norm")) return 1.0f + 0.1f * u;
  if (contains(name, "e_score_correction_bias")) return 0.05f * u;
  if (contains(name, "embed_tokens")) return u * std::sqrt(3.0f);
  int64_t in = shape.size() == 2 ? shape[1] : 1;
  return u * std::sqrt(3.0f / static_cast<float>(in));
}

std::vector<float> SyntheticWeights::read_slice(const std::string& name, const std::vector<int64_t>& shape,
                                                const Slice& slice) const {
  int64_t b = 0, e = 0;
  check_slice(name, shape, slice, b, e);
  int64_t other = slice.dim == 0 ? (shape.size() == 2 ? shape[1] : 1) : shape[0];
  std::vector<float> out(static_cast<size_t>((e - b) * other));
  for_slice(shape, slice.dim, b, e, [&](int64_t o, int64_t i) { out[o] = value(name, shape, i); });
  return out;
}

SafetensorsCheckpoint::SafetensorsCheckpoint(const std::string& dir) : dir_(dir) {
  namespace fs = std::filesystem;
  if (!fs::is_directory(dir)) throw ConfigError(dir, 0, 0, "--weights", "a checkpoint directory", "no such directory");
  std::vector<fs::path> files;
  for (const auto& ent : fs::directory_iterator(dir))
    if (ent.path().extension() == ".safetensors") files.push_back(ent.path());
  std::sort(files.begin(), files.end());
  if (files.empty()) throw ConfigError(dir, 0, 0, "--weights", "*.safetensors files", "none");
  for (const auto& f : files) {
    std::ifstream in(f, std::ios::binary);
    uint64_t n = 0;
    if (!in.read(reinterpret_cast<char*>(&n), 8) || n > (100u << 20))
      throw ConfigError(f.string(), 0, 0, "header", "an 8-byte header length then JSON", "a truncated file");
    std::string text(n, '\0');
    if (!in.read(text.data(), static_cast<std::streamsize>(n)))
      throw ConfigError(f.string(), 0, 0, "header", "a header of " + std::to_string(n) + " bytes", "a truncated file");
    nlohmann::json j = nlohmann::json::parse(text, nullptr, false);
    if (j.is_discarded() || !j.is_object()) throw ConfigError(f.string(), 0, 0, "header", "a JSON object", "bad JSON");
    uint64_t data_start = 8 + n, file_bytes = fs::file_size(f);
    for (auto it = j.begin(); it != j.end(); ++it) {
      if (it.key() == "__metadata__") continue;
      const auto& v = it.value();
      SafetensorsEntry e;
      e.file = f.string();
      try {
        e.dtype = v.at("dtype").get<std::string>();
        e.shape = v.at("shape").get<std::vector<int64_t>>();
        auto off = v.at("data_offsets").get<std::vector<uint64_t>>();
        if (off.size() != 2 || off[1] < off[0]) throw std::runtime_error("data_offsets");
        e.offset = data_start + off[0];
        e.bytes = off[1] - off[0];
      } catch (const std::exception&) {
        throw ConfigError(f.string(), 0, 0, it.key(), "dtype, shape and data_offsets [begin, end]", v.dump());
      }
      if (e.dtype != "BF16" && e.dtype != "F16" && e.dtype != "F32")
        throw ConfigError(f.string(), 0, 0, it.key() + ".dtype", "BF16, F16 or F32", e.dtype);
      uint64_t numel = 1;
      for (int64_t d : e.shape) numel *= static_cast<uint64_t>(d);
      if (numel * (e.dtype == "F32" ? 4 : 2) != e.bytes || e.offset + e.bytes > file_bytes)
        throw ConfigError(f.string(), 0, 0, it.key() + ".data_offsets", "a byte range matching dtype x shape",
                          std::to_string(e.bytes) + " bytes");
      entries_[it.key()] = e;
    }
  }
}

std::vector<float> SafetensorsCheckpoint::read_slice(const std::string& name, const std::vector<int64_t>& shape,
                                                     const Slice& slice) const {
  auto it = entries_.find(name);
  if (it == entries_.end()) throw ConfigError(dir_, 0, 0, name, "a tensor of the checkpoint", "it is missing");
  const SafetensorsEntry& e = it->second;
  if (e.shape != shape) {
    auto fmt = [](const std::vector<int64_t>& s) {
      std::string t = "[";
      for (size_t i = 0; i < s.size(); ++i) t += (i ? "," : "") + std::to_string(s[i]);
      return t + "]";
    };
    throw ConfigError(e.file, 0, 0, name + ".shape", "shape " + fmt(shape) + " (from the model config)", fmt(e.shape));
  }
  int64_t b = 0, end = 0;
  check_slice(name, shape, slice, b, end);
  size_t eb = e.dtype == "F32" ? 4 : 2;
  int64_t cols = shape.size() == 2 ? shape[1] : 1, rows = shape[0];
  // Byte runs to read: one for a dim-0 slice, one per row for a dim-1 slice.
  int64_t run = slice.dim == 0 ? (end - b) * cols : (end - b);
  int64_t nruns = slice.dim == 0 ? 1 : rows;
  std::vector<char> raw(static_cast<size_t>(run * nruns) * eb);
  std::FILE* fp = std::fopen(e.file.c_str(), "rb");
  if (!fp) throw RuntimeFailure("cannot open " + e.file);
  for (int64_t r = 0; r < nruns; ++r) {
    uint64_t first = slice.dim == 0 ? static_cast<uint64_t>(b * cols) : static_cast<uint64_t>(r * cols + b);
    if (std::fseek(fp, static_cast<long>(e.offset + first * eb), SEEK_SET) != 0 ||
        std::fread(raw.data() + r * run * eb, eb, static_cast<size_t>(run), fp) != static_cast<size_t>(run)) {
      std::fclose(fp);
      throw RuntimeFailure("reading tensor '" + name + "' from " + e.file + " failed");
    }
  }
  std::fclose(fp);
  std::vector<float> out(static_cast<size_t>(run * nruns));
  for (size_t i = 0; i < out.size(); ++i) {
    if (eb == 4) {
      std::memcpy(&out[i], raw.data() + i * 4, 4);
    } else {
      uint16_t h;
      std::memcpy(&h, raw.data() + i * 2, 2);
      out[i] = e.dtype == "BF16" ? bf16_to_f32(h) : f16_to_f32(h);
    }
  }
  return out;
}

void write_safetensors(const std::string& path, const std::map<std::string, SafetensorsTensor>& tensors,
                       const std::string& dtype) {
  size_t eb = dtype == "F32" ? 4 : 2;
  if (dtype != "F32" && dtype != "BF16" && dtype != "F16") throw Error("write_safetensors: dtype " + dtype);
  nlohmann::json header = nlohmann::json::object();
  std::string data;
  for (const auto& [name, t] : tensors) {
    size_t begin = data.size();
    for (float v : t.values) {
      if (eb == 4) {
        data.append(reinterpret_cast<const char*>(&v), 4);
      } else {
        uint16_t h = dtype == "BF16" ? f32_to_bf16(v) : f32_to_f16(v);
        data.append(reinterpret_cast<const char*>(&h), 2);
      }
    }
    header[name] = {{"dtype", dtype}, {"shape", t.shape}, {"data_offsets", {begin, data.size()}}};
  }
  std::string h = header.dump();
  while ((h.size() + 8) % 8) h.push_back(' ');
  uint64_t n = h.size();
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(&n), 8);
  out << h << data;
  if (!out) throw RuntimeFailure("writing " + path + " failed");
}

}  // namespace parasol::exec
