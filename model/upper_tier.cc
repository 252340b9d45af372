#include "model/upper_tier.h"

#include <omp.h>

#include <Eigen/Cholesky>
#include <algorithm>
#include <cmath>
#include <limits>
#include <utility>

#include "absl/strings/str_cat.h"
#include "base/log.h"

namespace strata::model {

std::vector<int> Readout::Classify(const MatrixF& features) const {
  const MatrixF scores = Scores(features);
  std::vector<int> classes(scores.rows());
  for (Eigen::Index i = 0; i < scores.rows(); ++i) {
    Eigen::Index best = 0;
    scores.row(i).maxCoeff(&best);
    classes[i] = static_cast<int>(best);
  }
  return classes;
}

size_t Readout::CountCorrect(const MatrixF& features, std::span<const std::string> labels) const {
  const std::vector<int> classes = Classify(features);
  size_t correct = 0;
  for (size_t i = 0; i < classes.size() && i < labels.size(); ++i) {
    correct += this->labels[classes[i]] == labels[i];
  }
  return correct;
}

fpga::OpCounts Readout::Counts(int rows) const {
  const uint64_t n = static_cast<uint64_t>(std::max(rows, 0));
  fpga::OpCounts counts;
  const uint64_t d = static_cast<uint64_t>(weights.rows());
  const uint64_t classes = static_cast<uint64_t>(weights.cols());
  counts.fp32_macs = n * d * classes;
  counts.dram_bytes = 4 * n * classes;
  return counts;
}

namespace {

uint64_t NonNegative(double x) { return x <= 0 ? 0 : static_cast<uint64_t>(x); }

// Forward and backward substitution for every class column, and the traffic of G's factor.
fpga::OpCounts TriangularSolveCounts(int d, int classes) {
  const double dd = static_cast<double>(d), c = static_cast<double>(classes);
  fpga::OpCounts counts;
  counts.fp64_macs = NonNegative(dd * dd * c);  // 2 solves x d^2 / 2 MACs per column
  // The factor's lower triangle read once per solve, Q read, W written (as fp32).
  counts.dram_bytes = NonNegative(2 * 8 * dd * (dd + 1) / 2 + 8 * dd * c + 4 * dd * c);
  return counts;
}

}  // namespace

fpga::OpCounts AbsorbCounts(int d, int classes, int rows) {
  const double dd = d, c = classes, k = rows;
  fpga::OpCounts counts;
  counts.fp64_macs = NonNegative(k * dd * (dd + 1) / 2 + k * dd * c);
  counts.dram_bytes = NonNegative(4 * k * dd + 2 * 8 * dd * (dd + 1) / 2 + 2 * 8 * dd * c);
  return counts;
}

fpga::OpCounts CholeskyRefreshCounts(int d, int classes) {
  const double dd = d;
  fpga::OpCounts counts = TriangularSolveCounts(d, classes);
  counts.fp64_macs += NonNegative(dd * dd * dd / 6);
  // G's lower triangle read, the factor written.
  counts.dram_bytes += NonNegative(2 * 8 * dd * (dd + 1) / 2);
  return counts;
}

fpga::OpCounts RankUpdateRefreshCounts(int d, int classes, int rows) {
  const double dd = d, k = rows;
  fpga::OpCounts counts = TriangularSolveCounts(d, classes);
  counts.fp64_macs += NonNegative(k * dd * dd);
  // The factor read and written once per block of updates; H read.
  counts.dram_bytes += NonNegative(2 * 8 * dd * (dd + 1) / 2 + 4 * k * dd);
  return counts;
}

fpga::OpCounts RefreshReportCounts(const RefreshReport& report, int d, int classes) {
  const double dd = d;
  fpga::OpCounts counts = TriangularSolveCounts(d, classes);
  counts.fp64_macs = NonNegative(report.flops() / 2);
  if (report.path == RefreshPath::kRefactor) {
    counts.dram_bytes += NonNegative(2 * 8 * dd * (dd + 1) / 2);
  } else {
    counts.dram_bytes += NonNegative(2 * 8 * dd * (dd + 1) / 2 + 4.0 * report.rows_folded * dd);
  }
  return counts;
}

fpga::OpCounts CheapestRefreshCounts(int d, int classes, int rows) {
  const fpga::OpCounts full = CholeskyRefreshCounts(d, classes);
  if (rows < 0) return full;
  const fpga::OpCounts rank = RankUpdateRefreshCounts(d, classes, rows);
  return rank.fp64_macs < full.fp64_macs ? rank : full;
}
namespace {

// Edge of the square blocks of the symmetric rank-k update and of the blocked Cholesky: large
// enough for efficient block products, small enough that a D = 6448 triangle has ~350 blocks to
// share between the threads.
constexpr Eigen::Index kSyrkBlock = 256;
constexpr Eigen::Index kCholeskyBlock = 256;
// Column-block width and vectors per sweep of the factor update (see RotateRowsIntoFactor).
constexpr Eigen::Index kRotationBlock = 64;
constexpr Eigen::Index kRotationVectors = 64;
// Rows of the trailing panel one thread rotates at a time: 256 rows x 128 columns of doubles stay
// in the L2 cache while the block's rotations sweep over them.
constexpr Eigen::Index kRotationRowChunk = 256;
// Batches with fewer rows go through Eigen's single-threaded rankUpdate (see Absorb).
constexpr Eigen::Index kSmallBatch = 32;
// Below this many multiply-adds a kernel runs on the calling thread only.
constexpr double kParallelWork = 1 << 21;

// c (lower triangle, n x n) <- beta c + a a^T, with a n x k. The triangle is cut into square
// blocks; each block is one block product (diagonal blocks are computed whole, which writes their
// strict upper part too — unspecified for our callers). The blocks are shared out dynamically
// among the OpenMP threads, each running Eigen's single-threaded GEMM on its block (Eigen does not
// nest threads inside a parallel region).
template <typename CBlock, typename ABlock>
void SymmetricRankUpdateLower(CBlock&& c, const ABlock& a, double alpha, double beta) {
  const Eigen::Index n = c.rows();
  const Eigen::Index blocks = (n + kSyrkBlock - 1) / kSyrkBlock;
  const Eigen::Index tasks = blocks * (blocks + 1) / 2;
  const bool parallel = 0.5 * static_cast<double>(n) * n * a.cols() > kParallelWork;
#pragma omp parallel for schedule(dynamic) if (parallel)
  for (Eigen::Index t = 0; t < tasks; ++t) {
    // Task t -> block (bi, bj), bi >= bj, enumerated row by row of the block triangle.
    Eigen::Index bi = static_cast<Eigen::Index>((std::sqrt(8.0 * t + 1) - 1) / 2);
    while (bi * (bi + 1) / 2 > t) --bi;
    while ((bi + 1) * (bi + 2) / 2 <= t) ++bi;
    const Eigen::Index bj = t - bi * (bi + 1) / 2;
    const Eigen::Index i0 = bi * kSyrkBlock, j0 = bj * kSyrkBlock;
    const Eigen::Index ni = std::min(kSyrkBlock, n - i0), nj = std::min(kSyrkBlock, n - j0);
    auto block = c.block(i0, j0, ni, nj);
    if (beta != 1.0) block *= beta;
    block.noalias() += alpha * a.middleRows(i0, ni) * a.middleRows(j0, nj).transpose();
  }
}

// Blocked right-looking Cholesky of the lower triangle of `m` in place (m = L L^T; the strict upper
// triangle is left as it was). The panel solve and the trailing update, which hold all but
// D * kCholeskyBlock^2 / 3 of the D^3 / 3 flops, run on every thread. Returns the smallest pivot
// L(j, j), or a value <= 0 (or NaN) if m is not numerically positive definite.
double CholeskyInPlace(Eigen::MatrixXd& m) {
  const Eigen::Index n = m.rows();
  double min_pivot = std::numeric_limits<double>::infinity();
  for (Eigen::Index k0 = 0; k0 < n; k0 += kCholeskyBlock) {
    const Eigen::Index kb = std::min(kCholeskyBlock, n - k0), rest = n - k0 - kb;
    Eigen::LLT<Eigen::MatrixXd, Eigen::Lower> diagonal(m.block(k0, k0, kb, kb));
    if (diagonal.info() != Eigen::Success) return 0.0;
    auto l11 = m.block(k0, k0, kb, kb);
    l11.triangularView<Eigen::Lower>() = diagonal.matrixL();
    const double pivot = l11.diagonal().minCoeff();
    if (!(pivot > 0)) return pivot;
    min_pivot = std::min(min_pivot, pivot);
    if (rest == 0) break;
    // L21 = A21 L11^-T, rows shared among the threads.
    auto a21 = m.block(k0 + kb, k0, rest, kb);
    const Eigen::Index chunks = (rest + kSyrkBlock - 1) / kSyrkBlock;
#pragma omp parallel for schedule(dynamic) if (static_cast <double>(rest) * kb * kb > kParallelWork)
    for (Eigen::Index c = 0; c < chunks; ++c) {
      const Eigen::Index r0 = c * kSyrkBlock, rows = std::min(kSyrkBlock, rest - r0);
      auto panel = a21.middleRows(r0, rows);
      l11.triangularView<Eigen::Lower>().transpose().solveInPlace<Eigen::OnTheRight>(panel);
    }
    // A22 -= L21 L21^T (lower triangle).
    SymmetricRankUpdateLower(m.block(k0 + kb, k0 + kb, rest, rest), a21, -1.0, 1.0);
  }
  return min_pivot;
}

// Folds the columns of v (n x k, the new rows h_i as columns) into the Cholesky factor l (lower
// triangle): afterwards l l^T = l_old l_old^T + v v^T, and v is destroyed. For each column j of l
// and each vector i a plane rotation of (l(:, j), v(:, i)) zeroes v(j, i), which keeps l lower
// triangular with a positive diagonal; rotations are orthogonal, so this is backward stable.
//
// Blocked for the caches and both cores: the vectors go kRotationVectors at a time; the columns of
// l in blocks of kRotationBlock. For a block, the rotations are first found (and applied) on its
// small diagonal part on one thread, then applied in the same order to the rows below, which the
// threads share in chunks that stay in cache through all of the block's rotations.
// Flops: 6 per element pair per rotation = 3 k n^2 (minus lower-order terms).
void RotateRowsIntoFactor(Eigen::MatrixXd& l, Eigen::MatrixXd& v) {
  const Eigen::Index n = l.rows();
  std::vector<double> cosines(kRotationBlock * kRotationVectors);
  std::vector<double> sines(kRotationBlock * kRotationVectors);
  for (Eigen::Index v0 = 0; v0 < v.cols(); v0 += kRotationVectors) {
    const Eigen::Index m = std::min(kRotationVectors, v.cols() - v0);
    for (Eigen::Index j0 = 0; j0 < n; j0 += kRotationBlock) {
      const Eigen::Index j1 = std::min(n, j0 + kRotationBlock);
      // The diagonal block: find each rotation and apply it to the rows of the block below j.
      for (Eigen::Index j = j0; j < j1; ++j) {
        double* lj = &l(0, j);
        for (Eigen::Index i = 0; i < m; ++i) {
          double* vi = &v(0, v0 + i);
          const double a = lj[j], b = vi[j];
          const double r = std::hypot(a, b);
          const double c = b == 0 ? 1.0 : a / r, s = b == 0 ? 0.0 : b / r;
          cosines[(j - j0) * m + i] = c;
          sines[(j - j0) * m + i] = s;
          if (b == 0) continue;
          lj[j] = r;
          vi[j] = 0;
          for (Eigen::Index row = j + 1; row < j1; ++row) {
            const double x = lj[row], y = vi[row];
            lj[row] = c * x + s * y;
            vi[row] = c * y - s * x;
          }
        }
      }
      // The rows below the block: the same rotations, in the same order.
      const Eigen::Index below = n - j1;
      if (below == 0) continue;
      const Eigen::Index chunks = (below + kRotationRowChunk - 1) / kRotationRowChunk;
      const bool parallel = 6.0 * static_cast<double>(below) * (j1 - j0) * m > kParallelWork;
#pragma omp parallel for schedule(static) if (parallel)
      for (Eigen::Index chunk = 0; chunk < chunks; ++chunk) {
        const Eigen::Index r0 = j1 + chunk * kRotationRowChunk;
        const Eigen::Index r1 = std::min(n, r0 + kRotationRowChunk);
        for (Eigen::Index j = j0; j < j1; ++j) {
          double* __restrict lj = &l(0, j);
          for (Eigen::Index i = 0; i < m; ++i) {
            const double c = cosines[(j - j0) * m + i], s = sines[(j - j0) * m + i];
            if (s == 0) continue;
            double* __restrict vi = &v(0, v0 + i);
#pragma omp simd
            for (Eigen::Index row = r0; row < r1; ++row) {
              const double x = lj[row], y = vi[row];
              lj[row] = c * x + s * y;
              vi[row] = c * y - s * x;
            }
          }
        }
      }
    }
  }
}

// W = L^-T L^-1 Q by two triangular solves, the classes shared among the threads. `cross` is the
// tier's column-major Q without its spare capacity columns.
template <typename CrossColumns>
MatrixF SolveWithFactor(const Eigen::MatrixXd& l, const CrossColumns& cross) {
  Eigen::MatrixXd x = cross;  // column-major: each class's right-hand side contiguous
  const Eigen::Index classes = x.cols();
  const int threads = std::max(1, std::min<int>(omp_get_max_threads(), static_cast<int>(classes)));
#pragma omp parallel for num_threads(threads) \
    schedule(static) if (static_cast <double>(l.rows()) * l.rows() * classes > kParallelWork)
  for (int t = 0; t < threads; ++t) {
    const Eigen::Index c0 = classes * t / threads, c1 = classes * (t + 1) / threads;
    if (c1 == c0) continue;
    auto rhs = x.middleCols(c0, c1 - c0);
    l.triangularView<Eigen::Lower>().solveInPlace(rhs);
    l.triangularView<Eigen::Lower>().transpose().solveInPlace(rhs);
  }
  return x.cast<float>();
}

// The largest number of rows kept for a factor update before the factor is dropped.
int64_t MaxPendingRows(int feature_size) { return std::max<int64_t>(1024, feature_size / 4); }

// Q's allocated class columns for `classes` classes when `capacity` are allocated: the same
// geometric rule as the Gram accumulators' (at least doubling), so that adding classes one at a
// time copies amortised O(D) per class.
Eigen::Index GrowClassCapacity(Eigen::Index capacity, Eigen::Index classes) {
  if (classes <= capacity) return capacity;
  return std::max<Eigen::Index>({classes, 2 * capacity, 16});
}

}  // namespace

UpperTier::UpperTier(int feature_size, double lambda)
    : UpperTier(feature_size, lambda, UpperTierOptions()) {}

UpperTier::UpperTier(int feature_size, double lambda, const UpperTierOptions& options)
    : lambda_(lambda),
      options_(options),
      gram_(lambda * MatrixD::Identity(feature_size, feature_size)),
      cross_(Eigen::MatrixXd::Zero(feature_size, 0)) {
  DropFactor(options_.keep_factor ? "no refresh has computed a factor yet" : "keep_factor is off");
}

absl::StatusOr<std::vector<float>> CalibrateReadoutScales(const MatrixF& features,
                                                          double percentile) {
  if (features.rows() == 0 || features.cols() == 0) {
    return absl::InvalidArgumentError("readout scales: no calibration features");
  }
  if (!(percentile > 0 && percentile <= 100)) {
    return absl::InvalidArgumentError(
        absl::StrCat("readout scales: percentile ", percentile, ", expected (0, 100]"));
  }
  if (!features.allFinite()) {
    return absl::InvalidArgumentError("readout scales: the calibration features hold NaN or Inf");
  }
  const Eigen::Index rows = features.rows(), d = features.cols();
  // The k-th smallest |h_j| with k = ceil(p/100 * rows) - 1 (the maximum for p = 100).
  const Eigen::Index k = std::clamp<Eigen::Index>(
      static_cast<Eigen::Index>(std::ceil(percentile / 100.0 * static_cast<double>(rows))) - 1, 0,
      rows - 1);
  std::vector<float> scales(d);
#pragma omp parallel
  {
    std::vector<float> column(rows);
#pragma omp for schedule(static)
    for (Eigen::Index j = 0; j < d; ++j) {
      for (Eigen::Index n = 0; n < rows; ++n) column[n] = std::abs(features(n, j));
      std::nth_element(column.begin(), column.begin() + k, column.end());
      scales[j] = column[k] / 127.0f;
    }
  }
  const float largest = *std::max_element(scales.begin(), scales.end());
  for (float& s : scales) {
    if (!(s > 0)) s = largest > 0 ? largest : 1.0f;
  }
  return scales;
}

UpperTier::UpperTier(const UpperTier& other)
    : lambda_(other.lambda_),
      options_(other.options_),
      gram_(other.gram()),  // gram() folds the source's accumulator first, so cross_ is folded too
      cross_(other.cross_),
      class_reallocations_(other.class_reallocations_),
      labels_(other.labels_),
      index_(other.index_),
      samples_seen_(other.samples_seen_),
      factor_(other.factor_),
      pending_(other.pending_),
      pending_rows_(other.pending_rows_),
      factor_blocker_(other.factor_blocker_),
      updates_since_refactor_(other.updates_since_refactor_),
      last_refresh_(other.last_refresh_),
      readout_scales_(other.readout_scales_),
      gram_backend_(other.gram_backend_) {}

UpperTier& UpperTier::operator=(const UpperTier& other) {
  if (this != &other) *this = UpperTier(other);
  return *this;
}

UpperTier::~UpperTier() = default;

const MatrixD& UpperTier::gram() const {
  if (absl::Status s = FoldGram(); !s.ok()) STRATA_LOG(ERROR) << "upper tier: " << s;
  return gram_;
}

MatrixD UpperTier::cross() const {
  if (absl::Status s = FoldGram(); !s.ok()) STRATA_LOG(ERROR) << "upper tier: " << s;
  return cross_.leftCols(num_classes());
}

namespace {

// The nearest float with at most 16 significant bits: then s * q is exact in float for every
// |q| <= 127 (16 + 7 bits <= float's 24-bit significand).
float RoundTo16Bits(float value) {
  int exponent = 0;
  const double mantissa = std::frexp(static_cast<double>(value), &exponent);  // in [0.5, 1)
  return static_cast<float>(std::ldexp(std::nearbyint(std::ldexp(mantissa, 16)), exponent - 16));
}

}  // namespace

absl::Status UpperTier::set_readout_scales(std::vector<float> scales) {
  if (!scales.empty() && static_cast<int>(scales.size()) != feature_size()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "upper tier: ", scales.size(), " readout scales for ", feature_size(), " features"));
  }
  for (size_t j = 0; j < scales.size(); ++j) {
    if (!(scales[j] > 0) || !std::isfinite(scales[j])) {
      return absl::InvalidArgumentError(absl::StrCat("upper tier: readout scale ", j, " = ",
                                                     scales[j], ", expected a finite value > 0"));
    }
    scales[j] = RoundTo16Bits(scales[j]);
  }
  // Rows already in the accumulator were quantised with the old scales: fold them in first.
  if (absl::Status s = FoldGram(); !s.ok()) return s;
  readout_scales_ = std::move(scales);
  if (readout_scales_.empty()) accumulator_.reset();
  return absl::OkStatus();
}

