#include "update/snapshot.h"

#include <algorithm>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "base/record_file.h"

namespace strata::update {
namespace {

constexpr base::RecordFileKind kSnapshotKind = {
    {'S', 'T', 'R', 'A', 'T', 'A', 'S', 'N'}, kSnapshotFormatVersion, "snapshot"};
constexpr char kPrefix[] = "snapshot-";
constexpr char kSuffix[] = ".snap";

}  // namespace

std::string SnapshotFileName(uint64_t log_position) {
  return absl::StrFormat("%s%020u%s", kPrefix, log_position, kSuffix);
}

std::optional<uint64_t> ParseSnapshotFileName(absl::string_view name) {
  const size_t prefix = sizeof(kPrefix) - 1, suffix = sizeof(kSuffix) - 1;
  if (name.size() != prefix + 20 + suffix || name.substr(0, prefix) != kPrefix ||
      name.substr(prefix + 20) != kSuffix) {
    return std::nullopt;
  }
  uint64_t position = 0;
  if (!absl::SimpleAtoi(name.substr(prefix, 20), &position)) return std::nullopt;
  return position;
}

std::string EncodeSnapshot(uint64_t model_version, uint64_t log_position,
                           const model::UpperTier& upper) {
  base::RecordFileWriter w(kSnapshotKind);
  w.Scalar<uint64_t>("model.version", model_version);
  w.Scalar<uint64_t>("log.position", log_position);
  const Eigen::Index d = upper.feature_size();
  w.Scalar<uint64_t>("upper.feature_size", static_cast<uint64_t>(d));
  w.Scalar<double>("upper.lambda", upper.lambda());
  std::vector<double> packed;
  packed.reserve(static_cast<size_t>(d) * (d + 1) / 2);
  for (Eigen::Index i = 0; i < d; ++i) {
    for (Eigen::Index j = 0; j <= i; ++j) packed.push_back(upper.gram()(i, j));
  }
  w.Tensor("upper.gram_lower", packed.data(), {packed.size()});
  const model::MatrixD cross = upper.cross();  // a copy: take it once
  w.Tensor("upper.cross", cross.data(),
           {static_cast<uint64_t>(cross.rows()), static_cast<uint64_t>(cross.cols())});
  w.Strings("upper.labels", upper.labels());
  w.Scalar<uint64_t>("upper.samples_seen", upper.samples_seen());
  return w.Finish();
}

absl::StatusOr<std::vector<SnapshotFile>> ListSnapshots(Env* env, const std::string& dir) {
  absl::StatusOr<std::vector<std::string>> names = env->ListDirectory(dir);
  if (!names.ok()) {
    if (absl::IsNotFound(names.status())) return std::vector<SnapshotFile>{};
    return names.status();
  }
  std::vector<SnapshotFile> files;
  for (const std::string& name : *names) {
    if (std::optional<uint64_t> position = ParseSnapshotFileName(name)) {
      files.push_back({absl::StrCat(dir, "/", name), *position, 0});
    }
  }
  std::sort(files.begin(), files.end(), [](const SnapshotFile& a, const SnapshotFile& b) {
    return a.log_position > b.log_position;
  });
  return files;
}

absl::StatusOr<SnapshotFile> WriteSnapshot(Env* env, const std::string& dir, uint64_t model_version,
                                           uint64_t log_position, const model::UpperTier& upper) {
  const std::string contents = EncodeSnapshot(model_version, log_position, upper);
  SnapshotFile file{absl::StrCat(dir, "/", SnapshotFileName(log_position)), log_position,
                    contents.size()};
  absl::Status written = env->WriteFileAtomically(file.path, contents);
  if (!written.ok()) return written;

  // Keep the newest kSnapshotsKept; remove leftovers of interrupted writes.
  absl::StatusOr<std::vector<SnapshotFile>> files = ListSnapshots(env, dir);
  if (!files.ok()) return files.status();
  bool deleted = false;
  for (size_t i = kSnapshotsKept; i < files->size(); ++i) {
    absl::Status status = env->DeleteFile((*files)[i].path);
    if (!status.ok() && !absl::IsNotFound(status)) return status;
    deleted = true;
  }
  if (deleted) {
    absl::Status synced = env->SyncDirectory(dir);
    if (!synced.ok()) return synced;
  }
  return file;
}

absl::StatusOr<UpperTierSnapshot> ReadSnapshot(Env* env, const std::string& path) {
  absl::StatusOr<std::string> contents = env->ReadFile(path);
  if (!contents.ok()) return contents.status();
  return DecodeSnapshot(path, *std::move(contents));
}

absl::StatusOr<UpperTierSnapshot> DecodeSnapshot(const std::string& name, std::string contents) {
  absl::StatusOr<base::RecordFileReader> reader =
      base::RecordFileReader::Parse(kSnapshotKind, name, std::move(contents));
  if (!reader.ok()) return reader.status();
  const base::RecordFileReader& r = *reader;

  absl::StatusOr<uint64_t> version = r.Scalar<uint64_t>("model.version");
  absl::StatusOr<uint64_t> position = r.Scalar<uint64_t>("log.position");
  absl::StatusOr<uint64_t> d = r.Scalar<uint64_t>("upper.feature_size");
  absl::StatusOr<double> lambda = r.Scalar<double>("upper.lambda");
  absl::StatusOr<uint64_t> samples_seen = r.Scalar<uint64_t>("upper.samples_seen");
  absl::StatusOr<std::vector<std::string>> labels = r.Strings("upper.labels");
  absl::Status error;
  for (const absl::Status& s : {version.status(), position.status(), d.status(), lambda.status(),
                                samples_seen.status(), labels.status()}) {
    error.Update(s);
  }
  if (!error.ok()) return error;
  if (*d == 0 || *d > (uint64_t{1} << 20)) {
    return r.Loss(absl::StrCat("implausible feature size ", *d));
  }
  Eigen::VectorXd packed;
  model::MatrixD cross;
  error.Update(r.Tensor<double>("upper.gram_lower", {*d * (*d + 1) / 2}, packed));
  error.Update(r.Tensor<double>("upper.cross", {*d, labels->size()}, cross));
  if (!error.ok()) return error;
  model::MatrixD gram(*d, *d);
  const double* p = packed.data();
  for (Eigen::Index i = 0; i < static_cast<Eigen::Index>(*d); ++i) {
    for (Eigen::Index j = 0; j <= i; ++j) gram(i, j) = gram(j, i) = *p++;
  }
  absl::StatusOr<model::UpperTier> upper = model::UpperTier::FromStatistics(
      *lambda, std::move(gram), std::move(cross), *std::move(labels), *samples_seen);
  if (!upper.ok()) return r.Loss(upper.status().message());
  return UpperTierSnapshot{*version, *position, *std::move(upper)};
}

}  // namespace strata::update
