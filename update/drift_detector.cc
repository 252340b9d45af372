#include "update/drift_detector.h"

#include <algorithm>
#include <cmath>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace strata::update {

// ---- Page-Hinkley -----------------------------------------------------------------------------

bool PageHinkley::Add(double value) {
  ++count_;
  mean_ += (value - mean_) / static_cast<double>(count_);
  cumulative_ += value - mean_ - options_.delta;
  minimum_ = std::min(minimum_, cumulative_);
  if (count_ >= options_.min_samples && cumulative_ - minimum_ > options_.lambda) {
    ++alarms_;
    Reset();
    return true;
  }
  return false;
}

void PageHinkley::Reset() {
  count_ = 0;
  mean_ = 0;
  cumulative_ = 0;
  minimum_ = 0;
}

// ---- ADWIN ------------------------------------------------------------------------------------

bool Adwin::Add(double value) {
  // Welford update of the window's sum of squared deviations, then a new bucket of one value.
  if (width_ > 0) {
    const double mean = total_ / static_cast<double>(width_);
    variance_ += static_cast<double>(width_) / static_cast<double>(width_ + 1) * (value - mean) *
                 (value - mean);
  }
  ++width_;
  total_ += value;
  if (rows_.empty()) rows_.emplace_back();
  rows_[0].push_back(Bucket{value, 0});
  Compress();

  if (++since_check_ < options_.clock) return false;
  since_check_ = 0;
  const bool increase = DetectAndCut();
  if (increase) ++alarms_;
  return increase;
}

void Adwin::Reset() {
  rows_.clear();
  width_ = 0;
  total_ = 0;
  variance_ = 0;
  since_check_ = 0;
}

void Adwin::Compress() {
  for (size_t i = 0; i < rows_.size(); ++i) {
    if (static_cast<int>(rows_[i].size()) <= options_.max_buckets) break;
    // Merge the two oldest buckets of row i (2^i values each) into one of row i + 1.
    const double n = std::ldexp(1.0, static_cast<int>(i));
    const Bucket a = rows_[i].front();
    rows_[i].pop_front();
    const Bucket b = rows_[i].front();
    rows_[i].pop_front();
    const double diff = a.total / n - b.total / n;
    Bucket merged{a.total + b.total, a.variance + b.variance + n * n / (2 * n) * diff * diff};
    if (i + 1 == rows_.size()) rows_.emplace_back();
    rows_[i + 1].push_back(merged);
  }
}

void Adwin::DropOldest() {
  for (size_t i = rows_.size(); i-- > 0;) {
    if (rows_[i].empty()) continue;
    const Bucket b = rows_[i].front();
    rows_[i].pop_front();
    const double nb = std::ldexp(1.0, static_cast<int>(i));
    const double n = static_cast<double>(width_);
    const double rest = n - nb;
    if (rest <= 0) {
      Reset();
      return;
    }
    const double mean_b = b.total / nb;
    const double mean_rest = (total_ - b.total) / rest;
    variance_ -= b.variance + nb * rest / n * (mean_b - mean_rest) * (mean_b - mean_rest);
    variance_ = std::max(variance_, 0.0);
    total_ -= b.total;
    width_ -= static_cast<int64_t>(nb);
    while (!rows_.empty() && rows_.back().empty()) rows_.pop_back();
    return;
  }
}

bool Adwin::DetectAndCut() {
  bool increase = false;
  bool cut = true;
  while (cut && width_ > 2 * options_.min_window) {
    cut = false;
    const double n = static_cast<double>(width_);
    const double variance = variance_ / n;
    const double ln_term = std::log(2.0 * std::max(1.0, std::log(n)) / options_.delta);
    double n0 = 0, total0 = 0;
    // W0 grows from the oldest bucket; W1 is the rest.
    for (size_t i = rows_.size(); i-- > 0 && !cut;) {
      const double nb = std::ldexp(1.0, static_cast<int>(i));
      for (const Bucket& b : rows_[i]) {
        n0 += nb;
        total0 += b.total;
        const double n1 = n - n0;
        if (n1 < options_.min_window) break;
        if (n0 < options_.min_window) continue;
        const double mean0 = total0 / n0, mean1 = (total_ - total0) / n1;
        const double m = 1.0 / (1.0 / n0 + 1.0 / n1);
        const double eps = std::sqrt(2.0 / m * variance * ln_term) + 2.0 / (3.0 * m) * ln_term;
        if (std::abs(mean0 - mean1) >= eps) {
          if (mean1 > mean0) increase = true;
          cut = true;
          break;
        }
      }
    }
    if (cut) DropOldest();
  }
  return increase;
}

absl::StatusOr<std::unique_ptr<DriftDetector>> MakeDriftDetector(absl::string_view name) {
  if (name == "page-hinkley") return std::unique_ptr<DriftDetector>(new PageHinkley());
  if (name == "adwin") return std::unique_ptr<DriftDetector>(new Adwin());
  return absl::InvalidArgumentError(absl::StrCat("unknown drift detector '", std::string(name),
                                                 "' (expected page-hinkley or adwin)"));
}

}  // namespace strata::update
