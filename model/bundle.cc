#include "model/bundle.h"

#include <cstring>
#include "absl/strings/string_view.h"
#include <type_traits>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "base/crc32c.h"
#include "base/file.h"

namespace strata::model {
namespace {

// Layout constants of docs/bundle-format.md.
constexpr char kMagic[8] = {'S', 'T', 'R', 'A', 'T', 'A', 'M', 'B'};
constexpr uint32_t kFormatVersion = 1;
constexpr size_t kHeaderSize = 32;
constexpr size_t kMaxNameLength = 256;
constexpr int kMaxRank = 2;

enum class DType : uint8_t { kF32 = 1, kF64 = 2, kU64 = 3, kI64 = 4, kString = 5 };

template <typename T>
constexpr DType DTypeOf() {
  if constexpr (std::is_same_v<T, float>) return DType::kF32;
  if constexpr (std::is_same_v<T, double>) return DType::kF64;
  if constexpr (std::is_same_v<T, uint64_t>) return DType::kU64;
  if constexpr (std::is_same_v<T, int64_t>) return DType::kI64;
}

const char* DTypeName(DType dtype) {
  switch (dtype) {
    case DType::kF32:
      return "f32";
    case DType::kF64:
      return "f64";
    case DType::kU64:
      return "u64";
    case DType::kI64:
      return "i64";
    case DType::kString:
      return "string";
  }
  return "?";
}

template <typename T>
void Put(std::string& out, T value) {
  char bytes[sizeof(T)];
  std::memcpy(bytes, &value, sizeof(T));  // the formats are little-endian, as is x86-64
  out.append(bytes, sizeof(T));
}

// Appends records to a payload.
class RecordWriter {
 public:
  template <typename T>
  void Scalar(absl::string_view name, T value) {
    Header(name, DTypeOf<T>(), {});
    Put(payload_, value);
  }
  template <typename T>
  void Tensor(absl::string_view name, const T* data, std::initializer_list<uint64_t> dims) {
    Header(name, DTypeOf<T>(), dims);
    uint64_t count = 1;
    for (uint64_t d : dims) count *= d;
    payload_.append(reinterpret_cast<const char*>(data), count * sizeof(T));
  }
  void Strings(absl::string_view name, const std::vector<std::string>& values) {
    Header(name, DType::kString, {values.size()});
    for (const std::string& value : values) {
      Put<uint32_t>(payload_, static_cast<uint32_t>(value.size()));
      payload_.append(value);
    }
  }

  // The whole file: header + payload.
  std::string File() const {
    std::string file(kMagic, sizeof(kMagic));
    Put<uint32_t>(file, kFormatVersion);
    Put<uint32_t>(file, records_);
    Put<uint64_t>(file, payload_.size());
    Put<uint32_t>(file, base::Crc32c(payload_.data(), payload_.size()));
    Put<uint32_t>(file, base::Crc32c(file.data(), file.size()));
    file.append(payload_);
    return file;
  }

 private:
  void Header(absl::string_view name, DType dtype, std::initializer_list<uint64_t> dims) {
    Put<uint16_t>(payload_, static_cast<uint16_t>(name.size()));
    payload_.append(name.data(), name.size());
    Put<uint8_t>(payload_, static_cast<uint8_t>(dtype));
    Put<uint8_t>(payload_, static_cast<uint8_t>(dims.size()));
    for (uint64_t d : dims) Put<uint64_t>(payload_, d);
    ++records_;
  }

  std::string payload_;
  uint32_t records_ = 0;
};

// One parsed record: a view into the file's bytes.
struct Record {
  DType dtype;
  std::vector<uint64_t> dims;
  absl::string_view data;
  uint64_t elements() const {
    uint64_t n = 1;
    for (uint64_t d : dims) n *= d;
    return n;
  }
};

// Parses and checks the file, then hands out typed records.
class RecordReader {
 public:
  explicit RecordReader(std::string path) : path_(std::move(path)) {}

