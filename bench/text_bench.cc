// strata-bench-text: the C++ text encoder's speed and energy per sentence (docs/text-encoder.md).
// bench/text_bench.sh runs it beside ONNX Runtime on the same sentences and prints both.
//
// Sentences: --texts, one JSON string per line (text_bench.sh writes Debian package short
// descriptions, the text task's real length distribution). For each path:
//   float     every product in fp32 on the host (Eigen);
//   int8 cpu  the dense layers as int8 layers on the cpu backend (AVX-512 VNNI);
//   int8 emu  the same on the emu backend (the FPGA kernels' C simulation: slow, a small sample);
// at batch 1 and 32: sentences/s (tokenisation included), latency per call (p50, p99), joules
// per sentence from the backend's energy table (fpga/energy.h; float: the host's), and at batch
// 32 the share of the wall time in each stage (EncoderTimes; "dense" is the backend's Forward).
// The last line is the same numbers as JSON, for the driver script.
//
// Usage: strata-bench-text --texts=FILE [--model_dir=...] [--seconds=5] [--emu_sentences=32]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "fpga/backend.h"
#include "fpga/energy.h"
#include "nlohmann/json.hpp"
#include "text/text_encoder.h"

ABSL_FLAG(std::string, texts, "", "sentences, one JSON string per line");
ABSL_FLAG(std::string, model_dir, ".tools/models/all-minilm-l6-v2", "the model folder");
ABSL_FLAG(double, seconds, 5.0, "minimum measuring time per path and batch size (emu: one pass)");
ABSL_FLAG(int, emu_sentences, 32, "sentences the emu backend runs (per batch size)");
ABSL_FLAG(std::string, paths, "float,cpu,emu", "which paths to run");

