#include "model/bundle.h"

#include <cmath>
#include <vector>

#include "absl/strings/str_cat.h"
#include "base/file.h"
#include "base/record_file.h"

namespace strata::model {
namespace {

// docs/bundle-format.md.
constexpr base::RecordFileKind kBundleKind = {
    {'S', 'T', 'R', 'A', 'T', 'A', 'M', 'B'}, 1, "model bundle"};

}  // namespace

absl::Status WriteBundle(const Bundle& bundle, const std::string& path) {
  const UpperTier& upper = bundle.upper;
  if (bundle.lower == nullptr) return absl::InvalidArgumentError("bundle: no lower tier");
  if (upper.feature_size() != bundle.lower->feature_size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("bundle: the upper tier reads ", upper.feature_size(),
                     " features, the lower tier makes ", bundle.lower->feature_size()));
  }
  base::RecordFileWriter w(kBundleKind);
  w.Scalar<uint64_t>("model.version", bundle.version);
  bundle.lower->Save(w);
  if (const Int8Calibration& int8 = bundle.int8; !int8.empty()) {
    const uint64_t k = int8.activation_scales.size();
    if (int8.max_abs_activations.size() != k || int8.clipped_fractions.size() != k) {
      return absl::InvalidArgumentError(
          "bundle: the int8 calibration's per-stage vectors differ in length");
    }
    w.Scalar<double>("lower.int8.percentile", int8.percentile);
    w.Scalar<uint64_t>("lower.int8.calibration_images", int8.calibration_images);
    w.Tensor("lower.int8.activation_scale", int8.activation_scales.data(), {k});
    w.Tensor("lower.int8.max_abs_activation", int8.max_abs_activations.data(), {k});
    w.Tensor("lower.int8.clipped_fraction", int8.clipped_fractions.data(), {k});
  }

  const Eigen::Index d = upper.feature_size();
  std::vector<double> packed;
  packed.reserve(static_cast<size_t>(d) * (d + 1) / 2);
  for (Eigen::Index i = 0; i < d; ++i) {
    for (Eigen::Index j = 0; j <= i; ++j) packed.push_back(upper.gram()(i, j));
  }
  w.Scalar<double>("upper.lambda", upper.lambda());
  w.Tensor("upper.gram_lower", packed.data(), {packed.size()});
  const MatrixD cross = upper.cross();  // a copy: take it once
  w.Tensor("upper.cross", cross.data(),
           {static_cast<uint64_t>(cross.rows()), static_cast<uint64_t>(cross.cols())});
  w.Strings("upper.labels", upper.labels());
  w.Scalar<uint64_t>("upper.samples_seen", upper.samples_seen());
  // Optional (docs/bundle-format.md): the int8 readout, and which features the readout fits.
  if (bundle.readout_features != "float") {
    w.Strings("upper.readout.features", {bundle.readout_features});
  }
  if (upper.int8_readout()) {
    w.Tensor("upper.readout.scale", upper.readout_scales().data(), {static_cast<uint64_t>(d)});
    w.Scalar<double>("upper.readout.percentile", bundle.readout_percentile);
  }
  return base::WriteFileAtomically(path, w.Finish());
}