  absl::Status Parse(absl::string_view file) {
    if (file.size() < kHeaderSize) {
      return Loss(absl::StrCat("truncated: ", file.size(), " bytes, shorter than the ",
                               kHeaderSize, "-byte header"));
    }
    if (std::memcmp(file.data(), kMagic, sizeof(kMagic)) != 0) {
      return Loss("not a Strata model bundle (bad magic at offset 0)");
    }
    const uint32_t header_crc = Get<uint32_t>(file, 28);
    if (base::Crc32c(file.data(), 28) != header_crc) {
      return Loss("header checksum mismatch at offset 28: the header is corrupt");
    }
    const uint32_t version = Get<uint32_t>(file, 8);
    if (version > kFormatVersion) {
      return absl::FailedPreconditionError(
          absl::StrCat("model bundle ", path_, ": format version ", version,
                       " is newer than this build reads (", kFormatVersion, ")"));
    }
    const uint32_t record_count = Get<uint32_t>(file, 12);
    const uint64_t payload_size = Get<uint64_t>(file, 16);
    if (file.size() - kHeaderSize != payload_size) {
      return Loss(absl::StrCat(file.size() < kHeaderSize + payload_size ? "truncated" : "too long",
                               ": the header promises ", kHeaderSize + payload_size,
                               " bytes, the file has ", file.size(), " (offset ",
                               std::min<uint64_t>(file.size(), kHeaderSize + payload_size), ")"));
    }
    const uint32_t computed = base::Crc32c(file.data() + kHeaderSize, payload_size);
    if (computed != Get<uint32_t>(file, 24)) {
      return Loss(absl::StrFormat(
          "payload checksum mismatch (stored 0x%08x, computed 0x%08x over offsets %d..%d): "
          "the file is corrupt",
          Get<uint32_t>(file, 24), computed, kHeaderSize, file.size()));
    }
    size_t offset = kHeaderSize;
    for (uint32_t r = 0; r < record_count; ++r) {
      if (absl::Status s = ParseRecord(file, offset); !s.ok()) return s;
    }
    if (offset != file.size()) {
      return Loss(absl::StrCat(file.size() - offset, " bytes after the last record, at offset ",
                               offset));
    }
    return absl::OkStatus();
  }

  template <typename T>
  absl::StatusOr<T> Scalar(absl::string_view name) {
    absl::StatusOr<const Record*> record = Find(name, DTypeOf<T>(), 0);
    if (!record.ok()) return record.status();
    return Get<T>((*record)->data, 0);
  }

  // Copies a tensor of exactly `dims` into `out` (resized to hold it).
  template <typename T, typename Dense>
  absl::Status Tensor(absl::string_view name, std::initializer_list<uint64_t> dims, Dense& out) {
    absl::StatusOr<const Record*> record = Find(name, DTypeOf<T>(), dims.size());
    if (!record.ok()) return record.status();
    if (!std::equal(dims.begin(), dims.end(), (*record)->dims.begin())) {
      return Loss(absl::StrCat("record ", name, " has shape ", ShapeString((*record)->dims),
                               ", expected ", ShapeString(std::vector<uint64_t>(dims))));
    }
    if constexpr (Dense::IsVectorAtCompileTime) {
      out.resize(static_cast<Eigen::Index>(*dims.begin()));
    } else {
      out.resize(static_cast<Eigen::Index>(*dims.begin()),
                 static_cast<Eigen::Index>(*(dims.begin() + 1)));
    }
    std::memcpy(out.data(), (*record)->data.data(), (*record)->data.size());
    return absl::OkStatus();
  }

  absl::StatusOr<std::vector<std::string>> Strings(absl::string_view name) {
    absl::StatusOr<const Record*> record = Find(name, DType::kString, 1);
    if (!record.ok()) return record.status();
    std::vector<std::string> values;
    absl::string_view data = (*record)->data;
    size_t offset = 0;
    for (uint64_t i = 0; i < (*record)->dims[0]; ++i) {
      const uint32_t length = Get<uint32_t>(data, offset);
      values.emplace_back(data.substr(offset + 4, length));
      offset += 4 + length;
    }
    return values;
  }

