// strata-soak-check: the soak bench's model-equality criterion (bench/soak.sh, docs/operations.md,
// "Soak test"). Recomputes, independently of the server, the upper tier a server should hold after
// absorbing a known set of acknowledged samples, and compares it with the server's snapshot.
//
//   batch fit  = the bundle's statistics (G0, Q0) + every acknowledged sample absorbed at once
//                (in --chunk_rows blocks of rows; one Absorb per block, no refresh in between)
//   server     = the snapshot the server wrote after the load (G, Q exactly as it streamed them)
//
// The acknowledged samples are --copies repetitions of the samples listed in --samples (the ghz
// Update payload: every OK stream sent exactly those). Their features are computed here by the
// bundle's float lower tier one sample per call, as the server computes them for one-sample Update
// messages (so serve with --device=float); the float features are then bit-identical and only
// float64 summation order differs between the two sides: the tolerance covers it (for W, together
// with G's condition number, see below).
//
// Prints the relative Frobenius differences of G, Q and the solved readouts W = G^-1 Q (float64,
// solved here by an Eigen Cholesky of each side's G), and the samples-seen counts. Exit status: 0
// if G and Q are within --tolerance, W within the larger of --tolerance and the perturbation bound
// cond(G) x (the G and Q differences), and the counts and labels agree; 1 if not; 2 on a usage or
// input error.
//
// Usage: strata-soak-check --bundle=B --snapshot=S --samples=FILE --copies=K [--tolerance=1e-9]
//   FILE: one sample per line, "LABEL BASE64_PIXELS" (input_size bytes each, pixels b -> b / 255).
#include <Eigen/Cholesky>
#include <Eigen/Eigenvalues>
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_split.h"
#include "model/bundle.h"
#include "model/tensor.h"
#include "model/upper_tier.h"
#include "update/env.h"
#include "update/snapshot.h"

ABSL_FLAG(std::string, bundle, "", "The model bundle the server was started with.");
ABSL_FLAG(std::string, snapshot, "", "The snapshot the server wrote after the load.");
ABSL_FLAG(std::string, samples, "", "The Update payload: lines of \"LABEL BASE64_PIXELS\".");
ABSL_FLAG(int64_t, copies, -1, "How many times the server acknowledged the whole payload.");
ABSL_FLAG(double, tolerance, 1e-9, "Largest relative Frobenius difference accepted.");
ABSL_FLAG(int64_t, chunk_rows, 65536, "Rows per Absorb call of the batch fit (bounds memory).");

