// The Compound LLM's text task (docs/text-task.md): Debian package descriptions labelled by their
// Section, written by data/debian_sections.py; the frozen encoder's embeddings of them (cached on
// disk); and the analytic head over them (model::UpperTier), fit jointly or class-incrementally.
// Shared by strata-bench-text-task and the class-incremental proof (tests/text/text_task_test.cc).
#ifndef STRATA_TEXT_TEXT_TASK_H_
#define STRATA_TEXT_TEXT_TASK_H_

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "fpga/backend.h"
#include "model/tensor.h"
#include "model/upper_tier.h"
#include "text/text_encoder.h"

namespace strata::text {

// One side of the split, in file order (package name order).
struct TaskSplit {
  std::vector<std::string> packages;
  std::vector<std::string> sources;  // source package names (the split's hash key)
  std::vector<std::string> labels;   // sections
  std::vector<std::string> texts;
  size_t size() const { return texts.size(); }
};

struct TextTask {
  TaskSplit train, test;
  // The file's identity, for the bench's printout (the data script prints its sha256 as well).
  uint32_t crc32c = 0;
  uint64_t bytes = 0;
};

// Reads a data set file (data/debian_sections.py's JSONL: package, source, section, split,
// text). NOT_FOUND if it cannot be opened; INVALID_ARGUMENT naming the line for a malformed line,
// a missing field or a split other than "train"/"test", or when either side is empty.
absl::StatusOr<TextTask> ReadTextTask(const std::string& path);

// What encoding a set of texts cost: wall time (of the run that filled the cache, when read
// from it) and the encoder's work, priced later by an energy table.
struct EncodeCost {
  double seconds = 0;
  fpga::OpCounts counts;
  bool from_cache = false;
};

// Embeddings of `texts` (texts.size() x encoder.embedding_size()), by batches of `batch` texts;
// cached at `cache_path` (raw little-endian float32 rows) with `cache_path`.json holding the
// shape and the cost of the run that wrote it. A cache whose shape differs is recomputed; an
// empty `cache_path` disables the cache. The caller keys the path by the texts (TextsDigest) and
// the encoder (device, max_length). Errors: the encoder's, or an unreadable or
// unwritable cache file (INTERNAL naming it).
absl::StatusOr<model::MatrixF> EmbedCached(const TextEncoder& encoder,
                                           std::span<const std::string> texts, int batch,
                                           const std::string& cache_path, EncodeCost* cost);

// A digest of a list of texts (CRC-32C over each text's length and bytes), for cache keys.
uint32_t TextsDigest(std::span<const std::string> texts);

// The sorted distinct labels of `labels`, dealt into `groups` groups of consecutive labels
// (sizes differing by at most one): the order in which a class-incremental stream brings them.
std::vector<std::vector<std::string>> GroupLabels(std::span<const std::string> labels, int groups);

// The class-incremental run against joint training of the head on the same rows:
//   joint        one AbsorbLabeled of every row (file order), one Refresh;
//   incremental  for each group in turn, its rows (file order) absorbed `batch` rows per
//                AbsorbLabeled (a stream of Update messages), then a Refresh (kAuto: a rank
//                update of the kept factor or a re-factorisation, whichever is cheaper).
// Same lambda. The two readouts' class columns differ in order (labels are added as first
// seen), so they are matched by label.
struct IncrementalComparison {
  int groups = 0;
  int classes = 0;
  // Each "relative difference" is max |incremental - joint| / max |joint| over the entries.
  // The sufficient statistics G and Q (float64): equal up to the order of the float64 sums.
  double statistics_difference = 0;
  // W = G^-1 Q solved in float64 from each head's statistics: the claim "the head after the
  // groups equals the head trained on everything at once", free of the readout's float32
  // rounding.
  double solution_difference = 0;
  // The served readouts (float32 weights, each from its own Refresh path).
  double readout_difference = 0;
  // test rows whose predicted label differs between the two readouts.
  int64_t prediction_differences = 0;
  double joint_seconds = 0, incremental_seconds = 0;
  std::vector<double> accuracy_after_group;  // incremental, on the test rows of classes seen so far
};
absl::StatusOr<IncrementalComparison> CompareIncrementalToJoint(
    const model::MatrixF& train, std::span<const std::string> train_labels,
    const model::MatrixF& test, std::span<const std::string> test_labels,
    std::span<const std::vector<std::string>> groups, double lambda, int batch);

// Fraction of `features` rows the readout labels as `labels` (0 for no rows).
double Accuracy(const model::Readout& readout, const model::MatrixF& features,
                std::span<const std::string> labels);

}  // namespace strata::text

#endif  // STRATA_TEXT_TEXT_TASK_H_
