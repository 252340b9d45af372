// strata-bench-text-serving: a text model through a real strata-server, and its head's absorb rate.
//
//   strata-bench-text-serving --bundle=TEXT.bundle --texts=LABELLED.tsv [--requests=300]
//
// 1. Starts strata-server on the text bundle (--device) and times Predict at batch 1 and batch 32
//    (one client, requests one after another: latency p50 / p99 and sentences/s), texts taken in
//    order from --texts (LABEL<TAB>TEXT lines, bench/text_serving_bench.sh writes Debian package
//    descriptions labelled by their Section).
// 2. Streams every labelled text through Update (messages of --update_message texts) and prints
//    the server's absorb rate, the encoder included (UpdateSummary.absorb_seconds).
// 3. In this process: the head's absorb alone, excluding the encoder: the bundle's extractor
//    computes every text's features first, then model::UpperTier::AbsorbLabeled absorbs them in
//    chunks of --update_message rows, as the server's update pipeline does (issue #14's target:
//    >= 5,000 labelled sentences/s).
#include <algorithm>
#include <cstdio>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "fpga/backend.h"
#include "model/bundle.h"
#include "tests/server_process.h"
#include "text/labelled_texts.h"
#include "text/text_extractor.h"

ABSL_FLAG(std::string, bundle, "", "A text model's bundle (strata-train with a `text` spec)");
ABSL_FLAG(std::string, texts, "", "LABEL<TAB>TEXT lines: the requests' texts and the Update data");
ABSL_FLAG(int, requests, 300, "Predict requests per batch size");
ABSL_FLAG(int, update_message, 64, "Texts per Update message (and per absorb chunk)");
ABSL_FLAG(std::string, device, "cpu", "strata-server --device (and the in-process extractor's)");

