// Drift detectors on a stream of values in [0, 1], here the prequential error stream (1 when the
// current readout mispredicted a labelled sample before absorbing it, else 0). Both detectors
// signal an INCREASE of the stream's mean: for an error stream that is the change worth paying
// for; a drop in error is good news and needs no refresh.
//
//   PageHinkley  Page (1954), "Continuous inspection schemes", in the form of Gama et al. (2013),
//                "On evaluating stream learning algorithms": cumulative deviations from the
//                running mean, alarm when they exceed the running minimum by more than lambda.
//                O(1) time and memory per value.
//   Adwin        Bifet & Gavaldà (2007), "Learning from time-changing data with adaptive
//                windowing", ADWIN2: a window kept as an exponential histogram; whenever two
//                sub-windows have means further apart than the bound eps_cut, the older part is
//                dropped. O(log W) memory and time per value. Its window mean is also a good
//                estimate of the current error rate.
//
// Measured delays and false-alarm rates: docs/update-policies.md (from tests/drift_detector_test).
// Not thread-safe: one detector per stream, owned by its caller (UpdatePolicy locks around it).
#ifndef STRATA_UPDATE_DRIFT_DETECTOR_H_
#define STRATA_UPDATE_DRIFT_DETECTOR_H_

#include <cstdint>
#include <deque>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace strata::update {

class DriftDetector {
 public:
  virtual ~DriftDetector() = default;

  // Adds the next value (expected in [0, 1]). True if this value completes the detection of an
  // increase in the mean. After an alarm the detector has already re-armed itself (Page-Hinkley
  // restarts; ADWIN has dropped the pre-change part of its window), so the caller only reacts.
  virtual bool Add(double value) = 0;
  // Forgets everything, as if newly constructed.
  virtual void Reset() = 0;
  // The detector's estimate of the current mean (Page-Hinkley: since its last restart; ADWIN: of
  // its adaptive window). 0 before any value.
  virtual double Mean() const = 0;
  // Values in the current estimate (since restart / the window width).
  virtual int64_t Width() const = 0;
  // Alarms since construction (Reset does not clear this).
  virtual int64_t alarms() const = 0;
  virtual absl::string_view name() const = 0;
};

struct PageHinkleyOptions {
  // Magnitude of change tolerated: deviations up to delta above the mean are not evidence.
  double delta = 0.005;
  // Alarm threshold on m_T - min_t m_t. Larger: fewer false alarms, longer delays.
  double lambda = 50;
  // No alarm before this many values since the last restart (the running mean must settle).
  int64_t min_samples = 30;
};

class PageHinkley : public DriftDetector {
 public:
  explicit PageHinkley(const PageHinkleyOptions& options = {}) : options_(options) {}

  // m_T = sum_{t<=T} (x_t - x_bar_t - delta), x_bar_t = mean(x_1..x_t) (the running mean at
  // each step, as Gama et al. and MOA compute it; with x_bar_T in every term the sum would be
  // identically -T delta); M_T = min_{t<=T} m_t. Alarm when T >= min_samples and
  // m_T - M_T > lambda; then restart.
  bool Add(double value) override;
  void Reset() override;
  double Mean() const override { return mean_; }
  int64_t Width() const override { return count_; }
  int64_t alarms() const override { return alarms_; }
  absl::string_view name() const override { return "page-hinkley"; }

 private:
  PageHinkleyOptions options_;
  int64_t count_ = 0;
  double mean_ = 0;
  double cumulative_ = 0;  // m_T
  double minimum_ = 0;     // M_T
  int64_t alarms_ = 0;
};

struct AdwinOptions {
  // Confidence: the probability bound of a false cut per check (the paper's delta).
  double delta = 0.002;
  // Buckets per row of the exponential histogram before two merge (the paper's M).
  int max_buckets = 5;
  // Check for a cut every `clock` values (MOA's default 32; 1 checks on every value).
  int clock = 32;
  // Neither sub-window may be shorter than this.
  int min_window = 5;
};

class Adwin : public DriftDetector {
 public:
  explicit Adwin(const AdwinOptions& options = {}) : options_(options) {}

  // Inserts the value; every `clock` values, while some split W = W0 . W1 (W0 older) has
  //   |mean(W0) - mean(W1)| >= eps_cut,
  //   eps_cut = sqrt(2 / m * var(W) * ln(2 / delta')) + 2 / (3 m) * ln(2 / delta'),
  //   m = 1 / (1 / n0 + 1 / n1), delta' = delta / ln(n)       (Bifet & Gavaldà 2007, section 3,
  // the Bernstein form of the bound they recommend in practice), drops the oldest bucket.
  // True if any cut happened with mean(W1) > mean(W0) (an increase).
  bool Add(double value) override;
  void Reset() override;
  double Mean() const override { return width_ > 0 ? total_ / static_cast<double>(width_) : 0; }
  int64_t Width() const override { return width_; }
  int64_t alarms() const override { return alarms_; }
  absl::string_view name() const override { return "adwin"; }

  // Window variance (of the values, population form).
  double Variance() const { return width_ > 0 ? variance_ / static_cast<double>(width_) : 0; }

 private:
  struct Bucket {
    double total = 0;     // sum of the values
    double variance = 0;  // sum of squared deviations from the bucket mean
  };
  void Compress();
  // Drops the oldest bucket and updates the totals.
  void DropOldest();
  // One pass of cut checks; returns true if a cut with an increase happened.
  bool DetectAndCut();

  AdwinOptions options_;
  // rows_[i] holds buckets of 2^i values, front = oldest. Older rows hold older values.
  std::vector<std::deque<Bucket>> rows_;
  int64_t width_ = 0;
  double total_ = 0;
  double variance_ = 0;  // sum of squared deviations from the window mean
  int64_t since_check_ = 0;
  int64_t alarms_ = 0;
};

// "page-hinkley" or "adwin" with default options; INVALID_ARGUMENT otherwise.
absl::StatusOr<std::unique_ptr<DriftDetector>> MakeDriftDetector(absl::string_view name);

}  // namespace strata::update

#endif  // STRATA_UPDATE_DRIFT_DETECTOR_H_