absl::Status UpperTier::QuantizeFeatures(const MatrixF& features, std::vector<int8_t>* quantized,
                                         MatrixF* dequantized) const {
  if (readout_scales_.empty()) {
    return absl::FailedPreconditionError("upper tier: no readout scales (float readout features)");
  }
  if (features.cols() != feature_size()) {
    return absl::InvalidArgumentError(absl::StrCat("upper tier: features have ", features.cols(),
                                                   " columns, expected ", feature_size()));
  }
  const Eigen::Index rows = features.rows(), d = features.cols();
  quantized->resize(static_cast<size_t>(rows * d));
  if (dequantized != nullptr) dequantized->resize(rows, d);
  for (Eigen::Index n = 0; n < rows; ++n) {
    for (Eigen::Index j = 0; j < d; ++j) {
      const float s = readout_scales_[j];
      float q = std::nearbyint(features(n, j) / s);
      if (!(q <= 127.0f)) q = q > 127.0f ? 127.0f : 0.0f;  // NaN -> 0
      if (q < -127.0f) q = -127.0f;
      (*quantized)[n * d + j] = static_cast<int8_t>(q);
      if (dequantized != nullptr) (*dequantized)(n, j) = s * q;  // exact (16-bit scales)
    }
  }
  return absl::OkStatus();
}

