#include "model/bundle.h"

#include <vector>

#include "absl/strings/str_cat.h"
#include "base/file.h"
#include "base/record_file.h"

namespace strata::model {
namespace {

// docs/bundle-format.md.
constexpr base::RecordFileKind kBundleKind = {{'S', 'T', 'R', 'A', 'T', 'A', 'M', 'B'}, 1,
                                              "model bundle"};

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
  base::RecordFileWriter w(kBundleKind);
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
  return base::WriteFileAtomically(path, w.Finish());
}

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
