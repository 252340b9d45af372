// strata: the command-line client of a Strata server.
//
//   strata predict --data=SRC [--offset=N] [--limit=N] [--batch=256]
//   strata update  --data=SRC [--offset=N] [--limit=N] [--batch=500]
//   strata info | stats
//   strata snapshot
//   strata health [--wait=10s]
//   common: --server=HOST:PORT --timeout=10m [--tls] [--tls_ca=PEM] [--tls_cert=PEM --tls_key=PEM]
//           [--token_file=PATH]
//
// Exit codes: 0 success (for `health`: the server is SERVING); 1 the call or the data failed (for
// `health`: not SERVING within --wait); 2 usage error.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <set>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "base/file.h"
#include "client/client.h"
#include "data/dataset.h"

ABSL_FLAG(std::string, server, "127.0.0.1:50051", "Server address, host:port.");
ABSL_FLAG(std::string, data, "",
          "Data set for predict / update: fashion-mnist:train, fashion-mnist:test, "
          "idx:IMAGES,LABELS or csv:PATH.");
ABSL_FLAG(uint64_t, offset, 0, "Skip this many samples of --data.");
ABSL_FLAG(uint64_t, limit, 0, "Use at most this many samples of --data (0: all).");
ABSL_FLAG(
    int32_t, batch, 0,
    "Samples per request (predict, default 256) or per stream message (update, default 500).");
ABSL_FLAG(absl::Duration, wait, absl::Seconds(10),
          "health: how long to wait for the server to report SERVING.");
ABSL_FLAG(absl::Duration, timeout, absl::Minutes(10), "Deadline of each call.");
ABSL_FLAG(bool, tls, false,
          "Connect with TLS (implied by --tls_ca / --tls_cert); without --tls_ca the system's "
          "root certificates are trusted.");
ABSL_FLAG(std::string, tls_ca, "", "PEM CA certificates the server's certificate must chain to.");
ABSL_FLAG(std::string, tls_cert, "", "PEM client certificate, for servers that need mutual TLS.");
ABSL_FLAG(std::string, tls_key, "", "PEM private key of --tls_cert.");
ABSL_FLAG(std::string, token_file, "",
          "File holding the bearer token sent on every call (trailing whitespace ignored). "
          "Without it, the STRATA_AUTH_TOKEN environment variable, if set.");

namespace strata::client {
namespace {

constexpr int kExitOk = 0;
constexpr int kExitFailure = 1;
constexpr int kExitUsage = 2;

constexpr char kUsage[] =
    "Command-line client of a Strata server.\n"
    "  strata predict --data=SRC [--offset=N] [--limit=N] [--batch=256]   accuracy and samples/s\n"
    "  strata update  --data=SRC [--offset=N] [--limit=N] [--batch=500]   stream labelled samples\n"
    "  strata info                                                        the model served\n"
    "  strata stats                                                       the server's counters\n"
    "  strata snapshot                                                    snapshot the state\n"
    "  strata health [--wait=10s]                                         exit 0 iff SERVING\n"
    "Common flags: --server=127.0.0.1:50051 --timeout=10m\n"
    "  [--tls] [--tls_ca=PEM] [--tls_cert=PEM --tls_key=PEM] [--token_file=PATH]\n"
    "SRC: fashion-mnist:train | fashion-mnist:test | idx:IMAGES,LABELS | csv:PATH";

int Fail(const std::string& what, const absl::Status& status) {
  std::cerr << "strata: " << what << ": " << absl::StatusCodeToString(status.code()) << ": "
            << status.message() << "\n";
  return kExitFailure;
}

int UsageError(const std::string& message) {
  std::cerr << "strata: " << message << "\n" << kUsage << "\n";
  return kExitUsage;
}

// Loads --data and checks it against the served model.
absl::StatusOr<data::LabeledImages> LoadData(const v1::ModelInfo& info) {
  const std::string source = absl::GetFlag(FLAGS_data);
  data::Range range;
  range.offset = absl::GetFlag(FLAGS_offset);
  range.limit = absl::GetFlag(FLAGS_limit);
  absl::StatusOr<data::LabeledImages> images = data::Load(source, range);
  if (!images.ok()) return images.status();
  if (images->size() == 0) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": no samples in the chosen range"));
  }
  if (images->image_size() != info.input_size()) {
    return absl::InvalidArgumentError(
        absl::StrCat(source, ": images are ", images->height, "x", images->width, " (",
                     images->image_size(), " pixels) but the server's model takes ",
                     info.input_height(), "x", info.input_width(), " (", info.input_size(), ")"));
  }
  return images;
}