namespace {

// The upper tier's records: statistics over `d` features, labels, lambda, samples seen.
absl::StatusOr<UpperTier> ReadUpperTier(const base::RecordFileReader& r, uint64_t d) {
  absl::StatusOr<double> lambda = r.Scalar<double>("upper.lambda");
  absl::StatusOr<uint64_t> samples_seen = r.Scalar<uint64_t>("upper.samples_seen");
  absl::StatusOr<std::vector<std::string>> labels = r.Strings("upper.labels");
  absl::Status error;
  for (const absl::Status& s : {lambda.status(), samples_seen.status(), labels.status()}) {
    error.Update(s);
  }
  if (!error.ok()) return error;
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
  absl::StatusOr<UpperTier> upper = UpperTier::FromStatistics(
      *lambda, std::move(gram), std::move(cross), *std::move(labels), *samples_seen);
  if (!upper.ok()) return r.Loss(upper.status().message());
  return upper;
}

// The optional int8 calibration of `lower`: all five records or none (then empty).
absl::StatusOr<Int8Calibration> ReadInt8Calibration(const base::RecordFileReader& r,
                                                    const LowerTier& lower) {
  Int8Calibration int8;
  if (!r.Has("lower.int8.activation_scale")) return int8;
  absl::StatusOr<double> percentile = r.Scalar<double>("lower.int8.percentile");
  absl::StatusOr<uint64_t> images = r.Scalar<uint64_t>("lower.int8.calibration_images");
  absl::Status error;
  error.Update(percentile.status());
  error.Update(images.status());
  if (!error.ok()) return error;
  int8.percentile = *percentile;
  int8.calibration_images = *images;
  // One scale per quantised stage of this lower tier; another count fails the shape check.
  const uint64_t k = static_cast<uint64_t>(QuantizedLowerTier::QuantizedStageCount(lower));
  VectorF scales, max_abs;
  Eigen::VectorXd clipped;
  error.Update(r.Tensor<float>("lower.int8.activation_scale", {k}, scales));
  error.Update(r.Tensor<float>("lower.int8.max_abs_activation", {k}, max_abs));
  error.Update(r.Tensor<double>("lower.int8.clipped_fraction", {k}, clipped));
  if (!error.ok()) return error;
  int8.activation_scales.assign(scales.data(), scales.data() + k);
  int8.max_abs_activations.assign(max_abs.data(), max_abs.data() + k);
  int8.clipped_fractions.assign(clipped.data(), clipped.data() + k);
  for (float scale : int8.activation_scales) {
    if (!(scale > 0) || !std::isfinite(scale)) {
      return r.Loss("lower.int8.activation_scale: a scale is not positive and finite");
    }
  }
  return int8;
}

// The optional int8 readout records of `bundle` (over `d` features): which features the readout
// was fit on, and the scale with its percentile (together, or neither).
absl::Status ReadInt8Readout(const base::RecordFileReader& r, uint64_t d, Bundle* bundle) {
  if (r.Has("upper.readout.features")) {
    absl::StatusOr<std::vector<std::string>> features = r.Strings("upper.readout.features");
    if (!features.ok()) return features.status();
    if (features->size() != 1 || ((*features)[0] != "float" && (*features)[0] != "int8")) {
      return r.Loss("upper.readout.features: expected one string, \"float\" or \"int8\"");
    }
    bundle->readout_features = (*features)[0];
  }
  if (r.Has("upper.readout.scale")) {
    VectorF scales;
    absl::StatusOr<double> percentile = r.Scalar<double>("upper.readout.percentile");
    if (!percentile.ok()) return percentile.status();
    if (absl::Status s = r.Tensor<float>("upper.readout.scale", {d}, scales); !s.ok()) return s;
    absl::Status set =
        bundle->upper.set_readout_scales(std::vector<float>(scales.data(), scales.data() + d));
    if (!set.ok()) return r.Loss(absl::StrCat("upper.readout.scale: ", set.message()));
    bundle->readout_percentile = *percentile;
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<Bundle> ReadBundle(const std::string& path) {
  absl::StatusOr<std::string> file = base::ReadFile(path);
  if (!file.ok()) {
    return absl::Status(file.status().code(),
                        absl::StrCat("model bundle: ", file.status().message()));
  }
  absl::StatusOr<base::RecordFileReader> reader =
      base::RecordFileReader::Parse(kBundleKind, path, *std::move(file));
  if (!reader.ok()) return reader.status();
  const base::RecordFileReader& r = *reader;

  absl::StatusOr<LowerTier> lower = LowerTier::Load(r);
  if (!lower.ok()) return lower.status();
  absl::StatusOr<uint64_t> version = r.Scalar<uint64_t>("model.version");
  if (!version.ok()) return version.status();
  const uint64_t d = static_cast<uint64_t>(lower->feature_size());
  absl::StatusOr<UpperTier> upper = ReadUpperTier(r, d);
  if (!upper.ok()) return upper.status();
  absl::StatusOr<Int8Calibration> int8 = ReadInt8Calibration(r, *lower);
  if (!int8.ok()) return int8.status();
  Bundle bundle{std::make_shared<const LowerTier>(*std::move(lower)), *std::move(upper), *version,
                *std::move(int8)};
  if (absl::Status readout = ReadInt8Readout(r, d, &bundle); !readout.ok()) return readout;
  return bundle;
}

}  // namespace strata::model