absl::Status UpperTier::AttachGramBackend(fpga::Backend* backend) {
  if (backend != nullptr && readout_scales_.empty()) {
    return absl::FailedPreconditionError(
        "upper tier: a Gram backend needs int8 readout scales (the bundle has none: re-fit it "
        "with strata-train --readout_device=cpu|emu|xrt)");
  }
  if (absl::Status s = FoldGram(); !s.ok()) return s;
  accumulator_.reset();
  gram_backend_ = backend;
  return absl::OkStatus();
}

uint64_t UpperTier::unfolded_gram_rows() const {
  return (accumulator_ == nullptr ? 0 : accumulator_->rows()) + staged_classes_.size();
}

absl::Status UpperTier::AccumulateStaged(fpga::OpCounts& counts) const {
  if (staged_classes_.empty()) return absl::OkStatus();
  if (accumulator_ == nullptr) {
    absl::StatusOr<std::unique_ptr<fpga::GramInt8Accumulator>> created =
        gram_backend_->CreateGramInt8(feature_size(), num_classes());
    if (!created.ok()) return created.status();
    accumulator_ = *std::move(created);
  }
  absl::StatusOr<fpga::OpCounts> done = accumulator_->Accumulate(staged_rows_, staged_classes_);
  if (!done.ok()) return done.status();
  counts += *done;
  staged_rows_.clear();
  staged_classes_.clear();
  return absl::OkStatus();
}