void SetPixels(const data::LabeledImages& images, size_t i, v1::Sample* sample) {
  sample->set_pixels(images.image(i), images.image_size());
}

int Predict(Client& client) {
  absl::StatusOr<v1::ModelInfo> info = client.GetModelInfo();
  if (!info.ok()) return Fail("GetModelInfo", info.status());
  int batch = absl::GetFlag(FLAGS_batch);
  if (batch == 0) batch = 256;
  if (batch < 1 || static_cast<uint32_t>(batch) > info->max_batch()) {
    return UsageError(absl::StrCat("--batch: expected 1..", info->max_batch(),
                                   " (the server's max_batch), got ", batch));
  }
  absl::StatusOr<data::LabeledImages> images = LoadData(*info);
  if (!images.ok()) return Fail("loading --data", images.status());

  size_t correct = 0;
  double lower_joules = 0, upper_joules = 0;
  std::set<uint64_t> versions;
  const absl::Time start = absl::Now();
  for (size_t begin = 0; begin < images->size(); begin += batch) {
    const size_t end = std::min(images->size(), begin + batch);
    v1::PredictRequest request;
    for (size_t i = begin; i < end; ++i) SetPixels(*images, i, request.add_samples());
    absl::StatusOr<v1::PredictResponse> response = client.Predict(request);
    if (!response.ok()) {
      return Fail(absl::StrCat("Predict (samples ", begin, "..", end - 1, ")"), response.status());
    }
    versions.insert(response->model_version());
    lower_joules += response->energy().lower_tier_joules();
    upper_joules += response->energy().upper_tier_joules();
    for (size_t i = begin; i < end; ++i) {
      if (response->predictions(static_cast<int>(i - begin)).label() == images->labels[i]) {
        ++correct;
      }
    }
  }
  const double seconds = absl::ToDoubleSeconds(absl::Now() - start);
  const size_t n = images->size();
  std::printf("predicted %zu samples in %.3f s (%.0f samples/s), model version %s\n", n, seconds,
              n / seconds, absl::StrJoin(versions, ", ").c_str());
  std::printf("accuracy %.4f (%zu/%zu)\n", static_cast<double>(correct) / n, correct, n);
  std::printf("energy %.6g J (%.6g J/sample): lower tier %.6g J, upper tier %.6g J\n",
              lower_joules + upper_joules, (lower_joules + upper_joules) / n, lower_joules,
              upper_joules);
  return kExitOk;
}

int Update(Client& client) {
  absl::StatusOr<v1::ModelInfo> info = client.GetModelInfo();
  if (!info.ok()) return Fail("GetModelInfo", info.status());
  int batch = absl::GetFlag(FLAGS_batch);
  if (batch == 0) batch = 500;
  if (batch < 1) return UsageError(absl::StrCat("--batch: expected >= 1, got ", batch));
  absl::StatusOr<data::LabeledImages> images = LoadData(*info);
  if (!images.ok()) return Fail("loading --data", images.status());

  size_t next = 0;
  const absl::Time start = absl::Now();
  absl::StatusOr<v1::UpdateSummary> summary = client.Update([&](v1::UpdateRequest* message) {
    if (next == images->size()) return false;
    const size_t end = std::min(images->size(), next + batch);
    for (; next < end; ++next) {
      v1::LabeledSample* sample = message->add_samples();
      SetPixels(*images, next, sample->mutable_sample());
      sample->set_label(images->labels[next]);
    }
    return true;
  });
  if (!summary.ok()) return Fail("Update", summary.status());
  const double seconds = absl::ToDoubleSeconds(absl::Now() - start);
  std::printf("accepted %llu, rejected %llu; model version %llu\n",
              static_cast<unsigned long long>(summary->accepted()),
              static_cast<unsigned long long>(summary->rejected()),
              static_cast<unsigned long long>(summary->model_version()));
  if (summary->new_labels_size() > 0) {
    std::printf("new classes: %s\n", absl::StrJoin(summary->new_labels(), ", ").c_str());
  }
  std::printf("%.3f s (%.0f samples/s); server absorb %.3f s, solve %.3f s\n", seconds,
              images->size() / seconds, summary->absorb_seconds(), summary->solve_seconds());
  std::printf("refreshes %llu (%s); prequential errors %llu\n",
              static_cast<unsigned long long>(summary->refreshes()),
              summary->readout_current() ? "the served readout includes this stream"
                                         : "refresh deferred: samples absorbed, not yet served",
              static_cast<unsigned long long>(summary->prequential_errors()));
  const v1::PhaseEnergy& energy = summary->energy();
  std::printf("energy %.6g J: lower tier %.6g, readout %.6g, absorb %.6g, refresh %.6g\n",
              energy.total_joules(), energy.lower_tier_inference_joules(),
              energy.readout_inference_joules(), energy.absorb_joules(), energy.refresh_joules());
  for (const v1::Rejection& rejection : summary->rejections()) {
    std::printf("rejected message %u sample %d: %s\n", rejection.message_index(),
                rejection.sample_index(), rejection.reason().c_str());
  }
  return kExitOk;
}