  absl::Status Loss(absl::string_view what) const {
    return absl::DataLossError(absl::StrCat("model bundle ", path_, ": ", what));
  }

 private:
  template <typename T>
  static T Get(absl::string_view bytes, size_t offset) {
    T value;
    std::memcpy(&value, bytes.data() + offset, sizeof(T));
    return value;
  }

  static std::string ShapeString(const std::vector<uint64_t>& dims) {
    std::string s = "[";
    for (size_t i = 0; i < dims.size(); ++i) absl::StrAppend(&s, i ? "x" : "", dims[i]);
    return s + "]";
  }

  absl::Status ParseRecord(absl::string_view file, size_t& offset) {
    const size_t start = offset;
    auto need = [&](size_t bytes, absl::string_view what) -> absl::Status {
      if (file.size() - offset < bytes) {
        return Loss(absl::StrCat("record at offset ", start, " runs past the end of the file (",
                                 what, " at offset ", offset, " needs ", bytes, " bytes)"));
      }
      return absl::OkStatus();
    };
    if (absl::Status s = need(2, "name length"); !s.ok()) return s;
    const uint16_t name_length = Get<uint16_t>(file, offset);
    offset += 2;
    if (name_length == 0 || name_length > kMaxNameLength) {
      return Loss(absl::StrCat("record at offset ", start, ": name length ", name_length,
                               " is not in 1..", kMaxNameLength));
    }
    if (absl::Status s = need(name_length + 2, "name, dtype and rank"); !s.ok()) return s;
    std::string name(file.substr(offset, name_length));
    offset += name_length;
    Record record;
    const uint8_t dtype = Get<uint8_t>(file, offset);
    const uint8_t rank = Get<uint8_t>(file, offset + 1);
    offset += 2;
    if (dtype < 1 || dtype > 5) {
      return Loss(absl::StrCat("record ", name, " at offset ", start, ": unknown dtype ", dtype));
    }
    if (rank > kMaxRank) {
      return Loss(absl::StrCat("record ", name, " at offset ", start, ": rank ", rank,
                               " is over ", kMaxRank));
    }
    record.dtype = static_cast<DType>(dtype);
    if (absl::Status s = need(8u * rank, "dims"); !s.ok()) return s;
    for (int d = 0; d < rank; ++d) {
      record.dims.push_back(Get<uint64_t>(file, offset));
      offset += 8;
    }
    const size_t data_start = offset;
    if (record.dtype == DType::kString) {
      if (rank != 1) return Loss(absl::StrCat("record ", name, ": strings must have rank 1"));
      for (uint64_t i = 0; i < record.dims[0]; ++i) {
        if (absl::Status s = need(4, "string length"); !s.ok()) return s;
        const uint32_t length = Get<uint32_t>(file, offset);
        offset += 4;
        if (absl::Status s = need(length, "string bytes"); !s.ok()) return s;
        offset += length;
      }
    } else {
      const size_t element_size = record.dtype == DType::kF32 ? 4 : 8;
      uint64_t elements = 1;
      for (uint64_t d : record.dims) {
        if (d != 0 && elements > (file.size() / element_size) / d) {
          return Loss(absl::StrCat("record ", name, " at offset ", start,
                                   ": its shape is larger than the file"));
        }
        elements *= d;
      }
      if (absl::Status s = need(elements * element_size, "data"); !s.ok()) return s;
      offset += elements * element_size;
    }
    record.data = file.substr(data_start, offset - data_start);
    if (!records_.try_emplace(name, std::move(record)).second) {
      return Loss(absl::StrCat("record ", name, " at offset ", start, " appears twice"));
    }
    return absl::OkStatus();
  }