absl::Status UpperTier::FoldGram(fpga::OpCounts* counts, fpga::OpCounts* absorb_counts) const {
  if (counts != nullptr) *counts = fpga::OpCounts{};
  if (absorb_counts != nullptr) *absorb_counts = fpga::OpCounts{};
  fpga::OpCounts staged;
  if (absl::Status s = AccumulateStaged(staged); !s.ok()) return s;
  if (absorb_counts != nullptr) {
    *absorb_counts = staged;
  } else if (counts != nullptr) {
    *counts = staged;
  }
  if (accumulator_ == nullptr || accumulator_->rows() == 0) return absl::OkStatus();
  const Eigen::Index d = feature_size();
  const int c = accumulator_->num_classes();
  fpga::OpCounts work;
  if (const fpga::GramInt8Accumulator::HostSums sums = accumulator_->host_sums();
      sums.gram != nullptr) {
    // Host memory (cpu): fold straight from the accumulator, then zero it in place; no copy of its
    // D x D square and no fresh allocation. The integer triangle is read once.
    AddScaledSums(sums.gram, sums.cross, /*class_stride=*/d, /*feature_stride=*/1);
    absl::StatusOr<fpga::OpCounts> cleared = accumulator_->Clear();
    if (!cleared.ok()) return cleared.status();
    work = *cleared;
    work.dram_bytes +=
        static_cast<uint64_t>(d) * (d + 1) / 2 * 8 + static_cast<uint64_t>(d) * c * 8;
  } else {
    // A device (emu, xrt): read the sums back, fold the copy, start a fresh accumulator.
    std::vector<int64_t> g, q;
    absl::StatusOr<fpga::OpCounts> read = accumulator_->Read(&g, &q);
    if (!read.ok()) return read.status();
    absl::StatusOr<std::unique_ptr<fpga::GramInt8Accumulator>> fresh =
        gram_backend_->CreateGramInt8(feature_size(), num_classes());
    if (!fresh.ok()) return fresh.status();
    AddScaledSums(g.data(), q.data(), /*class_stride=*/1, /*feature_stride=*/c);
    accumulator_ = *std::move(fresh);
    work = *read;
  }
  if (counts != nullptr) {
    // The fold's fp64 MACs, and G's triangle and Q read and written.
    *counts += work;
    counts->fp64_macs += static_cast<uint64_t>(d) * (d + 1) / 2 + static_cast<uint64_t>(d) * c;
    counts->dram_bytes +=
        static_cast<uint64_t>(d) * (d + 1) / 2 * 16 + static_cast<uint64_t>(d) * c * 16;
  }
  return absl::OkStatus();
}

