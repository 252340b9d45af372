#include "text/text_task.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <set>

#include "Eigen/Cholesky"
#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "base/crc32c.h"
#include "base/file.h"
#include "nlohmann/json.hpp"

namespace strata::text {
namespace {

using Clock = std::chrono::steady_clock;

double SecondsSince(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

absl::Status AddLine(absl::string_view line, int number, TextTask& task) {
  const auto row = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
  const auto field = [&](const char* name) -> const nlohmann::json* {
    if (!row.is_object()) return nullptr;
    const auto it = row.find(name);
    return it != row.end() && it->is_string() ? &*it : nullptr;
  };
  for (const char* name : {"package", "source", "section", "split", "text"}) {
    if (field(name) == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat("line ", number, ": not a JSON object with a string \"", name, "\""));
    }
  }
  const std::string split = field("split")->get<std::string>();
  if (split != "train" && split != "test") {
    return absl::InvalidArgumentError(
        absl::StrCat("line ", number, ": split \"", split, "\" is neither train nor test"));
  }
  TaskSplit& side = split == "train" ? task.train : task.test;
  side.packages.push_back(field("package")->get<std::string>());
  side.sources.push_back(field("source")->get<std::string>());
  side.labels.push_back(field("section")->get<std::string>());
  side.texts.push_back(field("text")->get<std::string>());
  return absl::OkStatus();
}

// The cache's sidecar: shape and the cost of the run that filled it.
nlohmann::json CostJson(const model::MatrixF& m, const EncodeCost& cost) {
  const fpga::OpCounts& c = cost.counts;
  return {{"rows", m.rows()},
          {"cols", m.cols()},
          {"seconds", cost.seconds},
          {"int8_macs", c.int8_macs},
          {"fp32_macs", c.fp32_macs},
          {"fp64_macs", c.fp64_macs},
          {"dram_bytes", c.dram_bytes},
          {"host_to_device_bytes", c.host_to_device_bytes},
          {"device_to_host_bytes", c.device_to_host_bytes}};
}

// The cached embeddings if the cache holds rows x cols of them; nullopt-like empty matrix if not.
absl::StatusOr<model::MatrixF> ReadCache(const std::string& path, Eigen::Index rows,
                                         Eigen::Index cols, EncodeCost& cost) {
  absl::StatusOr<std::string> meta_text = base::ReadFile(path + ".json");
  absl::StatusOr<std::string> data = base::ReadFile(path);
  if (!meta_text.ok() || !data.ok()) return model::MatrixF();
  const auto meta = nlohmann::json::parse(*meta_text, nullptr, /*allow_exceptions=*/false);
  if (!meta.is_object() || meta.value("rows", -1) != rows || meta.value("cols", -1) != cols ||
      data->size() != static_cast<size_t>(rows * cols) * sizeof(float)) {
    return model::MatrixF();
  }
  model::MatrixF out(rows, cols);
  std::memcpy(out.data(), data->data(), data->size());  // MatrixF is row-major, as the file
  cost.seconds = meta.value("seconds", 0.0);
  cost.counts.int8_macs = meta.value("int8_macs", uint64_t{0});
  cost.counts.fp32_macs = meta.value("fp32_macs", uint64_t{0});
  cost.counts.fp64_macs = meta.value("fp64_macs", uint64_t{0});
  cost.counts.dram_bytes = meta.value("dram_bytes", uint64_t{0});
  cost.counts.host_to_device_bytes = meta.value("host_to_device_bytes", uint64_t{0});
  cost.counts.device_to_host_bytes = meta.value("device_to_host_bytes", uint64_t{0});
  cost.from_cache = true;
  return out;
}

// The class columns of `m` (labelled `labels`) in the order of `order` (every one present).
Eigen::MatrixXd ColumnsInOrder(const Eigen::MatrixXd& m, std::span<const std::string> labels,
                               std::span<const std::string> order) {
  absl::flat_hash_map<std::string, Eigen::Index> column;
  for (size_t c = 0; c < labels.size(); ++c) column[labels[c]] = static_cast<Eigen::Index>(c);
  Eigen::MatrixXd out(m.rows(), static_cast<Eigen::Index>(order.size()));
  for (size_t c = 0; c < order.size(); ++c) out.col(c) = m.col(column.at(order[c]));
  return out;
}

// max |a - b| / max |b| (0 when both are 0).
double RelativeDifference(const Eigen::MatrixXd& a, const Eigen::MatrixXd& b) {
  const double scale = b.cwiseAbs().maxCoeff();
  const double diff = (a - b).cwiseAbs().maxCoeff();
  return scale > 0 ? diff / scale : diff;
}

// G^-1 Q in float64 by Cholesky (G is positive definite: lambda > 0).
Eigen::MatrixXd SolveFloat64(const model::UpperTier& head, const Eigen::MatrixXd& q) {
  return head.gram().selfadjointView<Eigen::Lower>().llt().solve(q);
}

// The rows of `features` whose label is in `wanted`, in order, and their labels.
void SelectRows(const model::MatrixF& features, std::span<const std::string> labels,
                const absl::flat_hash_set<std::string>& wanted, model::MatrixF& rows,
                std::vector<std::string>& row_labels) {
  std::vector<Eigen::Index> index;
  for (size_t i = 0; i < labels.size(); ++i) {
    if (wanted.contains(labels[i])) index.push_back(static_cast<Eigen::Index>(i));
  }
  rows.resize(static_cast<Eigen::Index>(index.size()), features.cols());
  row_labels.clear();
  for (size_t k = 0; k < index.size(); ++k) {
    rows.row(static_cast<Eigen::Index>(k)) = features.row(index[k]);
    row_labels.push_back(labels[index[k]]);
  }
}

// Absorbs `rows` into `head` by batches of `batch` rows, as a stream of Update messages would.
absl::Status AbsorbInBatches(model::UpperTier& head, const model::MatrixF& rows,
                             std::span<const std::string> labels, int batch) {
  for (Eigen::Index begin = 0; begin < rows.rows(); begin += batch) {
    const Eigen::Index n = std::min<Eigen::Index>(batch, rows.rows() - begin);
    const model::MatrixF chunk = rows.middleRows(begin, n);
    absl::StatusOr<std::vector<std::string>> added =
        head.AbsorbLabeled(chunk, labels.subspan(begin, n));
    if (!added.ok()) return added.status();
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<TextTask> ReadTextTask(const std::string& path) {
  absl::StatusOr<std::string> contents = base::ReadFile(path);
  if (!contents.ok()) return contents.status();
  TextTask task;
  task.bytes = contents->size();
  task.crc32c = base::Crc32c(contents->data(), contents->size());
  int number = 0;
  for (absl::string_view line : absl::StrSplit(*contents, '\n', absl::SkipEmpty())) {
    if (absl::Status s = AddLine(line, ++number, task); !s.ok()) {
      return absl::InvalidArgumentError(absl::StrCat(path, ": ", s.message()));
    }
  }
  if (task.train.size() == 0 || task.test.size() == 0) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": the train or the test side is empty"));
  }
  return task;
}

uint32_t TextsDigest(std::span<const std::string> texts) {
  uint32_t crc = 0;
  for (const std::string& t : texts) {
    const uint64_t size = t.size();
    crc = base::Crc32cExtend(crc, &size, sizeof(size));  // lengths too: ("ab","c") != ("a","bc")
    crc = base::Crc32cExtend(crc, t.data(), t.size());
  }
  return crc;
}

absl::StatusOr<model::MatrixF> EmbedCached(const TextEncoder& encoder,
                                           std::span<const std::string> texts, int batch,
                                           const std::string& cache_path, EncodeCost* cost) {
  EncodeCost local;
  EncodeCost& c = cost != nullptr ? *cost : local;
  c = EncodeCost();
  const Eigen::Index rows = static_cast<Eigen::Index>(texts.size());
  const Eigen::Index cols = encoder.embedding_size();
  if (!cache_path.empty()) {
    absl::StatusOr<model::MatrixF> cached = ReadCache(cache_path, rows, cols, c);
    if (!cached.ok()) return cached.status();
    if (cached->rows() == rows) return cached;
  }
  model::MatrixF out(rows, cols);
  const auto start = Clock::now();
  for (size_t begin = 0; begin < texts.size(); begin += batch) {
    const size_t n = std::min<size_t>(batch, texts.size() - begin);
    fpga::OpCounts counts;  // Embed sets (not adds to) its counts
    absl::StatusOr<model::MatrixF> part = encoder.Embed(texts.subspan(begin, n), &counts);
    if (!part.ok()) return part.status();
    c.counts += counts;
    out.middleRows(static_cast<Eigen::Index>(begin), static_cast<Eigen::Index>(n)) = *part;
  }
  c.seconds = SecondsSince(start);
  if (cache_path.empty()) return out;
  const absl::string_view bytes(reinterpret_cast<const char*>(out.data()),
                                static_cast<size_t>(out.size()) * sizeof(float));
  if (absl::Status s = base::WriteFileAtomically(cache_path, bytes); !s.ok()) return s;
  if (absl::Status s = base::WriteFileAtomically(cache_path + ".json", CostJson(out, c).dump());
      !s.ok()) {
    return s;
  }
  return out;
}

std::vector<std::vector<std::string>> GroupLabels(std::span<const std::string> labels, int groups) {
  const std::set<std::string> distinct(labels.begin(), labels.end());
  const std::vector<std::string> sorted(distinct.begin(), distinct.end());
  const size_t n = std::max<size_t>(1, std::min<size_t>(std::max(groups, 1), sorted.size()));
  std::vector<std::vector<std::string>> out(n);
  for (size_t g = 0; g < n; ++g) {
    const size_t begin = g * sorted.size() / n, end = (g + 1) * sorted.size() / n;
    out[g].assign(sorted.begin() + begin, sorted.begin() + end);
  }
  return out;
}

absl::StatusOr<IncrementalComparison> CompareIncrementalToJoint(
    const model::MatrixF& train, std::span<const std::string> train_labels,
    const model::MatrixF& test, std::span<const std::string> test_labels,
    std::span<const std::vector<std::string>> groups, double lambda, int batch) {
  IncrementalComparison result;
  result.groups = static_cast<int>(groups.size());
  const int d = static_cast<int>(train.cols());

  auto start = Clock::now();
  model::UpperTier joint(d, lambda);
  if (auto added = joint.AbsorbLabeled(train, train_labels); !added.ok()) return added.status();
  absl::StatusOr<model::Readout> joint_readout = joint.Refresh();
  if (!joint_readout.ok()) return joint_readout.status();
  result.joint_seconds = SecondsSince(start);

  start = Clock::now();
  model::UpperTier incremental(d, lambda);
  absl::StatusOr<model::Readout> readout;
  absl::flat_hash_set<std::string> seen;
  model::MatrixF rows, seen_test;
  std::vector<std::string> row_labels, seen_test_labels;
  for (const std::vector<std::string>& group : groups) {
    const absl::flat_hash_set<std::string> wanted(group.begin(), group.end());
    SelectRows(train, train_labels, wanted, rows, row_labels);
    if (absl::Status s = AbsorbInBatches(incremental, rows, row_labels, batch); !s.ok()) return s;
    readout = incremental.Refresh();
    if (!readout.ok()) return readout.status();
    seen.insert(group.begin(), group.end());
    SelectRows(test, test_labels, seen, seen_test, seen_test_labels);
    result.accuracy_after_group.push_back(Accuracy(*readout, seen_test, seen_test_labels));
  }
  result.incremental_seconds = SecondsSince(start);
  if (!readout.ok()) return absl::InvalidArgumentError("no groups");

  if (readout->labels.size() != joint_readout->labels.size()) {
    return absl::InternalError(absl::StrCat("incremental head has ", readout->labels.size(),
                                            " classes, joint ", joint_readout->labels.size()));
  }
  result.classes = static_cast<int>(joint_readout->labels.size());
  const std::vector<std::string>& order = joint_readout->labels;
  const Eigen::MatrixXd g_joint = joint.gram().triangularView<Eigen::Lower>();
  const Eigen::MatrixXd g_incremental = incremental.gram().triangularView<Eigen::Lower>();
  const Eigen::MatrixXd q_joint = ColumnsInOrder(joint.cross(), joint.labels(), order);
  const Eigen::MatrixXd q_incremental =
      ColumnsInOrder(incremental.cross(), incremental.labels(), order);
  result.statistics_difference = std::max(RelativeDifference(g_incremental, g_joint),
                                          RelativeDifference(q_incremental, q_joint));
  result.solution_difference =
      RelativeDifference(SolveFloat64(incremental, q_incremental), SolveFloat64(joint, q_joint));
  result.readout_difference =
      RelativeDifference(ColumnsInOrder(readout->weights.cast<double>(), readout->labels, order),
                         joint_readout->weights.cast<double>());
  const std::vector<int> p = readout->Classify(test), q = joint_readout->Classify(test);
  for (size_t i = 0; i < p.size(); ++i) {
    result.prediction_differences += readout->labels[p[i]] != joint_readout->labels[q[i]];
  }
  return result;
}

double Accuracy(const model::Readout& readout, const model::MatrixF& features,
                std::span<const std::string> labels) {
  if (features.rows() == 0) return 0;
  return static_cast<double>(readout.CountCorrect(features, labels)) /
         static_cast<double>(features.rows());
}

}  // namespace strata::text