  absl::StatusOr<const Record*> Find(absl::string_view name, DType dtype, size_t rank) {
    auto it = records_.find(name);
    if (it == records_.end()) return Loss(absl::StrCat("required record ", name, " is missing"));
    const Record& record = it->second;
    if (record.dtype != dtype || record.dims.size() != rank) {
      return Loss(absl::StrCat("record ", name, " is ", DTypeName(record.dtype), " of rank ",
                               record.dims.size(), ", expected ", DTypeName(dtype), " of rank ",
                               rank));
    }
    return &record;
  }

  std::string path_;
  absl::flat_hash_map<std::string, Record> records_;
};

}  // namespace

absl::Status WriteBundle(const Bundle& bundle, const std::string& path) {
  const LowerTierSpec& spec = bundle.lower.spec();
  const LowerTier::Parameters& lower = bundle.lower.parameters();
  const UpperTier& upper = bundle.upper;
  if (upper.feature_size() != bundle.lower.feature_size()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "bundle: the upper tier reads ", upper.feature_size(), " features, the lower tier makes ",
        bundle.lower.feature_size()));
  }
  RecordWriter w;
  w.Scalar<uint64_t>("model.version", bundle.version);
  w.Scalar<int64_t>("lower.image_height", spec.image_height);
  w.Scalar<int64_t>("lower.image_width", spec.image_width);
  w.Scalar<int64_t>("lower.patch", spec.patch);
  w.Scalar<int64_t>("lower.filters", spec.filters);
  w.Scalar<int64_t>("lower.pool", spec.pool);
  w.Scalar<int64_t>("lower.expansion", spec.expansion);
  w.Scalar<int64_t>("lower.pca_images", spec.pca_images);
  w.Scalar<uint64_t>("lower.seed", spec.seed);
  w.Scalar<float>("lower.expansion_bias_scale", spec.expansion_bias_scale);
  w.Tensor("lower.filters_weights", lower.filters.data(),
           {static_cast<uint64_t>(lower.filters.rows()), static_cast<uint64_t>(lower.filters.cols())});
  w.Tensor("lower.mean", lower.mean.data(), {static_cast<uint64_t>(lower.mean.size())});
  w.Tensor("lower.inv_std", lower.inv_std.data(), {static_cast<uint64_t>(lower.inv_std.size())});
  w.Tensor("lower.projection", lower.projection.data(),
           {static_cast<uint64_t>(lower.projection.rows()),
            static_cast<uint64_t>(lower.projection.cols())});
  w.Tensor("lower.bias", lower.bias.data(), {static_cast<uint64_t>(lower.bias.size())});

  const Eigen::Index d = upper.feature_size();
  std::vector<double> packed;
  packed.reserve(static_cast<size_t>(d) * (d + 1) / 2);
  for (Eigen::Index i = 0; i < d; ++i) {
    for (Eigen::Index j = 0; j <= i; ++j) packed.push_back(upper.gram()(i, j));
  }
  w.Scalar<double>("upper.lambda", upper.lambda());
  w.Tensor("upper.gram_lower", packed.data(), {packed.size()});
  w.Tensor("upper.cross", upper.cross().data(),
           {static_cast<uint64_t>(upper.cross().rows()), static_cast<uint64_t>(upper.cross().cols())});
  w.Strings("upper.labels", upper.labels());
  w.Scalar<uint64_t>("upper.samples_seen", upper.samples_seen());
  return base::WriteFileAtomically(path, w.File());
}

