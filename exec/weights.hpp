// Weight sources for the executor: where a rank's shard of a named tensor comes from. Names and shapes are Hugging
// Face's (model.layers.3.self_attn.q_proj.weight [out, in], ...), so a synthetic model and a real checkpoint are read
// the same way.
//   - SyntheticWeights: value of element i of tensor `name` = f(seed, hash(name), i) from a counter-based generator, so
//     every shard is bit-exactly the slice of the unsharded tensor whatever the layout. Linear weights are uniform with
//     variance 1/in (activations keep their scale through many layers); norm weights are 1 + small noise.
//   - SafetensorsCheckpoint: a local HF checkpoint directory (config.json + *.safetensors, bf16/fp16/fp32). Only the
//     header JSON of each file is parsed up front; a shard read touches only the bytes of its slice.
// Thread behaviour: read_slice is const and thread-safe (each call opens its own file handle), so ranks that are
// threads may share one source.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace parasol::exec {

// A slice of a tensor: rows [begin, end) of dimension `dim` (0 or 1 of a 2-D tensor; 0 for 1-D).
struct Slice {
  int dim = 0;
  int64_t begin = 0;
  int64_t end = -1;  // -1: to the end (the whole tensor)
};

class WeightSource {
 public:
  virtual ~WeightSource() = default;
  // The values of `slice` of tensor `name`, whose full shape must be `shape`, as fp32, row-major over the slice.
  // Missing tensors and shape mismatches are ConfigErrors naming the tensor.
  virtual std::vector<float> read_slice(const std::string& name, const std::vector<int64_t>& shape,
                                        const Slice& slice) const = 0;
  virtual bool has(const std::string& name) const = 0;
  virtual std::string describe() const = 0;
};

class SyntheticWeights : public WeightSource {
 public:
  explicit SyntheticWeights(uint64_t seed) : seed_(seed) {}
  std::vector<float> read_slice(const std::string& name, const std::vector<int64_t>& shape,
                                const Slice& slice) const override;
  bool has(const std::string&) const override { return true; }
  std::string describe() const override { return "synthetic(seed " + std::to_string(seed_) + ")"; }
  // Element `index` (row-major in the full tensor) of tensor `name` of full shape `shape`.
  float value(const std::string& name, const std::vector<int64_t>& shape, int64_t index) const;

 private:
  uint64_t seed_;
};

struct SafetensorsEntry {
  std::string file;
  std::string dtype;  // "BF16" | "F16" | "F32"
  std::vector<int64_t> shape;
  uint64_t offset = 0;  // absolute byte offset of the data in `file`
  uint64_t bytes = 0;
};

class SafetensorsCheckpoint : public WeightSource {
 public:
  // `dir` holds config.json and one or more *.safetensors (model.safetensors or model-0000x-of-0000y.safetensors).
  explicit SafetensorsCheckpoint(const std::string& dir);
  std::vector<float> read_slice(const std::string& name, const std::vector<int64_t>& shape,
                                const Slice& slice) const override;
  bool has(const std::string& name) const override { return entries_.count(name) > 0; }
  std::string describe() const override { return "safetensors(" + dir_ + ")"; }
  const std::map<std::string, SafetensorsEntry>& entries() const { return entries_; }
  std::string config_path() const { return dir_ + "/config.json"; }

 private:
  std::string dir_;
  std::map<std::string, SafetensorsEntry> entries_;
};

// Writes a safetensors file (for tests and tools): tensors given as fp32 values, stored as `dtype` ("F32", "BF16",
// "F16"), in map order.
struct SafetensorsTensor {
  std::vector<int64_t> shape;
  std::vector<float> values;
};
void write_safetensors(const std::string& path, const std::map<std::string, SafetensorsTensor>& tensors,
                       const std::string& dtype);

}  // namespace parasol::exec