namespace strata {
namespace {

using model::MatrixD;
using model::MatrixF;

struct Payload {
  std::vector<std::string> labels;
  MatrixF features;  // one row per payload sample
};

// ||a - b||_F / ||b||_F (b not all zero).
double RelativeDifference(const MatrixD& a, const MatrixD& b) { return (a - b).norm() / b.norm(); }

// G with its strict upper triangle filled from the lower (the only part UpperTier keeps).
MatrixD Symmetric(const MatrixD& gram) {
  MatrixD full = gram.selfadjointView<Eigen::Lower>();
  return full;
}

// Q with its columns in `labels` order (the two sides may have added new labels in different
// orders); empty if a label is missing.
MatrixD CrossInOrder(const model::UpperTier& upper, const std::vector<std::string>& labels) {
  const MatrixD cross = upper.cross();  // a copy: take it once
  MatrixD out(cross.rows(), static_cast<Eigen::Index>(labels.size()));
  for (size_t c = 0; c < labels.size(); ++c) {
    const int index = upper.ClassIndex(labels[c]);
    if (index < 0) return MatrixD();
    out.col(static_cast<Eigen::Index>(c)) = cross.col(index);
  }
  return out;
}

// W = G^-1 Q in float64 (Readout keeps float weights, too coarse for a 1e-9 comparison), by an
// Eigen Cholesky of its own, independent of UpperTier's solver.
absl::StatusOr<MatrixD> SolveWeights(const MatrixD& gram, const MatrixD& cross) {
  Eigen::LLT<Eigen::MatrixXd> llt(Symmetric(gram));
  if (llt.info() != Eigen::Success) return absl::InternalError("G is not positive definite");
  MatrixD w = llt.solve(Eigen::MatrixXd(cross));
  return w;
}

absl::StatusOr<Payload> ReadPayload(const std::string& path, const model::LowerTier& lower) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError("cannot open --samples file " + path);
  Payload payload;
  std::vector<MatrixF> rows;
  std::string line;
  int line_number = 0;
  while (std::getline(in, line)) {
    ++line_number;
    if (line.empty()) continue;
    std::vector<std::string> fields = absl::StrSplit(line, ' ');
    std::string pixels;
    if (fields.size() != 2 || !absl::Base64Unescape(fields[1], &pixels) ||
        pixels.size() != static_cast<size_t>(lower.input_size())) {
      return absl::InvalidArgumentError(path + ":" + std::to_string(line_number) +
                                        ": expected \"LABEL BASE64\" of " +
                                        std::to_string(lower.input_size()) + " pixels");
    }
    // The server's conversion (server/validation.cc) and its per-message batch of one row.
    MatrixF image(1, lower.input_size());
    model::PixelsToValues(reinterpret_cast<const uint8_t*>(pixels.data()), image.size(),
                          image.data());
    rows.push_back(lower.Features(image));
    payload.labels.push_back(fields[0]);
  }
  if (rows.empty()) return absl::InvalidArgumentError(path + ": no samples");
  payload.features.resize(static_cast<Eigen::Index>(rows.size()), lower.feature_size());
  for (size_t i = 0; i < rows.size(); ++i) {
    payload.features.row(static_cast<Eigen::Index>(i)) = rows[i];
  }
  return payload;
}

// The batch fit: `base` (the bundle's statistics) plus `copies` x the payload, absorbed in blocks
// of about `chunk_rows` rows (whole payloads), with no refresh in between.
absl::StatusOr<model::UpperTier> BatchFit(model::UpperTier base, const Payload& payload,
                                          int64_t copies, int64_t chunk_rows) {
  const int64_t n = payload.features.rows();
  const int64_t total_rows = copies * n;
  const int64_t per_chunk = std::max<int64_t>(1, chunk_rows / n) * n;
  for (int64_t done = 0; done < total_rows;) {
    const int64_t rows = std::min(per_chunk, total_rows - done);
    MatrixF block(rows, payload.features.cols());
    std::vector<std::string> labels(static_cast<size_t>(rows));
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t s = (done + r) % n;
      block.row(r) = payload.features.row(s);
      labels[static_cast<size_t>(r)] = payload.labels[static_cast<size_t>(s)];
    }
    absl::StatusOr<std::vector<std::string>> added = base.AbsorbLabeled(block, labels);
    if (!added.ok()) return added.status();
    done += rows;
  }
  return base;
}