namespace strata {
namespace {

double Percentile(std::vector<double> values, double p) {
  std::sort(values.begin(), values.end());
  return values[std::min(values.size() - 1, static_cast<size_t>(p / 100 * values.size()))];
}

// Times `requests` Predicts of `batch` texts each, one after another; prints one table row.
absl::Status TimePredict(client::Client& client, const std::vector<std::string>& texts, int batch,
                         int requests) {
  std::vector<double> latencies_ms;
  size_t next = 0;
  const absl::Time start = absl::Now();
  for (int r = 0; r < requests; ++r) {
    v1::PredictRequest request;
    for (int i = 0; i < batch; ++i) request.add_samples()->set_text(texts[next++ % texts.size()]);
    const absl::Time sent = absl::Now();
    absl::StatusOr<v1::PredictResponse> response = client.Predict(request);
    if (!response.ok()) return response.status();
    latencies_ms.push_back(absl::ToDoubleMilliseconds(absl::Now() - sent));
  }
  const double seconds = absl::ToDoubleSeconds(absl::Now() - start);
  std::printf("| Predict | %d | %d | %.1f | %.2f | %.2f |\n", batch, requests,
              batch * requests / seconds, Percentile(latencies_ms, 50),
              Percentile(latencies_ms, 99));
  return absl::OkStatus();
}

// Streams every labelled text through one Update; prints the server's absorb rate.
absl::Status TimeUpdate(client::Client& client, const text::LabelledTexts& data, int message) {
  std::vector<v1::UpdateRequest> messages;
  for (size_t i = 0; i < data.texts.size(); ++i) {
    if (i % message == 0) messages.emplace_back();
    v1::LabeledSample* sample = messages.back().add_samples();
    sample->set_label(data.labels[i]);
    sample->mutable_sample()->set_text(data.texts[i]);
  }
  const absl::Time start = absl::Now();
  absl::StatusOr<v1::UpdateSummary> summary = client.Update(messages);
  if (!summary.ok()) return summary.status();
  const double wall = absl::ToDoubleSeconds(absl::Now() - start);
  std::printf(
      "Update (server, encoder included): %lu texts accepted, %lu new labels; server absorb "
      "%.2f s = %.0f texts/s, solve %.3f s; wall %.2f s\n",
      static_cast<unsigned long>(summary->accepted()),
      static_cast<unsigned long>(summary->new_labels_size()), summary->absorb_seconds(),
      summary->accepted() / summary->absorb_seconds(), summary->solve_seconds(), wall);
  return absl::OkStatus();
}

// The head's absorb alone: features first (not timed), then AbsorbLabeled in chunks.
absl::Status TimeHeadAbsorb(const text::LabelledTexts& data, int chunk) {
  absl::StatusOr<model::Bundle> bundle = model::ReadBundle(absl::GetFlag(FLAGS_bundle));
  if (!bundle.ok()) return bundle.status();
  std::unique_ptr<fpga::Backend> backend;
  if (absl::GetFlag(FLAGS_device) != "float") {
    absl::StatusOr<std::unique_ptr<fpga::Backend>> created =
        fpga::CreateBackend(absl::GetFlag(FLAGS_device));
    if (!created.ok()) return created.status();
    backend = *std::move(created);
  }
  absl::StatusOr<std::shared_ptr<const model::FeatureExtractor>> extractor =
      text::MakeBundleExtractor(*bundle, backend.get());
  if (!extractor.ok()) return extractor.status();
  const absl::Time embed_start = absl::Now();
  absl::StatusOr<model::MatrixF> features = (*extractor)->TextFeatures(data.texts);
  if (!features.ok()) return features.status();
  const double embed_seconds = absl::ToDoubleSeconds(absl::Now() - embed_start);
  model::UpperTier upper = bundle->upper;
  const Eigen::Index rows = features->rows();
  const absl::Time start = absl::Now();
  for (Eigen::Index begin = 0; begin < rows; begin += chunk) {
    const Eigen::Index n = std::min<Eigen::Index>(chunk, rows - begin);
    absl::StatusOr<std::vector<std::string>> added =
        upper.AbsorbLabeled(features->middleRows(begin, n),
                            std::span<const std::string>(data.labels).subspan(begin, n));
    if (!added.ok()) return added.status();
  }
  const double seconds = absl::ToDoubleSeconds(absl::Now() - start);
  std::printf(
      "Head absorb (in process, encoder excluded): %td texts x %td features in chunks of %d: "
      "%.4f s = %.0f labelled texts/s (the features took %.2f s = %.0f texts/s on %s)\n",
      rows, features->cols(), chunk, seconds, rows / seconds, embed_seconds, rows / embed_seconds,
      (*extractor)->device().c_str());
  return absl::OkStatus();
}

int Run() {
  absl::StatusOr<text::LabelledTexts> data = text::ReadLabelledTexts(absl::GetFlag(FLAGS_texts));
  if (!data.ok() || data->texts.empty()) {
    std::fprintf(stderr, "strata-bench-text-serving: --texts: %s\n",
                 data.ok() ? "no texts" : data.status().ToString().c_str());
    return 1;
  }
  absl::StatusOr<std::unique_ptr<test::ServerProcess>> server = test::ServerProcess::Launch(
      absl::GetFlag(FLAGS_bundle),
      {"--device=" + absl::GetFlag(FLAGS_device), "--max_message_bytes=67108864"});
  if (!server.ok()) {
    std::fprintf(stderr, "strata-bench-text-serving: %s\n", server.status().ToString().c_str());
    return 1;
  }
  client::Client& client = (*server)->client();
  const int requests = absl::GetFlag(FLAGS_requests);
  std::printf("%zu texts from %s; server --device=%s; one client, sequential requests\n\n",
              data->texts.size(), absl::GetFlag(FLAGS_texts).c_str(),
              absl::GetFlag(FLAGS_device).c_str());
  std::printf("| RPC | batch | requests | sentences/s | p50 ms | p99 ms |\n");
  std::printf("| --- | --- | --- | --- | --- | --- |\n");
  absl::Status status = TimePredict(client, data->texts, 1, 10);  // warm-up, printed too
  for (int batch : {1, 32}) {
    if (status.ok()) status = TimePredict(client, data->texts, batch, requests);
  }
  std::printf("\n");
  const int message = absl::GetFlag(FLAGS_update_message);
  if (status.ok()) status = TimeUpdate(client, *data, message);
  (*server)->Terminate();
  if (status.ok()) status = TimeHeadAbsorb(*data, message);
  if (!status.ok()) {
    std::fprintf(stderr, "strata-bench-text-serving: %s\n", status.ToString().c_str());
    return 1;
  }
  return 0;
}

}  // namespace
}  // namespace strata

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  return strata::Run();
}
