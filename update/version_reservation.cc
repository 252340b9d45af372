#include "update/version_reservation.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "base/record_file.h"

namespace strata::update {
namespace {

constexpr base::RecordFileKind kVersionsKind = {
    {'S', 'T', 'R', 'A', 'T', 'A', 'V', 'N'}, kVersionsFormatVersion, "model-versions file"};
constexpr char kReservedRecord[] = "versions.reserved";

}  // namespace

std::string EncodeVersionsFile(uint64_t reserved) {
  base::RecordFileWriter w(kVersionsKind);
  w.Scalar<uint64_t>(kReservedRecord, reserved);
  return w.Finish();
}

absl::StatusOr<uint64_t> DecodeVersionsFile(const std::string& path, std::string contents) {
  absl::StatusOr<base::RecordFileReader> reader =
      base::RecordFileReader::Parse(kVersionsKind, path, std::move(contents));
  if (!reader.ok()) return reader.status();
  return reader->Scalar<uint64_t>(kReservedRecord);
}

absl::StatusOr<std::unique_ptr<VersionReservation>> VersionReservation::Open(Env* env,
                                                                             const std::string& dir,
                                                                             uint64_t block) {
  if (block < 1) return absl::InvalidArgumentError("version reservation: block must be >= 1");
  std::string path = absl::StrCat(dir, "/", kVersionsFileName);
  uint64_t reserved = 0;
  bool had_file = false;
  absl::StatusOr<std::string> contents = env->ReadFile(path);
  if (contents.ok()) {
    absl::StatusOr<uint64_t> decoded = DecodeVersionsFile(path, *std::move(contents));
    if (!decoded.ok()) return decoded.status();
    reserved = *decoded;
    had_file = true;
  } else if (!absl::IsNotFound(contents.status())) {
    return contents.status();
  }
  return std::unique_ptr<VersionReservation>(
      new VersionReservation(env, std::move(path), block, reserved, had_file));
}

uint64_t VersionReservation::reserved() const {
  absl::MutexLock lock(&mu_);
  return reserved_;
}

uint64_t VersionReservation::FirstVersion(uint64_t recovered) const {
  if (!had_file_) return recovered;
  absl::MutexLock lock(&mu_);
  return std::max(reserved_ + 1, recovered);
}

absl::Status VersionReservation::Cover(uint64_t version) {
  // Held across the write: concurrent callers must not race a smaller mark over a larger one.
  absl::MutexLock lock(&mu_);
  if (version <= reserved_) return absl::OkStatus();
  const uint64_t reserved = version + block_ - 1;
  absl::Status written = env_->WriteFileAtomically(path_, EncodeVersionsFile(reserved));
  if (!written.ok()) {
    return absl::Status(written.code(), absl::StrCat("reserving model version ", version, " in ",
                                                     path_, ": ", written.message()));
  }
  reserved_ = reserved;
  return absl::OkStatus();
}

}  // namespace strata::update