// Compares the server's statistics with the batch fit's and prints the differences; true if they
// agree (see the top of this file).
bool SameModel(const model::UpperTier& server, const model::UpperTier& batch, double tolerance) {
  if (server.feature_size() != batch.feature_size() ||
      server.num_classes() != batch.num_classes()) {
    std::printf("shape differs: server D=%d C=%d, batch fit D=%d C=%d\n", server.feature_size(),
                server.num_classes(), batch.feature_size(), batch.num_classes());
    return false;
  }
  const MatrixD server_cross = CrossInOrder(server, batch.labels());
  if (server_cross.size() == 0) {
    std::printf("labels differ: the server lacks one of the batch fit's labels\n");
    return false;
  }
  const double g = RelativeDifference(Symmetric(server.gram()), Symmetric(batch.gram()));
  const double q = RelativeDifference(server_cross, batch.cross());
  absl::StatusOr<MatrixD> server_w = SolveWeights(server.gram(), server_cross);
  absl::StatusOr<MatrixD> batch_w = SolveWeights(batch.gram(), batch.cross());
  if (!server_w.ok() || !batch_w.ok()) {
    std::printf("solve failed: server %s, batch fit %s\n", server_w.status().ToString().c_str(),
                batch_w.status().ToString().c_str());
    return false;
  }
  const double w = RelativeDifference(*server_w, *batch_w);
  // W = G^-1 Q amplifies the summation-order differences of G and Q by up to G's condition number
  // kappa (first-order perturbation bound: |dW|/|W| <= kappa (|dG|/|G| + |dQ|/|Q|) / (1 - kappa
  // |dG|/|G|)); the ghz payload repeats 4 images, which makes G ill-conditioned. So W must agree
  // to the tolerance or to that bound computed from the measured G and Q differences, whichever
  // is larger: a W that differs more was not solved from these statistics.
  Eigen::SelfAdjointEigenSolver<Eigen::MatrixXd> eigen(Symmetric(batch.gram()),
                                                       Eigen::EigenvaluesOnly);
  const double kappa = eigen.eigenvalues().maxCoeff() / eigen.eigenvalues().minCoeff();
  const double bound = kappa * g < 1 ? kappa * (g + q) / (1 - kappa * g) : HUGE_VAL;
  const double w_limit = std::max(tolerance, bound);
  std::printf(
      "relative difference (Frobenius), server vs batch fit: G %.3g, Q %.3g (tolerance "
      "%.1g), W %.3g (limit %.3g: cond(G) %.3g x the G and Q differences); D=%d, C=%d\n",
      g, q, tolerance, w, w_limit, kappa, batch.feature_size(), batch.num_classes());
  return g <= tolerance && q <= tolerance && w <= w_limit;
}

int Run() {
  const int64_t copies = absl::GetFlag(FLAGS_copies);
  const int64_t chunk_rows = absl::GetFlag(FLAGS_chunk_rows);
  if (absl::GetFlag(FLAGS_bundle).empty() || absl::GetFlag(FLAGS_snapshot).empty() ||
      absl::GetFlag(FLAGS_samples).empty() || copies < 0 || chunk_rows < 1) {
    std::cerr << "strata-soak-check: --bundle, --snapshot, --samples and --copies >= 0 are "
                 "required\n";
    return 2;
  }
  absl::StatusOr<model::Bundle> bundle = model::ReadBundle(absl::GetFlag(FLAGS_bundle));
  if (!bundle.ok()) {
    std::cerr << "strata-soak-check: " << bundle.status() << "\n";
    return 2;
  }
  absl::StatusOr<update::UpperTierSnapshot> snapshot =
      update::ReadSnapshot(update::Env::Default(), absl::GetFlag(FLAGS_snapshot));
  if (!snapshot.ok()) {
    std::cerr << "strata-soak-check: " << snapshot.status() << "\n";
    return 2;
  }
  absl::StatusOr<Payload> payload = ReadPayload(absl::GetFlag(FLAGS_samples), *bundle->lower);
  if (!payload.ok()) {
    std::cerr << "strata-soak-check: " << payload.status() << "\n";
    return 2;
  }
  const uint64_t bundle_samples = bundle->upper.samples_seen();
  absl::StatusOr<model::UpperTier> batch =
      BatchFit(std::move(bundle->upper), *payload, copies, chunk_rows);
  if (!batch.ok()) {
    std::cerr << "strata-soak-check: batch absorb: " << batch.status() << "\n";
    return 2;
  }
  const model::UpperTier& server = snapshot->upper;
  std::printf(
      "samples seen: server %llu, batch fit %llu (bundle %llu + %lld x %lld "
      "acknowledged)\n",
      static_cast<unsigned long long>(server.samples_seen()),
      static_cast<unsigned long long>(batch->samples_seen()),
      static_cast<unsigned long long>(bundle_samples), static_cast<long long>(copies),
      static_cast<long long>(payload->features.rows()));
  const bool ok = SameModel(server, *batch, absl::GetFlag(FLAGS_tolerance)) &&
                  server.samples_seen() == batch->samples_seen();
  std::printf("model equality: %s\n", ok ? "PASS" : "FAIL");
  return ok ? 0 : 1;
}

}  // namespace
}  // namespace strata

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "strata-soak-check --bundle=B --snapshot=S --samples=FILE --copies=K [--tolerance=1e-9]");
  absl::ParseCommandLine(argc, argv);
  return strata::Run();
}