namespace strata {
namespace {

using Clock = std::chrono::steady_clock;

struct Row {
  std::string path;
  int batch = 0;
  size_t sentences = 0;
  double seconds = 0;
  double p50_ms = 0, p99_ms = 0;
  double joules_per_sentence = 0;
  text::EncoderTimes times;
};

double Percentile(std::vector<double> values, double p) {
  if (values.empty()) return 0;
  std::sort(values.begin(), values.end());
  const size_t k = std::min(values.size() - 1, static_cast<size_t>(p / 100.0 * values.size()));
  return values[k];
}

// Runs consecutive batches of `batch` sentences (cycling over `texts`) until `min_seconds` have
// passed and at least `min_sentences` were embedded, after one warm-up batch.
absl::StatusOr<Row> Measure(const text::TextEncoder& encoder, const std::vector<std::string>& texts,
                            int batch, double min_seconds, size_t min_sentences,
                            const fpga::EnergyTable& energy) {
  Row row;
  row.batch = batch;
  const auto slice = [&](size_t start) {
    std::vector<std::string> chunk;
    for (int i = 0; i < batch; ++i) chunk.push_back(texts[(start + i) % texts.size()]);
    return chunk;
  };
  if (auto warm = encoder.Embed(slice(0)); !warm.ok()) return warm.status();
  std::vector<double> latencies;
  fpga::OpCounts counts;
  const auto start = Clock::now();
  size_t next = 0;
  while (row.sentences < min_sentences ||
         std::chrono::duration<double>(Clock::now() - start).count() < min_seconds) {
    const std::vector<std::string> chunk = slice(next);
    next += batch;
    fpga::OpCounts call;
    const auto t0 = Clock::now();
    absl::StatusOr<model::MatrixF> out = encoder.Embed(chunk, &call, &row.times);
    if (!out.ok()) return out.status();
    latencies.push_back(std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
    counts += call;
    row.sentences += chunk.size();
  }
  row.seconds = std::chrono::duration<double>(Clock::now() - start).count();
  row.p50_ms = Percentile(latencies, 50);
  row.p99_ms = Percentile(latencies, 99);
  row.joules_per_sentence = fpga::Joules(counts, energy) / static_cast<double>(row.sentences);
  return row;
}

absl::StatusOr<std::vector<std::string>> ReadTexts(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open --texts=", path));
  std::vector<std::string> texts;
  std::string line;
  while (std::getline(in, line)) {
    const auto value = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (!value.is_string())
      return absl::InvalidArgumentError(absl::StrCat(path, ": not JSON strings"));
    texts.push_back(value.get<std::string>());
  }
  if (texts.empty()) return absl::InvalidArgumentError(absl::StrCat(path, ": no texts"));
  return texts;
}

void PrintRow(const Row& r) {
  const double total = std::max(r.times.total(), 1e-12);
  std::printf(
      "%-9s %5d %9zu %12.1f %9.2f %9.2f %12.3g   dense %4.1f%% quant %4.1f%% attn %4.1f%% "
      "norm/gelu %4.1f%% tok %4.1f%% other %4.1f%%\n",
      r.path.c_str(), r.batch, r.sentences, r.sentences / r.seconds, r.p50_ms, r.p99_ms,
      r.joules_per_sentence, 100 * r.times.dense_s / total, 100 * r.times.quantize_s / total,
      100 * r.times.attention_s / total, 100 * r.times.norm_s / total,
      100 * r.times.tokenize_s / total, 100 * (r.times.embed_s + r.times.pool_s) / total);
}

nlohmann::json RowJson(const Row& r) {
  return {{"path", r.path},
          {"batch", r.batch},
          {"sentences", r.sentences},
          {"sentences_per_s", r.sentences / r.seconds},
          {"p50_ms", r.p50_ms},
          {"p99_ms", r.p99_ms},
          {"joules_per_sentence", r.joules_per_sentence},
          {"dense_share", r.times.dense_s / std::max(r.times.total(), 1e-12)}};
}

// Token length distribution of the sample (with [CLS] and [SEP]).
void PrintLengths(const text::TextEncoder& encoder, const std::vector<std::string>& texts) {
  std::vector<double> lengths;
  for (const auto& t : texts)
    lengths.push_back(static_cast<double>(encoder.tokenizer().Encode(t)->size()));
  double sum = 0;
  for (double l : lengths) sum += l;
  std::printf("sentences: %zu, tokens per sentence mean %.1f, p50 %.0f, p90 %.0f, max %.0f\n",
              lengths.size(), sum / lengths.size(), Percentile(lengths, 50),
              Percentile(lengths, 90), Percentile(lengths, 100));
}

absl::Status Run() {
  absl::StatusOr<std::vector<std::string>> texts = ReadTexts(absl::GetFlag(FLAGS_texts));
  if (!texts.ok()) return texts.status();
  const double seconds = absl::GetFlag(FLAGS_seconds);
  std::vector<Row> rows;
  bool printed_lengths = false;
  const std::vector<std::string> paths =
      absl::StrSplit(absl::GetFlag(FLAGS_paths), ',', absl::SkipEmpty());
  for (const std::string& path : paths) {
    std::unique_ptr<fpga::Backend> backend;
    text::TextEncoderOptions options;
    fpga::EnergyTable energy = fpga::HostEnergyTable();
    if (path != "float") {
      auto created = fpga::CreateBackend(path);
      if (!created.ok()) return created.status();
      backend = *std::move(created);
      options.backend = backend.get();
      auto table = fpga::EnergyTableFor(path);
      if (!table.ok()) return table.status();
      energy = *table;
    }
    auto encoder = text::TextEncoder::Load(absl::GetFlag(FLAGS_model_dir), options);
    if (!encoder.ok()) return encoder.status();
    if (!printed_lengths) {
      PrintLengths(**encoder, *texts);
      std::printf("%-9s %5s %9s %12s %9s %9s %12s   %s\n", "path", "batch", "sentences",
                  "sentences/s", "p50 ms", "p99 ms", "J/sentence", "wall time by stage");
      printed_lengths = true;
    }
    const bool emu = path == "emu";
    for (int batch : {1, 32}) {
      const size_t min_sentences = emu ? static_cast<size_t>(absl::GetFlag(FLAGS_emu_sentences))
                                       : static_cast<size_t>(batch);
      auto row = Measure(**encoder, *texts, batch, emu ? 0.0 : seconds, min_sentences, energy);
      if (!row.ok()) return row.status();
      row->path = path == "float" ? "float" : absl::StrCat("int8 ", path);
      PrintRow(*row);
      std::fflush(stdout);
      rows.push_back(*row);
    }
  }
  nlohmann::json all = nlohmann::json::array();
  for (const Row& r : rows) all.push_back(RowJson(r));
  std::printf("JSON %s\n", all.dump().c_str());
  return absl::OkStatus();
}

}  // namespace
}  // namespace strata

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage("The text encoder's sentences/s, latency and J/sentence");
  absl::ParseCommandLine(argc, argv);
  if (absl::Status s = strata::Run(); !s.ok()) {
    std::fprintf(stderr, "strata-bench-text: %s\n", s.ToString().c_str());
    return 1;
  }
  return 0;
}