void UpperTier::AddScaledSums(const int64_t* g, const int64_t* q, Eigen::Index class_stride,
                              Eigen::Index feature_stride) const {
  const Eigen::Index d = feature_size();
  const int c = accumulator_->num_classes();
  // G_ij += s_i s_j G_int_ij: s_i s_j has at most 32 significant bits, so each term rounds once.
#pragma omp parallel for schedule(dynamic, 64) if (d >= 512)
  for (Eigen::Index i = 0; i < d; ++i) {
    const double si = readout_scales_[i];
    const int64_t* gi = g + i * d;
    double* out = gram_.row(i).data();
    for (Eigen::Index j = 0; j <= i; ++j) {
      out[j] += si * static_cast<double>(readout_scales_[j]) * static_cast<double>(gi[j]);
    }
    for (int k = 0; k < c; ++k) {
      cross_(i, k) += si * static_cast<double>(q[k * class_stride + i * feature_stride]);
    }
  }
}

int UpperTier::ClassIndex(absl::string_view label) const {
  auto it = index_.find(label);
  return it == index_.end() ? -1 : it->second;
}

int UpperTier::ClassIndexOrAdd(absl::string_view label) {
  auto [it, inserted] = index_.try_emplace(label, num_classes());
  if (inserted) {
    labels_.emplace_back(label);
    // A new class is a zero column of Q, and the columns past the old count already are zero:
    // only a full capacity costs a copy (of D x capacity doubles, at least doubling it).
    const Eigen::Index capacity = GrowClassCapacity(cross_.cols(), num_classes());
    if (capacity > cross_.cols()) {
      Eigen::MatrixXd grown(cross_.rows(), capacity);
      grown.leftCols(cross_.cols()) = cross_;
      grown.rightCols(capacity - cross_.cols()).setZero();
      cross_.swap(grown);
      ++class_reallocations_;
    }
    // Exact: a new class is a zero column of Q_int too. Amortised O(D) on every backend; only the
    // xrt backend can fail (the card cannot allocate the wider Q), and then the next Accumulate
    // with the new class is refused (INVALID_ARGUMENT) rather than miscounted.
    if (accumulator_ != nullptr) (void)accumulator_->GrowClasses(num_classes());
  }
  return it->second;
}