int Info(Client& client) {
  absl::StatusOr<v1::ModelInfo> info = client.GetModelInfo();
  if (!info.ok()) return Fail("GetModelInfo", info.status());
  std::printf("model version   %llu\n", static_cast<unsigned long long>(info->model_version()));
  std::printf("input           %ux%ux%u (%u values)\n", info->input_height(), info->input_width(),
              info->input_channels(), info->input_size());
  std::printf("features        %u\n", info->feature_size());
  std::printf("classes         %d: %s\n", info->labels_size(),
              absl::StrJoin(info->labels(), ", ").c_str());
  for (int i = 0; i < info->lower_tier_stages_size(); ++i) {
    std::printf("lower tier %d    %s\n", i + 1, info->lower_tier_stages(i).c_str());
  }
  std::printf("upper tier      %s\n", info->upper_tier().c_str());
  std::printf("ridge lambda    %g\n", info->ridge_lambda());
  std::printf("samples seen    %llu\n", static_cast<unsigned long long>(info->samples_seen()));
  std::printf("max batch       %u\n", info->max_batch());
  if (!info->statistics_digest().empty()) {
    // Replicated mode: replicas at the same log position print the same digest.
    std::printf("log position    %llu\n", static_cast<unsigned long long>(info->log_position()));
    std::printf("statistics      %s\n", info->statistics_digest().c_str());
  }
  return kExitOk;
}

int Stats(Client& client) {
  absl::StatusOr<v1::Stats> stats = client.GetStats();
  if (!stats.ok()) return Fail("GetStats", stats.status());
  auto count = [](const char* name, const v1::RpcCount& c) {
    std::printf("%-18s ok %llu, failed %llu\n", name, static_cast<unsigned long long>(c.ok()),
                static_cast<unsigned long long>(c.failed()));
  };
  count("ExtractFeatures", stats->extract_features());
  count("Predict", stats->predict());
  count("Update", stats->update());
  count("GetModelInfo", stats->get_model_info());
  auto line = [](const char* name, uint64_t value) {
    std::printf("%-18s %llu\n", name, static_cast<unsigned long long>(value));
  };
  line("samples predicted", stats->samples_predicted());
  if (stats->predict_batches() > 0) {
    // Dynamic batching (strata-server --batching=on).
    std::printf("%-18s %llu (%llu requests, %llu samples; %llu with > 1 request; largest %llu)\n",
                "predict batches", static_cast<unsigned long long>(stats->predict_batches()),
                static_cast<unsigned long long>(stats->predict_batch_requests()),
                static_cast<unsigned long long>(stats->predict_batch_samples()),
                static_cast<unsigned long long>(stats->predict_multi_request_batches()),
                static_cast<unsigned long long>(stats->predict_largest_batch()));
  }
  line("samples extracted", stats->samples_extracted());
  line("samples absorbed", stats->samples_absorbed());
  line("samples rejected", stats->samples_rejected());
  line("updates applied", stats->updates_applied());
  line("model version", stats->model_version());
  if (!stats->replica_id().empty()) {
    std::printf("%-18s %s\n", "replica", stats->replica_id().c_str());
    line("log position", stats->log_position());
    line("log applied", stats->log_applied_position());
    line("log pending", stats->log_pending_entries());
    line("replica absorbed", stats->replica_samples_absorbed());
  }
  std::printf("%-18s %.1f s\n", "uptime", stats->uptime_seconds());
  line("pending samples", stats->pending_samples());
  line("prequential", stats->prequential_samples());
  line("  errors", stats->prequential_errors());
  std::printf("%-18s %s\n", "update policy", stats->update_policy().c_str());
  for (const v1::DecisionCount& decision : stats->decisions()) {
    std::printf("  %-16s %llu (%s)\n", decision.reason().c_str(),
                static_cast<unsigned long long>(decision.count()),
                decision.applied() ? "refreshed" : "deferred");
  }
  line("drift alarms", stats->drift_alarms());
  if (stats->update_policy() == "energy-aware") {
    std::printf("%-18s %.6g J\n", "budget balance", stats->budget_balance_joules());
  }
  const v1::EnergyTable& table = stats->energy_table();
  std::printf("%-18s %s, table %s (fp32 MAC %g pJ, fp64 MAC %g pJ, int8 MAC %g pJ, DRAM %g pJ/B)\n",
              "device", stats->device().c_str(), table.name().c_str(), table.fp32_mac_pj(),
              table.fp64_mac_pj(), table.int8_mac_pj(), table.dram_pj_per_byte());
  const v1::PhaseEnergy& energy = stats->energy();
  std::printf("%-18s %.6g J\n", "energy", energy.total_joules());
  std::printf("  %-16s %.6g J\n", "lower tier", energy.lower_tier_inference_joules());
  std::printf("  %-16s %.6g J\n", "readout", energy.readout_inference_joules());
  std::printf("  %-16s %.6g J\n", "absorb", energy.absorb_joules());
  std::printf("  %-16s %.6g J\n", "refresh", energy.refresh_joules());
  return kExitOk;
}