absl::StatusOr<Bundle> ReadBundle(const std::string& path) {
  absl::StatusOr<std::string> file = base::ReadFile(path);
  if (!file.ok()) {
    return absl::Status(file.status().code(),
                        absl::StrCat("model bundle: ", file.status().message()));
  }
  RecordReader r(path);
  if (absl::Status s = r.Parse(*file); !s.ok()) return s;

  // Collects the first error of a sequence of reads.
  absl::Status error;
  auto i64 = [&](absl::string_view name) -> int {
    absl::StatusOr<int64_t> v = r.Scalar<int64_t>(name);
    if (!v.ok()) {
      error.Update(v.status());
      return 0;
    }
    if (*v < 0 || *v > (int64_t{1} << 30)) {
      error.Update(r.Loss(absl::StrCat("record ", name, " = ", *v, " is out of range")));
      return 0;
    }
    return static_cast<int>(*v);
  };
  LowerTierSpec spec;
  spec.image_height = i64("lower.image_height");
  spec.image_width = i64("lower.image_width");
  spec.patch = i64("lower.patch");
  spec.filters = i64("lower.filters");
  spec.pool = i64("lower.pool");
  spec.expansion = i64("lower.expansion");
  spec.pca_images = i64("lower.pca_images");
  absl::StatusOr<uint64_t> seed = r.Scalar<uint64_t>("lower.seed");
  absl::StatusOr<float> bias_scale = r.Scalar<float>("lower.expansion_bias_scale");
  absl::StatusOr<uint64_t> version = r.Scalar<uint64_t>("model.version");
  absl::StatusOr<double> lambda = r.Scalar<double>("upper.lambda");
  absl::StatusOr<uint64_t> samples_seen = r.Scalar<uint64_t>("upper.samples_seen");
  absl::StatusOr<std::vector<std::string>> labels = r.Strings("upper.labels");
  for (const absl::Status& s : {seed.status(), bias_scale.status(), version.status(),
                                lambda.status(), samples_seen.status(), labels.status()}) {
    error.Update(s);
  }
  if (!error.ok()) return error;
  spec.seed = *seed;
  spec.expansion_bias_scale = *bias_scale;
  if (absl::Status s = spec.Validate(); !s.ok()) return r.Loss(s.message());

  // Shapes follow from the spec; building a tier only to ask its sizes is cheap.
  const uint64_t taps = static_cast<uint64_t>(spec.patch) * spec.patch;
  const uint64_t pooled = static_cast<uint64_t>(spec.image_height / spec.pool) *
                          (spec.image_width / spec.pool) * 2 * spec.filters;
  const uint64_t expansion = static_cast<uint64_t>(spec.expansion);
  const uint64_t d = pooled + expansion;
  LowerTier::Parameters params;
  error.Update(r.Tensor<float>("lower.filters_weights", {taps, uint64_t(spec.filters)},
                               params.filters));
  error.Update(r.Tensor<float>("lower.mean", {pooled}, params.mean));
  error.Update(r.Tensor<float>("lower.inv_std", {pooled}, params.inv_std));
  error.Update(r.Tensor<float>("lower.projection", {pooled, expansion}, params.projection));
  error.Update(r.Tensor<float>("lower.bias", {expansion}, params.bias));
  Eigen::VectorXd packed;
  MatrixD cross;
  error.Update(r.Tensor<double>("upper.gram_lower", {d * (d + 1) / 2}, packed));
  error.Update(r.Tensor<double>("upper.cross", {d, labels->size()}, cross));
  if (!error.ok()) return error;

  MatrixD gram(d, d);
  const double* p = packed.data();
  for (Eigen::Index i = 0; i < static_cast<Eigen::Index>(d); ++i) {
    for (Eigen::Index j = 0; j <= i; ++j) gram(i, j) = gram(j, i) = *p++;
  }
  absl::StatusOr<LowerTier> lower = LowerTier::FromParameters(spec, std::move(params));
  if (!lower.ok()) return r.Loss(lower.status().message());
  absl::StatusOr<UpperTier> upper = UpperTier::FromStatistics(
      *lambda, std::move(gram), std::move(cross), *std::move(labels), *samples_seen);
  if (!upper.ok()) return r.Loss(upper.status().message());
  return Bundle{*std::move(lower), *std::move(upper), *version};
}

}  // namespace strata::model