absl::Status UpperTier::set_forgetting(double alpha) {
  if (!(alpha > 0 && alpha <= 1)) {
    return absl::InvalidArgumentError(
        absl::StrCat("upper tier: forgetting factor ", alpha, ", expected 0 < alpha <= 1"));
  }
  options_.forgetting = alpha;
  return absl::OkStatus();
}

absl::Status UpperTier::Forget(std::span<const int> reset_classes, double decay,
                               fpga::OpCounts* counts) {
  if (counts != nullptr) *counts = fpga::OpCounts{};
  if (!(decay > 0 && decay <= 1)) {
    return absl::InvalidArgumentError(
        absl::StrCat("upper tier forget: decay ", decay, ", expected 0 < decay <= 1"));
  }
  for (const int c : reset_classes) {
    if (c < 0 || c >= num_classes()) {
      return absl::InvalidArgumentError(
          absl::StrCat("upper tier forget: class index ", c, " is not in 0..", num_classes() - 1));
    }
  }
  fpga::OpCounts work;
  if (absl::Status s = FoldGram(&work); !s.ok()) return s;
  for (const int c : reset_classes) cross_.col(c).setZero();
  if (decay != 1.0) {
    gram_.triangularView<Eigen::Lower>() *= decay;
    gram_.diagonal().array() += (1.0 - decay) * lambda_;
    cross_.leftCols(num_classes()) *= decay;
    DropFactor("forgetting on drift decayed G since the last refresh");
    const uint64_t d = static_cast<uint64_t>(feature_size());
    const uint64_t c = static_cast<uint64_t>(num_classes());
    work.fp64_macs += d * (d + 1) / 2 + d * c;
    work.dram_bytes += 16 * (d * (d + 1) / 2 + d * c);
  }
  if (counts != nullptr) *counts = work;
  return absl::OkStatus();
}

absl::Status UpperTier::Absorb(const MatrixF& features, std::span<const int> classes,
                               fpga::OpCounts* counts) {
  if (counts != nullptr) *counts = fpga::OpCounts{};
  if (features.cols() != feature_size()) {
    return absl::InvalidArgumentError(absl::StrCat("upper tier absorb: features have ",
                                                   features.cols(), " columns, expected ",
                                                   feature_size()));
  }
  if (static_cast<size_t>(features.rows()) != classes.size()) {
    return absl::InvalidArgumentError(absl::StrCat("upper tier absorb: ", features.rows(),
                                                   " feature rows but ", classes.size(),
                                                   " class indices"));
  }
  for (size_t i = 0; i < classes.size(); ++i) {
    if (classes[i] < 0 || classes[i] >= num_classes()) {
      return absl::InvalidArgumentError(absl::StrCat("upper tier absorb: class index ", classes[i],
                                                     " of sample ", i, " is not in 0..",
                                                     num_classes() - 1));
    }
  }
  if (classes.empty()) return absl::OkStatus();
  if (readout_scales_.empty()) {
    AbsorbFloat(features, classes);
    return absl::OkStatus();
  }
  std::vector<int8_t> quantized;
  MatrixF dequantized;
  if (absl::Status s = QuantizeFeatures(features, &quantized, &dequantized); !s.ok()) return s;
  if (gram_backend_ == nullptr || options_.forgetting != 1.0) {
    // No backend, or forgetting (alpha G is not an integer sum): the float64 path on the same
    // dequantised rows, after folding what the accumulator holds.
    if (absl::Status s = FoldGram(); !s.ok()) return s;
    AbsorbFloat(dequantized, classes);
    return absl::OkStatus();
  }
  staged_rows_.insert(staged_rows_.end(), quantized.begin(), quantized.end());
  staged_classes_.insert(staged_classes_.end(), classes.begin(), classes.end());
  if (staged_classes_.size() >= static_cast<size_t>(std::max(1, options_.gram_block_rows))) {
    fpga::OpCounts done;
    if (absl::Status s = AccumulateStaged(done); !s.ok()) {
      // Nothing of this call may remain: un-stage its rows (earlier staged rows stay).
      staged_rows_.resize(staged_rows_.size() - quantized.size());
      staged_classes_.resize(staged_classes_.size() - classes.size());
      return s;
    }
    if (counts != nullptr) *counts = done;
  }
  samples_seen_ += classes.size();
  BufferPendingRows(dequantized);
  return absl::OkStatus();
}