int Snapshot(Client& client) {
  absl::StatusOr<v1::SnapshotInfo> info = client.Snapshot();
  if (!info.ok()) return Fail("Snapshot", info.status());
  std::printf("snapshot %s: model version %llu, log position %llu, %llu samples seen, %llu bytes\n",
              info->path().c_str(), static_cast<unsigned long long>(info->model_version()),
              static_cast<unsigned long long>(info->log_position()),
              static_cast<unsigned long long>(info->samples_seen()),
              static_cast<unsigned long long>(info->bytes()));
  return kExitOk;
}

// Reads the TLS and token flags into `options`.
absl::Status ReadSecurityFlags(ClientOptions* options) {
  const std::string ca = absl::GetFlag(FLAGS_tls_ca);
  const std::string cert = absl::GetFlag(FLAGS_tls_cert);
  const std::string key = absl::GetFlag(FLAGS_tls_key);
  if (absl::GetFlag(FLAGS_tls) || !ca.empty() || !cert.empty() || !key.empty()) {
    absl::Status loaded = LoadTlsFiles(ca, cert, key, options);
    if (!loaded.ok()) return loaded;
  }
  const std::string token_file = absl::GetFlag(FLAGS_token_file);
  std::string token;
  if (!token_file.empty()) {
    absl::StatusOr<std::string> contents = base::ReadFile(token_file);
    if (!contents.ok()) return contents.status();
    token = *std::move(contents);
  } else if (const char* env = std::getenv("STRATA_AUTH_TOKEN"); env != nullptr) {
    token = env;
  }
  options->auth_token = std::string(absl::StripTrailingAsciiWhitespace(token));
  return absl::OkStatus();
}

int Health(Client& client) {
  const absl::Duration wait = absl::GetFlag(FLAGS_wait);
  absl::Status status = client.WaitUntilServing(wait);
  if (!status.ok()) return Fail("health", status);
  std::printf("SERVING\n");
  return kExitOk;
}

int Main(int argc, char** argv) {
  absl::SetProgramUsageMessage(kUsage);
  std::vector<char*> args = absl::ParseCommandLine(argc, argv);
  if (args.size() != 2) return UsageError("expected exactly one subcommand");
  const std::string command = args[1];
  const bool needs_data = command == "predict" || command == "update";
  if (needs_data && absl::GetFlag(FLAGS_data).empty()) {
    return UsageError(absl::StrCat(command, ": --data is required"));
  }
  ClientOptions options;
  options.timeout = absl::GetFlag(FLAGS_timeout);
  if (absl::Status security = ReadSecurityFlags(&options); !security.ok()) {
    return UsageError(absl::StrCat("TLS / token flags: ", security.message()));
  }
  Client client(absl::GetFlag(FLAGS_server), options);
  if (command == "predict") return Predict(client);
  if (command == "update") return Update(client);
  if (command == "info") return Info(client);
  if (command == "stats") return Stats(client);
  if (command == "health") return Health(client);
  if (command == "snapshot") return Snapshot(client);
  return UsageError(absl::StrCat("unknown subcommand \"", command, "\""));
}

}  // namespace
}  // namespace strata::client

int main(int argc, char** argv) { return strata::client::Main(argc, argv); }