void UpperTier::AbsorbFloat(const MatrixF& features, std::span<const int> classes) {
  const MatrixD h = features.cast<double>();
  const double alpha = options_.forgetting;
  // G's lower triangle <- alpha G + H^T H: half the flops of a full product, G stays exactly
  // symmetric by construction, and the decay is fused into the same pass over G.
  if (h.rows() < kSmallBatch) {
    // A few rows: the pass over G is memory-bound, and Eigen's one-thread update avoids the
    // threads' start-up and the per-block product overheads (measured faster at batch 1).
    if (alpha != 1.0) gram_.triangularView<Eigen::Lower>() *= alpha;
    gram_.selfadjointView<Eigen::Lower>().rankUpdate(h.transpose());
  } else {
    SymmetricRankUpdateLower(gram_, h.transpose(), 1.0, alpha);
  }
  if (alpha != 1.0) {
    // Only the data part decays: G = alpha (G_old - lambda I) + lambda I + H^T H.
    gram_.diagonal().array() += (1.0 - alpha) * lambda_;
    cross_.leftCols(num_classes()) *= alpha;
    // lambda I is not decayed, so alpha G is no rank-k change of the kept factor's matrix.
    DropFactor("the forgetting factor decayed G since the last refresh");
  }
  for (size_t i = 0; i < classes.size(); ++i) {
    cross_.col(classes[i]) += h.row(static_cast<Eigen::Index>(i)).transpose();
  }
  samples_seen_ += classes.size();
  BufferPendingRows(features);
}

void UpperTier::BufferPendingRows(const MatrixF& features) {
  if (factor_.size() != 0) {
    if (pending_rows_ + features.rows() > MaxPendingRows(feature_size())) {
      DropFactor("more rows were absorbed since the last refresh than an update is worth");
    } else {
      pending_.insert(pending_.end(), features.data(), features.data() + features.size());
      pending_rows_ += features.rows();
    }
  }
}

void UpperTier::DropFactor(std::string why) {
  factor_.resize(0, 0);
  pending_.clear();
  pending_.shrink_to_fit();
  pending_rows_ = 0;
  updates_since_refactor_ = 0;
  factor_blocker_ = std::move(why);
}

double UpperTier::RefactorFlops() const {
  const double d = feature_size();
  return d * d * d / 3.0;
}

double UpperTier::UpdateFlops(int64_t rows) const {
  const double d = feature_size();
  return 3.0 * static_cast<double>(rows) * d * d;
}

absl::StatusOr<Readout> UpperTier::Solve() const {
  if (num_classes() == 0) {
    return absl::FailedPreconditionError("upper tier solve: no class has been seen yet");
  }
  if (absl::Status s = FoldGram(); !s.ok()) return s;
  Eigen::MatrixXd factor = gram_;  // reads the lower triangle only
  if (!(CholeskyInPlace(factor) > 0)) {
    return absl::InternalError(
        "upper tier solve: G is not positive definite (do the statistics hold NaN or Inf?)");
  }
  Readout readout;
  readout.weights = SolveWithFactor(factor, cross_.leftCols(num_classes()));
  if (!readout.weights.allFinite()) {
    return absl::InternalError("upper tier solve: the readout is not finite");
  }
  readout.labels = labels_;
  return readout;
}

absl::StatusOr<RefreshReport> UpperTier::PlanRefresh(RefreshMode mode) const {
  if (num_classes() == 0) {
    return absl::FailedPreconditionError("upper tier refresh: no class has been seen yet");
  }
  RefreshReport plan;
  const double d = feature_size();
  plan.solve_flops = 2.0 * d * d * num_classes();
  const bool can_update = factor_.size() != 0;
  switch (mode) {
    case RefreshMode::kForceRefactor:
      plan.path = RefreshPath::kRefactor;
      plan.reason = "forced";
      break;
    case RefreshMode::kForceFactorUpdate:
      if (!can_update) {
        return absl::FailedPreconditionError(
            absl::StrCat("upper tier refresh: no factor to update: ", factor_blocker_));
      }
      plan.path = RefreshPath::kFactorUpdate;
      plan.reason = "forced";
      break;
    case RefreshMode::kAuto:
      if (!can_update) {
        plan.path = RefreshPath::kRefactor;
        plan.reason = factor_blocker_;
      } else if (updates_since_refactor_ >= options_.refactor_every) {
        plan.path = RefreshPath::kRefactor;
        plan.reason = "periodic re-factor";
      } else if (options_.update_flop_weight * UpdateFlops(pending_rows_) < RefactorFlops()) {
        plan.path = RefreshPath::kFactorUpdate;
        plan.reason = "cost model";
      } else {
        plan.path = RefreshPath::kRefactor;
        plan.reason = "cost model";
      }
      break;
  }
  if (plan.path == RefreshPath::kRefactor) {
    plan.factor_flops = RefactorFlops();
  } else {
    plan.rows_folded = pending_rows_;
    plan.factor_flops = UpdateFlops(pending_rows_);
    plan.updates_since_refactor = updates_since_refactor_ + 1;
  }
  return plan;
}

absl::StatusOr<Readout> UpperTier::Refresh(RefreshMode mode) {
  absl::StatusOr<RefreshReport> plan = PlanRefresh(mode);
  if (!plan.ok()) return plan.status();
  if (absl::Status s = FoldGram(); !s.ok()) return s;
  Eigen::MatrixXd factor;
  if (plan->path == RefreshPath::kRefactor) {
    factor = gram_;
    plan->min_pivot = CholeskyInPlace(factor);
  } else {
    factor = std::move(factor_);
    const Eigen::Map<const MatrixF> rows(pending_.data(), pending_rows_, feature_size());
    Eigen::MatrixXd vectors = rows.transpose().cast<double>();
    RotateRowsIntoFactor(factor, vectors);
    plan->min_pivot = factor.diagonal().minCoeff();
  }
  if (!(plan->min_pivot > 0) || !std::isfinite(plan->min_pivot)) {
    DropFactor("the last refresh failed");
    return absl::InternalError(
        "upper tier refresh: G is not positive definite (do the statistics hold NaN or Inf?)");
  }
  Readout readout;
  readout.weights = SolveWithFactor(factor, cross_.leftCols(num_classes()));
  if (!readout.weights.allFinite()) {
    DropFactor("the last refresh failed");
    return absl::InternalError("upper tier refresh: the readout is not finite");
  }
  readout.labels = labels_;
  if (options_.keep_factor) {
    factor_ = std::move(factor);
    factor_blocker_.clear();
    pending_.clear();
    pending_rows_ = 0;
    updates_since_refactor_ = plan->updates_since_refactor;
  } else {
    DropFactor("keep_factor is off");
  }
  last_refresh_ = *std::move(plan);
  return readout;
}

absl::StatusOr<UpperTier> UpperTier::FromStatistics(double lambda, MatrixD gram, MatrixD cross,
                                                    std::vector<std::string> labels,
                                                    uint64_t samples_seen) {
  if (!(lambda > 0) || !std::isfinite(lambda)) {
    return absl::InvalidArgumentError(
        absl::StrCat("upper tier: lambda = ", lambda, ", expected a finite value > 0"));
  }
  if (gram.rows() != gram.cols()) {
    return absl::InvalidArgumentError(
        absl::StrCat("upper tier: G is ", gram.rows(), "x", gram.cols(), ", expected square"));
  }
  if (cross.rows() != gram.rows() || cross.cols() != static_cast<Eigen::Index>(labels.size())) {
    return absl::InvalidArgumentError(absl::StrCat("upper tier: Q is ", cross.rows(), "x",
                                                   cross.cols(), ", expected ", gram.rows(), "x",
                                                   labels.size()));
  }
  UpperTier tier(0, lambda);
  tier.gram_ = std::move(gram);
  tier.cross_ = cross;  // row-major in, column-major kept (capacity = the classes)
  for (size_t i = 0; i < labels.size(); ++i) {
    if (labels[i].empty()) {
      return absl::InvalidArgumentError(absl::StrCat("upper tier: label ", i, " is empty"));
    }
    if (!tier.index_.try_emplace(labels[i], static_cast<int>(i)).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("upper tier: label \"", labels[i], "\" appears twice"));
    }
  }
  tier.labels_ = std::move(labels);
  tier.samples_seen_ = samples_seen;
  return tier;
}

absl::StatusOr<std::vector<std::string>> UpperTier::AbsorbLabeled(
    const MatrixF& features, std::span<const std::string> labels, fpga::OpCounts* counts) {
  if (features.rows() != static_cast<Eigen::Index>(labels.size())) {
    return absl::InvalidArgumentError(
        absl::StrCat("absorb: ", features.rows(), " feature rows but ", labels.size(), " labels"));
  }
  if (features.cols() != feature_size()) {
    return absl::InvalidArgumentError(absl::StrCat("absorb: feature rows of width ",
                                                   features.cols(), ", expected ", feature_size()));
  }
  std::vector<std::string> new_labels;
  std::vector<int> classes;
  classes.reserve(labels.size());
  for (const std::string& label : labels) {
    const int before = num_classes();
    const int index = ClassIndexOrAdd(label);
    if (index >= before) new_labels.push_back(label);
    classes.push_back(index);
  }
  if (absl::Status status = Absorb(features, classes, counts); !status.ok()) return status;
  return new_labels;
}

}  // namespace strata::model
