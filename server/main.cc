// strata-server: serves one model bundle over gRPC: service strata.v1.Strata and, on the same
// port, the KServe v2 inference protocol (inference.GRPCInferenceService, server/kserve_service.h),
// plus the standard health service and server reflection.
//
// Start-up order: listen first, with health NOT_SERVING, so that clients and orchestrators can
// connect and see "not ready"; then load the bundle; then report SERVING. SIGTERM or SIGINT shuts
// down gracefully: new calls are refused, in-flight calls get --shutdown_grace to finish (then they
// are cancelled), and the process exits 0.
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <climits>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "base/file.h"
#include "base/log.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/health_check_service_interface.h"
#include "model/bundle.h"
#include "model/feature_extractor.h"
#include "model/lower_tier_extractor.h"
#include "server/device.h"
#include "server/kserve_service.h"
#include "server/metrics.h"
#include "server/replication.h"
#include "server/request_parsing.h"
#include "server/service.h"
#include "text/text_extractor.h"
#include "update/env.h"
#include "update/model_store.h"
#include "update/recovery.h"
#include "update/state_lock.h"
#include "update/update_log.h"
#include "update/update_policy.h"
#include "update/version_reservation.h"

ABSL_FLAG(std::string, bundle, "",
          "Model bundle to serve as the default model, named --model_name (written by "
          "strata-train). This or --model is required.");
ABSL_FLAG(std::vector<std::string>, model, {},
          "More models to serve side by side, as a comma-separated list of NAME=BUNDLE (NAME: "
          "letters, digits, '.', '_', '-'). Requests name them in their `model` field; the "
          "default model is --bundle's, or without --bundle the first of these. Each has its own "
          "statistics, update pipeline and, with --state_dir, its own state directory "
          "STATE_DIR/NAME (--bundle's keeps STATE_DIR itself). Not in replicated mode.");
ABSL_FLAG(std::string, address, "127.0.0.1:50051",
          "host:port to listen on; port 0 picks a free port (see --port_file).");
ABSL_FLAG(std::string, port_file, "",
          "If set, the bound port is written to this file (atomically) once listening.");
ABSL_FLAG(int32_t, max_batch, 1024,
          "Largest Predict / ExtractFeatures batch; larger ones fail with RESOURCE_EXHAUSTED.");
ABSL_FLAG(int64_t, max_message_bytes, int64_t{64} << 20,
          "Largest request message in bytes: a larger request fails with RESOURCE_EXHAUSTED, a "
          "larger Update message is rejected; gRPC refuses messages over 4x this itself.");
ABSL_FLAG(int32_t, inference_threads, 2, "Threads answering Predict and ExtractFeatures.");
ABSL_FLAG(std::string, batching, "on",
          "Dynamic batching of concurrent Predict requests into one lower-tier batch: on or off.");
ABSL_FLAG(int32_t, batch_max_images, 64,
          "Batching: a batch is run once this many images are queued (and holds at most this "
          "many, unless one request is larger).");
ABSL_FLAG(int64_t, batch_max_delay_us, 500,
          "Batching: how long the oldest queued Predict may wait for others, in microseconds; 0 "
          "= no waiting (batch only what is already queued).");
ABSL_FLAG(bool, batch_latency_aware, true,
          "Batching: wait for company only when it is coming (another batch is running and "
          "requests arrive faster than the delay); a request reaching an idle server runs at once. "
          "false: every request may wait --batch_max_delay_us.");
ABSL_FLAG(int32_t, batch_workers, 2, "Batching: threads forming and running batches.");
ABSL_FLAG(int32_t, batch_threads_per_worker, 1,
          "Batching: OpenMP threads each batch worker's lower tier may use.");
ABSL_FLAG(std::string, state_dir, "",
          "Directory for the update log and snapshots. If set, acknowledged updates survive "
          "crashes and start-up recovers them; if empty, updates are not durable.");
ABSL_FLAG(uint64_t, snapshot_every_samples, 100000,
          "With --state_dir: snapshot automatically after this many absorbed samples (0: never).");
ABSL_FLAG(uint64_t, log_segment_bytes, uint64_t{64} << 20,
          "With --state_dir: roll to a new update-log segment past this many bytes.");
ABSL_FLAG(absl::Duration, shutdown_grace, absl::Seconds(5),
          "On SIGTERM / SIGINT, how long in-flight calls may run before they are cancelled.");
ABSL_FLAG(std::string, tls_cert, "",
          "PEM certificate chain of the server. With --tls_key: serve TLS only (no plaintext).");
ABSL_FLAG(std::string, tls_key, "", "PEM private key of --tls_cert.");
ABSL_FLAG(std::string, tls_client_ca, "",
          "PEM CA certificates. If set (needs --tls_cert): mutual TLS, every client must present "
          "a certificate signed by one of them.");
ABSL_FLAG(std::string, auth_token_file, "",
          "File holding the bearer token Update and Snapshot require (trailing whitespace is "
          "ignored). Without it, the STRATA_AUTH_TOKEN environment variable, if set.");
ABSL_FLAG(bool, auth_all, false,
          "With a token: require it on every strata.v1.Strata call, not only Update and Snapshot "
          "(health and reflection stay open).");
ABSL_FLAG(
    std::string, update_policy, "stream-end",
    "When Update refreshes the readout: stream-end (once per stream, at its end), eager "
    "(after every message), periodic (--policy_period_samples / --policy_period) or "
    "energy-aware (when the expected gain pays for the joules, within --policy_budget_watts).");
ABSL_FLAG(int64_t, policy_period_samples, 1000,
          "periodic: refresh after this many samples since the last refresh (0: never by count).");
ABSL_FLAG(absl::Duration, policy_period, absl::Seconds(60),
          "periodic: refresh when this much time has passed since the last refresh, checked when a "
          "message arrives (0: never by time).");
ABSL_FLAG(double, policy_budget_watts, 1e-3,
          "energy-aware: the refresh budget's fill rate, joules per second.");
ABSL_FLAG(double, policy_burst_joules, 0.1,
          "energy-aware: the refresh budget's capacity (it starts full), joules.");
ABSL_FLAG(double, policy_joules_per_error, 1e-3,
          "energy-aware: what one avoided prequential error is worth, joules.");
ABSL_FLAG(std::string, policy_drift_detector, "adwin",
          "Drift detector on the prequential error stream: adwin or page-hinkley (energy-aware "
          "refreshes on its alarms; every policy but stream-end counts them).");
ABSL_FLAG(double, policy_growth_factor, 4,
          "energy-aware: also refresh once a class has this many times the samples it had when "
          "the readout was solved, or --policy_growth_min_samples if it had fewer (0: off; else "
          "> 1).");
ABSL_FLAG(
    int64_t, policy_growth_min_samples, 20,
    "energy-aware: the fewest samples of a class that trigger --policy_growth_factor (>= 1).");
ABSL_FLAG(bool, policy_forget_on_drift, false,
          "Forgetting on drift (every policy but stream-end): after a drift alarm, a class whose "
          "recent error jumped by --policy_forget_error_jump is forgotten (its Q column zeroed, "
          "the statistics decayed by --policy_forget_decay) and the readout refreshed.");
ABSL_FLAG(double, policy_forget_decay, 0.1,
          "Forgetting on drift: the weight every earlier sample keeps, in (0, 1] (1: only the "
          "drifted classes' columns are reset).");
ABSL_FLAG(double, policy_forget_error_jump, 0.5,
          "Forgetting on drift: how much a class's error over its last "
          "--policy_forget_class_window samples must exceed its earlier error, in (0, 1].");
ABSL_FLAG(int64_t, policy_forget_class_window, 20,
          "Forgetting on drift: a class's recent samples its error jump is measured over (>= 1).");
ABSL_FLAG(int64_t, policy_forget_watch_samples, 2000,
          "Forgetting on drift: samples after an alarm during which classes are checked (>= 1).");
ABSL_FLAG(double, policy_absorb_margin, 0,
          "Selective absorption (every policy but stream-end): skip a sample the served readout "
          "predicts correctly with at least this score margin over the runner-up, once its class "
          "has --policy_absorb_min_class_samples absorbed samples; in [0, 2], 0: absorb all. Not "
          "with --state_dir (the update log records every accepted sample).");
ABSL_FLAG(int64_t, policy_absorb_min_class_samples, 1000,
          "Selective absorption: samples of a class absorbed before any of its samples is skipped "
          "(>= 1).");
ABSL_FLAG(std::string, device, "auto",
          "Where the lower tier computes: float (Eigen fp32), cpu (int8 on the CPU backend), emu "
          "(int8 on the FPGA kernels' C simulation: bit-exact with the card, slow), xrt (int8 on "
          "an Alveo card; needs --xclbin) or auto (default: xrt if a card and --xclbin are "
          "present, else cpu; float if the bundle has no int8 scales). cpu, emu and xrt need a "
          "bundle with int8 scales (strata-train writes them) and refuse one without.");
ABSL_FLAG(std::string, xclbin, "",
          "xrt / auto: the xclbin holding the strata_dense_int8 and strata_gram_int8 kernels.");
ABSL_FLAG(uint32_t, xrt_device_index, 0, "xrt / auto: the card's index in XRT's enumeration.");
ABSL_FLAG(std::string, metrics_address, "",
          "host:port to serve Prometheus metrics on over HTTP (GET /metrics), e.g. 0.0.0.0:9464; "
          "port 0 picks a free port (see --metrics_port_file). Empty (default): no metrics.");
ABSL_FLAG(std::string, metrics_port_file, "",
          "If set (with --metrics_address), the metrics endpoint's bound port is written to this "
          "file (atomically) once it listens.");
ABSL_FLAG(std::string, model_name, "strata",
          "--bundle's model's name: in requests' `model` field and the KServe v2 protocol "
          "(ModelInfer, ModelMetadata, ...).");
ABSL_FLAG(std::string, nats_servers, "",
          "Replicated mode (docs/replication.md): comma-separated NATS server URLs "
          "(nats://host:4222,...) of the JetStream cluster holding the update log. Empty "
          "(default): single-process mode with the file log (--state_dir).");
ABSL_FLAG(std::string, nats_stream, "STRATA",
          "Replicated mode: the JetStream stream (and <name>_snapshots bucket) every replica of "
          "the service shares; created if missing.");
ABSL_FLAG(int32_t, nats_replicas, 3,
          "Replicated mode: replicas of the stream and the bucket when this server creates them.");
ABSL_FLAG(std::string, replica_id, "",
          "Replicated mode: this replica's name, unique in the service (default: the host name).");
ABSL_FLAG(absl::Duration, nats_publish_timeout, absl::Seconds(5),
          "Replicated mode: how long an Update waits for JetStream's quorum acknowledgement "
          "before it fails with UNAVAILABLE.");
ABSL_FLAG(absl::Duration, replica_ack_wait, absl::Seconds(10),
          "Replicated mode: how long an UpdateSummary waits for this replica to serve the "
          "stream's records (then it is sent with readout_current false).");
ABSL_FLAG(uint64_t, replica_max_lag_entries, 1000,
          "Replicated mode: readiness (health SERVING, strata_up, KServe ServerReady) only while "
          "the entry this replica applies has at most this many entries after it in the stream; "
          "NOT_SERVING while it catches up or falls behind.");
ABSL_FLAG(absl::Duration, replica_max_lag, absl::Seconds(30),
          "Replicated mode: ... and, if it is behind at all, was stored at most this long before "
          "this replica applied it (needs clocks in sync with the NATS servers').");
ABSL_FLAG(absl::Duration, snapshot_trim_delay, absl::Minutes(10),
          "Replicated mode: the stream is purged up to the older of the two kept snapshots once "
          "that snapshot is this old (longer than any replica's catch-up).");
ABSL_FLAG(std::string, log_format, "text",
          "Log lines on stderr: text (default) or json (one JSON object per line: ts, level, "
          "program, file, msg).");

namespace strata::server {
namespace {

// The server's configuration, read once from the flags.
// One model to serve (--bundle, or an entry of --model).
struct ModelOptions {
  std::string name;
  std::string bundle;     // the bundle's path
  std::string state_dir;  // its state directory; empty: not durable
};

struct Options {
  // The models to serve, the default first: --bundle's (named --model_name, state in --state_dir),
  // then --model's entries (state in --state_dir/NAME). At least one.
  std::vector<ModelOptions> models;
  // Address to listen on, host:port. Default 127.0.0.1:50051 (loopback only); use 0.0.0.0:PORT or
  // [::]:PORT to accept remote clients. Port 0 lets the kernel pick a free port.
  std::string address = "127.0.0.1:50051";
  // If non-empty, the bound port (decimal, newline-terminated) is written here once the server is
  // listening: how tests and scripts find a port chosen with port 0. Default: none.
  std::string port_file;
  // Largest Predict / ExtractFeatures batch, >= 1. Default 1024. Bounds the memory and latency of
  // one request; larger batches fail with RESOURCE_EXHAUSTED.
  int max_batch = 1024;
  // Largest request message, in bytes, 1..INT_MAX. Default 64 MiB (about 85,000 28x28 images as
  // pixels). A larger unary request fails with RESOURCE_EXHAUSTED and a larger Update message is
  // rejected (listed in the summary; the stream goes on); gRPC's transport itself refuses messages
  // over TransportMessageLimit() (4x), which bounds one message's memory.
  int max_message_bytes = 64 << 20;
  // Threads running Predict / ExtractFeatures. Default 2. With batching on, Predict runs on the
  // batcher's workers instead.
  int inference_threads = 2;
  // Dynamic batching of Predict (server/batcher.h; docs/operations.md, "Dynamic batching"). Default
  // on, 64 images, 500 us, latency-aware, 2 workers of 1 OpenMP thread each: at concurrency >= 8
  // single-image requests share lower-tier batches, and a request reaching an idle server (as at
  // concurrency 1) runs at once instead of waiting for company that never comes.
  bool batching = true;
  BatcherOptions batcher;
  // Grace period for in-flight calls at shutdown. Default 5 s.
  absl::Duration shutdown_grace = absl::Seconds(5);
  // TLS (docs/operations.md, "Security"): the server's PEM certificate chain and private key, read
  // from --tls_cert / --tls_key. Both empty (default): plaintext. Both set: TLS only.
  std::string tls_cert_pem;
  std::string tls_key_pem;
  // PEM CA certificates read from --tls_client_ca. Non-empty: mutual TLS, clients must present a
  // certificate one of them signed. Default empty: clients are not asked for certificates.
  std::string tls_client_ca_pem;
  // The bearer token (--auth_token_file, else $STRATA_AUTH_TOKEN). Empty (default): no token
  // needed. Otherwise Update and Snapshot need it, and every Strata call if auth_all.
  std::string auth_token;
  bool auth_all = false;
  // State directory (update log + snapshots). Default: none, and then nothing is durable: a crash
  // loses every update since the bundle was written. See docs/operations.md, "Durability".
  std::string state_dir;
  // Automatic snapshot period in absorbed samples; 0 disables. Default 100,000: bounds replay at
  // start-up to about that many samples, at the cost of one snapshot write (O(D^2) bytes) each time.
  uint64_t snapshot_every_samples = 100000;
  // Update-log segment size, >= 4096. Default 64 MiB. Segments are the unit of deletion after
  // snapshots: smaller ones free disk sooner, larger ones make fewer files.
  uint64_t log_segment_bytes = uint64_t{64} << 20;
  // The update policy: "stream-end" (default: refresh once when each Update stream ends, the
  // behaviour before policies existed), "eager", "periodic" or "energy-aware", and the options of
  // the last three (update_policy.h documents each; defaults: periodic every 1000 samples or 60 s;
  // energy-aware 1 mJ per avoided error, a 1 mW budget with a 0.1 J burst; ADWIN).
  std::string update_policy = "stream-end";
  update::UpdatePolicyOptions policy;
  // Where the lower tier computes (server/device.h): "float", "cpu", "emu", "xrt" or "auto", with
  // the xclbin and card index xrt uses. Default "auto": xrt with a card and an xclbin, else int8 on
  // the CPU backend (as accurate as float within 0.1 points and faster), or float for a bundle
  // without int8 scales (docs/operations.md, "Device").
  DeviceOptions device;
  // Prometheus metrics endpoint (server/metrics.h; docs/operations.md, "Metrics"), host:port.
  // Default empty: no endpoint and no metrics kept. Port 0 picks a free port, written to
  // metrics_port_file (if set) like port_file.
  std::string metrics_address;
  std::string metrics_port_file;
  // The default model's name (requests' `model` field, the KServe v2 protocol: docs/kserve.md):
  // --model_name with --bundle, else the first --model's. Default "strata".
  std::string model_name = "strata";
  // Replicated mode (docs/replication.md; server/replication.h): the JetStream update log and
  // the replica's options, from --nats_*, --replica_*, --max_batch and --snapshot_every_samples.
  // Off (default) when jetstream.servers is empty.
  bool replicated = false;
  ReplicationOptions replication;
};

// The contents of the file named by flag --`flag` (empty if `path` is empty).
absl::StatusOr<std::string> ReadFlagFile(absl::string_view flag, const std::string& path) {
  if (path.empty()) return std::string();
  absl::StatusOr<std::string> contents = base::ReadFile(path);
  if (!contents.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--", flag, "=", path, ": ", contents.status().message()));
  }
  return contents;
}

// Reads the TLS and token flags into `options`.
absl::Status ReadSecurityOptions(Options* options) {
  absl::StatusOr<std::string> cert = ReadFlagFile("tls_cert", absl::GetFlag(FLAGS_tls_cert));
  if (!cert.ok()) return cert.status();
  absl::StatusOr<std::string> key = ReadFlagFile("tls_key", absl::GetFlag(FLAGS_tls_key));
  if (!key.ok()) return key.status();
  absl::StatusOr<std::string> client_ca =
      ReadFlagFile("tls_client_ca", absl::GetFlag(FLAGS_tls_client_ca));
  if (!client_ca.ok()) return client_ca.status();
  if (cert->empty() != key->empty()) {
    return absl::InvalidArgumentError("--tls_cert and --tls_key must be given together");
  }
  if (!client_ca->empty() && cert->empty()) {
    return absl::InvalidArgumentError("--tls_client_ca needs --tls_cert and --tls_key");
  }
  options->tls_cert_pem = *std::move(cert);
  options->tls_key_pem = *std::move(key);
  options->tls_client_ca_pem = *std::move(client_ca);

  const std::string token_file = absl::GetFlag(FLAGS_auth_token_file);
  std::string token;
  if (!token_file.empty()) {
    absl::StatusOr<std::string> contents = ReadFlagFile("auth_token_file", token_file);
    if (!contents.ok()) return contents.status();
    token = *std::move(contents);
  } else if (const char* env = std::getenv("STRATA_AUTH_TOKEN"); env != nullptr) {
    token = env;
  }
  token = std::string(absl::StripTrailingAsciiWhitespace(token));
  if (token.empty() && (!token_file.empty() || std::getenv("STRATA_AUTH_TOKEN") != nullptr)) {
    return absl::InvalidArgumentError(
        "the bearer token (--auth_token_file or STRATA_AUTH_TOKEN) is empty");
  }
  if (token.find_first_of(" \t\r\n") != std::string::npos) {
    return absl::InvalidArgumentError("the bearer token must not contain whitespace");
  }
  options->auth_token = std::move(token);
  options->auth_all = absl::GetFlag(FLAGS_auth_all);
  if (options->auth_all && options->auth_token.empty()) {
    return absl::InvalidArgumentError(
        "--auth_all needs a token (--auth_token_file or STRATA_AUTH_TOKEN)");
  }
  return absl::OkStatus();
}

// Reads the Predict batching flags into `options`.
absl::Status ReadBatchingOptions(Options* options) {
  const std::string batching = absl::GetFlag(FLAGS_batching);
  if (batching != "on" && batching != "off") {
    return absl::InvalidArgumentError(
        absl::StrCat("--batching=", batching, ": expected on or off"));
  }
  options->batching = batching == "on";
  options->batcher.max_images = absl::GetFlag(FLAGS_batch_max_images);
  const int64_t max_delay_us = absl::GetFlag(FLAGS_batch_max_delay_us);
  options->batcher.max_delay = absl::Microseconds(max_delay_us);
  options->batcher.latency_aware = absl::GetFlag(FLAGS_batch_latency_aware);
  options->batcher.workers = absl::GetFlag(FLAGS_batch_workers);
  options->batcher.threads_per_worker = absl::GetFlag(FLAGS_batch_threads_per_worker);
  if (options->batcher.threads_per_worker < 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--batch_threads_per_worker: expected >= 1, got ", options->batcher.threads_per_worker));
  }
  if (options->batcher.max_images < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("--batch_max_images: expected >= 1, got ", options->batcher.max_images));
  }
  if (max_delay_us < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("--batch_max_delay_us: expected >= 0, got ", max_delay_us));
  }
  if (options->batcher.workers < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("--batch_workers: expected >= 1, got ", options->batcher.workers));
  }
  return absl::OkStatus();
}

// Reads the durability and update-policy flags into `options`.
absl::Status ReadUpdateOptions(Options* options) {
  options->state_dir = absl::GetFlag(FLAGS_state_dir);
  options->snapshot_every_samples = absl::GetFlag(FLAGS_snapshot_every_samples);
  options->log_segment_bytes = absl::GetFlag(FLAGS_log_segment_bytes);
  options->update_policy = absl::GetFlag(FLAGS_update_policy);
  options->policy.period_samples = absl::GetFlag(FLAGS_policy_period_samples);
  options->policy.period = absl::GetFlag(FLAGS_policy_period);
  options->policy.budget_watts = absl::GetFlag(FLAGS_policy_budget_watts);
  options->policy.burst_joules = absl::GetFlag(FLAGS_policy_burst_joules);
  options->policy.joules_per_error = absl::GetFlag(FLAGS_policy_joules_per_error);
  options->policy.drift_detector = absl::GetFlag(FLAGS_policy_drift_detector);
  options->policy.growth_factor = absl::GetFlag(FLAGS_policy_growth_factor);
  options->policy.growth_min_samples = absl::GetFlag(FLAGS_policy_growth_min_samples);
  options->policy.forget_on_drift = absl::GetFlag(FLAGS_policy_forget_on_drift);
  options->policy.forget_decay = absl::GetFlag(FLAGS_policy_forget_decay);
  options->policy.forget_error_jump = absl::GetFlag(FLAGS_policy_forget_error_jump);
  options->policy.forget_class_window = absl::GetFlag(FLAGS_policy_forget_class_window);
  options->policy.forget_watch_samples = absl::GetFlag(FLAGS_policy_forget_watch_samples);
  options->policy.absorb_margin = absl::GetFlag(FLAGS_policy_absorb_margin);
  options->policy.absorb_min_class_samples = absl::GetFlag(FLAGS_policy_absorb_min_class_samples);
  // Every --policy_* flag is named after its option, so the first bad one is named as a flag
  // (checked for every policy, so a typo fails even where the option would be unused).
  if (absl::Status valid = update::ValidatePolicyOptions(options->policy); !valid.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("--policy_", valid.message()));
  }
  {
    // Validates the name and the detector (the policy used is created in Run()).
    absl::StatusOr<std::unique_ptr<update::UpdatePolicy>> policy =
        update::UpdatePolicy::Create(options->update_policy, options->policy, absl::Now());
    if (!policy.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("--update_policy=", options->update_policy, " / --policy_drift_detector: ",
                       policy.status().message(), "; stream-end is the default policy"));
    }
  }
  if (options->policy.absorb_margin > 0 && !options->state_dir.empty()) {
    // The log records every accepted sample before it is predicted, so recovery would absorb the
    // skipped ones too and rebuild other statistics than the server had.
    return absl::InvalidArgumentError(
        "--policy_absorb_margin > 0 (selective absorption) cannot be combined with --state_dir: "
        "the update log records every accepted sample, so recovery would absorb skipped ones");
  }
  if (options->log_segment_bytes < 4096) {
    return absl::InvalidArgumentError(
        absl::StrCat("--log_segment_bytes: expected >= 4096, got ", options->log_segment_bytes));
  }
  return absl::OkStatus();
}

// Reads the replicated-mode flags into `options` (after ReadUpdateOptions).
absl::Status ReadReplicationOptions(Options* options) {
  const std::string servers = absl::GetFlag(FLAGS_nats_servers);
  if (servers.empty()) return absl::OkStatus();
  options->replicated = true;
  update::JetStreamOptions& jetstream = options->replication.jetstream;
  jetstream.servers = absl::StrSplit(servers, ',', absl::SkipWhitespace());
  jetstream.stream = absl::GetFlag(FLAGS_nats_stream);
  jetstream.replicas = absl::GetFlag(FLAGS_nats_replicas);
  jetstream.replica_id = absl::GetFlag(FLAGS_replica_id);
  if (jetstream.replica_id.empty()) {
    char host[256] = {};
    gethostname(host, sizeof(host) - 1);
    jetstream.replica_id = host;
  }
  jetstream.publish_timeout = absl::GetFlag(FLAGS_nats_publish_timeout);
  options->replication.replica.ack_wait = absl::GetFlag(FLAGS_replica_ack_wait);
  options->replication.replica.snapshot_every_samples = options->snapshot_every_samples;
  options->replication.replica.trim_delay = absl::GetFlag(FLAGS_snapshot_trim_delay);
  options->replication.replica.max_lag_entries = absl::GetFlag(FLAGS_replica_max_lag_entries);
  options->replication.replica.max_lag = absl::GetFlag(FLAGS_replica_max_lag);
  if (!options->state_dir.empty()) {
    return absl::InvalidArgumentError(
        "--nats_servers and --state_dir exclude each other: a replica keeps its state in the "
        "JetStream stream and its snapshot bucket");
  }
  if (options->policy.absorb_margin > 0) {
    // Every replica absorbs every logged sample; a skip decided from one replica's readout would
    // have to be in the log too.
    return absl::InvalidArgumentError(
        "--policy_absorb_margin > 0 (selective absorption) is not supported in replicated mode: "
        "every replica absorbs every sample in the log");
  }
  if (jetstream.replicas < 1 || jetstream.publish_timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError(
        "--nats_replicas must be >= 1 and --nats_publish_timeout > 0");
  }
  return absl::OkStatus();
}

// Whether `name` may name a model: also a directory name under --state_dir.
bool IsModelName(absl::string_view name) {
  if (name.empty() || name == "." || name == "..") return false;
  return std::all_of(name.begin(), name.end(), [](char c) {
    return absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-';
  });
}

// --bundle and --model into options->models (after --state_dir and --model_name are read).
absl::Status ReadModelOptions(Options* options) {
  if (const std::string bundle = absl::GetFlag(FLAGS_bundle); !bundle.empty()) {
    options->models.push_back({options->model_name, bundle, options->state_dir});
  }
  for (const std::string& entry : absl::GetFlag(FLAGS_model)) {
    const size_t equals = entry.find('=');
    const std::string name = entry.substr(0, equals);
    if (equals == std::string::npos || equals + 1 == entry.size() || !IsModelName(name)) {
      return absl::InvalidArgumentError(
          absl::StrCat("--model: \"", entry, "\", expected NAME=BUNDLE with NAME of letters, ",
                       "digits, '.', '_' and '-'"));
    }
    for (const ModelOptions& other : options->models) {
      if (other.name == name) {
        return absl::InvalidArgumentError(
            absl::StrCat("--model: the name \"", name, "\" is given twice"));
      }
    }
    options->models.push_back({name, entry.substr(equals + 1),
                               options->state_dir.empty() ? "" : options->state_dir + "/" + name});
  }
  if (options->models.empty()) {
    return absl::InvalidArgumentError("--bundle (or --model NAME=BUNDLE) is required");
  }
  if (options->replicated && options->models.size() > 1) {
    return absl::InvalidArgumentError(
        "replicated mode (--nats_servers) serves one model: no --model");
  }
  options->model_name = options->models.front().name;
  return absl::OkStatus();
}

absl::StatusOr<Options> ReadOptions() {
  Options options;
  if (absl::Status security = ReadSecurityOptions(&options); !security.ok()) return security;
  options.address = absl::GetFlag(FLAGS_address);
  options.port_file = absl::GetFlag(FLAGS_port_file);
  options.metrics_address = absl::GetFlag(FLAGS_metrics_address);
  options.metrics_port_file = absl::GetFlag(FLAGS_metrics_port_file);
  options.model_name = absl::GetFlag(FLAGS_model_name);
  if (options.model_name.empty())
    return absl::InvalidArgumentError("--model_name must not be empty");
  if (options.metrics_address.empty() && !options.metrics_port_file.empty()) {
    return absl::InvalidArgumentError("--metrics_port_file needs --metrics_address");
  }
  options.max_batch = absl::GetFlag(FLAGS_max_batch);
  const int64_t max_message_bytes = absl::GetFlag(FLAGS_max_message_bytes);
  options.inference_threads = absl::GetFlag(FLAGS_inference_threads);
  if (absl::Status batching = ReadBatchingOptions(&options); !batching.ok()) return batching;
  options.shutdown_grace = absl::GetFlag(FLAGS_shutdown_grace);
  if (absl::Status update = ReadUpdateOptions(&options); !update.ok()) return update;
  if (absl::Status replication = ReadReplicationOptions(&options); !replication.ok()) {
    return replication;
  }
  options.device.device = absl::GetFlag(FLAGS_device);
  options.device.xclbin_path = absl::GetFlag(FLAGS_xclbin);
  options.device.xrt_device_index = absl::GetFlag(FLAGS_xrt_device_index);
  if (const std::vector<std::string> names = DeviceNames();
      std::find(names.begin(), names.end(), options.device.device) == names.end()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--device=", options.device.device, ": expected one of ", absl::StrJoin(names, ", ")));
  }
  if (absl::Status models = ReadModelOptions(&options); !models.ok()) return models;
  if (options.address.empty()) return absl::InvalidArgumentError("--address must not be empty");
  if (options.max_batch < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("--max_batch: expected >= 1, got ", options.max_batch));
  }
  if (max_message_bytes < 1 || max_message_bytes > INT_MAX) {
    return absl::InvalidArgumentError(
        absl::StrCat("--max_message_bytes: expected 1..", INT_MAX, ", got ", max_message_bytes));
  }
  options.max_message_bytes = static_cast<int>(max_message_bytes);
  options.replication.replica.chunk_rows = options.max_batch;
  if (options.inference_threads < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("--inference_threads: expected >= 1, got ", options.inference_threads));
  }
  if (options.shutdown_grace < absl::ZeroDuration()) {
    return absl::InvalidArgumentError("--shutdown_grace must not be negative");
  }
  return options;
}

constexpr char kServiceName[] = "strata.v1.Strata";

// The listening port's credentials: TLS (mutual with a client CA) or plaintext.
std::shared_ptr<grpc::ServerCredentials> ServerCredentials(const Options& options) {
  if (options.tls_cert_pem.empty()) return grpc::InsecureServerCredentials();
  grpc::SslServerCredentialsOptions ssl(
      options.tls_client_ca_pem.empty()
          ? GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE
          : GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
  ssl.pem_root_certs = options.tls_client_ca_pem;
  ssl.pem_key_cert_pairs.push_back({options.tls_key_pem, options.tls_cert_pem});
  return grpc::SslServerCredentials(ssl);
}

// What one served model owns. Members are destroyed bottom-up: the update log, the store before
// the version reservation it publishes under, the state directory's lock last.
struct ModelState {
  explicit ModelState(ModelOptions options) : options(std::move(options)) {}
  const ModelOptions options;
  // With a state directory: held from before recovery until every writer of the directory is gone.
  std::unique_ptr<update::StateDirLock> state_lock;
  // With a state directory: the durable high-water mark of model versions (set by recovery).
  std::unique_ptr<update::VersionReservation> versions;
  update::ModelStore store;
  std::unique_ptr<update::FileUpdateLog> update_log;
};

// What a running server owns. Members are destroyed bottom-up: the gRPC server before the service
// it calls, the service (and its Drain()) before the models' update logs, metrics and stores it
// reports into, and the device's backend last.
struct Server {
  Device device;
  // The served models, the default first (Options::models).
  std::vector<std::unique_ptr<ModelState>> models;
  // Replicated mode: the JetStream log and the replica following it (stopped in Serve() before
  // the service goes).
  ReplicatedServing replicated;
  // Replicated mode: once Serve() reports SERVING, readiness follows the replica's lag.
  absl::Mutex readiness_mu;
  bool serving_started ABSL_GUARDED_BY(readiness_mu) = false;
  bool replica_ready ABSL_GUARDED_BY(readiness_mu) = false;
  std::unique_ptr<Metrics> metrics;  // null without --metrics_address
  std::unique_ptr<StrataService> service;
  // The KServe v2 front-end; its ModelInfer runs through `service`'s Predict path.
  std::unique_ptr<KServeService> kserve;
  std::unique_ptr<grpc::Server> grpc_server;
};

// Says `serving` on the health service (the whole server and strata.v1.Strata), on KServe's
// ServerReady / ModelReady and in the metrics (strata_up).
void SetServing(Server& server, bool serving) {
  grpc::HealthCheckServiceInterface* health = server.grpc_server->GetHealthCheckService();
  health->SetServingStatus(kServiceName, serving);
  health->SetServingStatus("", serving);
  server.kserve->SetServing(serving);
  if (server.metrics != nullptr) server.metrics->SetServing(serving);
}

// Replicated mode: the replica fell behind the stream's tail or caught up (Replica::Start). Before
// Serve() starts serving only remembered: start-up reports NOT_SERVING until it is done.
void OnReplicaReadiness(Server& server, bool ready) {
  absl::MutexLock lock(&server.readiness_mu);
  server.replica_ready = ready;
  if (server.serving_started) SetServing(server, ready);
}

// The model to serve: the bundle, and the lower tier it is served with, built once and shared by
// recovery and the store.
struct ServedModel {
  model::Bundle bundle;
  std::shared_ptr<const model::FeatureExtractor> extractor;
};

// Recovers the model's state directory onto `bundle` (newest valid snapshot + log replay), opens
// the update log for appending and makes the model's updates durable. Logs what it used, replayed
// and cut. Replayed samples' features come from `extractor`, the lower tier that will serve.
// model.versions receives the state directory's version reservation, for the store to publish
// under.
absl::Status RecoverState(const Options& options, const model::FeatureExtractor& extractor,
                          model::Bundle* bundle, ModelState& model, StrataService& service) {
  const absl::Time start = absl::Now();
  const std::string& state_dir = model.options.state_dir;
  std::error_code created;
  std::filesystem::create_directories(state_dir, created);  // a --model's STATE_DIR/NAME
  if (created) {
    return absl::InternalError(absl::StrCat("cannot create ", state_dir, ": ", created.message()));
  }
  absl::StatusOr<std::unique_ptr<update::StateDirLock>> lock =
      update::StateDirLock::Acquire(state_dir);
  if (!lock.ok()) return lock.status();
  model.state_lock = *std::move(lock);
  update::Env* env = update::Env::Default();
  absl::StatusOr<update::RecoveryReport> report =
      update::Recover(env, state_dir, options.max_batch, extractor, bundle);
  if (!report.ok()) return report.status();
  if (report->torn_tail.has_value()) {
    const update::TornTail& tail = *report->torn_tail;
    STRATA_LOG(WARNING) << "recovery: cut the torn tail of the update log: " << tail.path
                        << " at offset " << tail.offset << ", " << tail.bytes_dropped
                        << " bytes dropped (" << tail.reason
                        << (tail.delete_file ? "; segment deleted" : "") << ")";
  }
  STRATA_LOG(INFO) << "recovered " << state_dir << " in "
                   << absl::ToDoubleSeconds(absl::Now() - start) << " s: base "
                   << (report->snapshot_path.empty() ? std::string("the bundle")
                                                     : report->snapshot_path)
                   << " (log position " << report->base_position << "), replayed "
                   << report->records_replayed << " records / " << report->samples_replayed
                   << " samples, log position " << report->log_position << ", model version "
                   << report->model_version << " (versions reserved through "
                   << report->versions_reserved << ")";
  model.versions = std::move(report->versions);
  update::UpdateLogOptions log_options;
  log_options.segment_bytes = options.log_segment_bytes;
  absl::StatusOr<std::unique_ptr<update::FileUpdateLog>> log =
      update::FileUpdateLog::Open(env, state_dir, report->log_position + 1, log_options);
  if (!log.ok()) return log.status();
  model.update_log = *std::move(log);
  Durability durability;
  durability.log = model.update_log.get();
  durability.env = env;
  durability.state_dir = state_dir;
  durability.snapshot_every_samples = options.snapshot_every_samples;
  return service.EnableDurability(model.options.name, std::move(durability));
}

// Step 1: the device. A missing card fails before anything listens.
absl::Status OpenServerDevice(const Options& options, Server& server) {
  absl::StatusOr<Device> device = OpenDevice(options.device);
  if (!device.ok()) {
    return absl::Status(device.status().code(), absl::StrCat("--device=", options.device.device,
                                                             ": ", device.status().message()));
  }
  server.device = *std::move(device);
  STRATA_LOG(INFO) << "device " << server.device.name << ": " << server.device.description;
  return absl::OkStatus();
}

// Step 2: the service (not yet serving a model), its update policy and its metrics.
void BuildService(const Options& options, Server& server) {
  ServiceOptions service_options;
  service_options.max_batch = options.max_batch;
  service_options.max_message_bytes = options.max_message_bytes;
  service_options.inference_threads = options.inference_threads;
  service_options.batching = options.batching;
  service_options.batcher = options.batcher;
  STRATA_LOG(INFO) << "Predict batching "
                   << (options.batching
                           ? absl::StrCat("on: up to ", options.batcher.max_images, " images, ",
                                          absl::ToInt64Microseconds(options.batcher.max_delay),
                                          " us max delay",
                                          options.batcher.latency_aware ? " (latency-aware)" : "",
                                          ", ", options.batcher.workers, " workers")
                           : std::string("off"));
  service_options.device = server.device.name;
  service_options.model_name = options.model_name;
  // Cannot fail: ReadOptions() validated the same arguments. One policy per model.
  auto make_policy = [&options] {
    return *update::UpdatePolicy::Create(options.update_policy, options.policy, absl::Now());
  };
  STRATA_LOG(INFO) << "update policy " << options.update_policy << "; energy table "
                   << service_options.energy_table_name << ", lower tier "
                   << service_options.device;
  service_options.auth_token = options.auth_token;
  service_options.auth_all = options.auth_all;
  STRATA_LOG(INFO) << "transport "
                   << (options.tls_cert_pem.empty()        ? "plaintext"
                       : options.tls_client_ca_pem.empty() ? "TLS"
                                                           : "mutual TLS")
                   << "; bearer token "
                   << (options.auth_token.empty() ? "off"
                       : options.auth_all         ? "required on every call"
                                                  : "required on Update and Snapshot");
  if (!options.metrics_address.empty()) {
    server.metrics = std::make_unique<Metrics>(STRATA_VERSION);
    service_options.metrics = server.metrics.get();
  }
  for (const ModelOptions& model : options.models) {
    server.models.push_back(std::make_unique<ModelState>(model));
  }
  server.service = std::make_unique<StrataService>(&server.models.front()->store, service_options,
                                                   make_policy());
  for (size_t i = 1; i < server.models.size(); ++i) {
    ModelState& model = *server.models[i];
    // Cannot fail: ReadModelOptions() refused empty and repeated names.
    absl::Status added = server.service->AddModel(model.options.name, &model.store, make_policy());
    if (!added.ok()) STRATA_LOG(ERROR) << added;
  }
  KServeOptions kserve_options;
  kserve_options.server_version = STRATA_VERSION;
  kserve_options.max_message_bytes = options.max_message_bytes;
  kserve_options.max_batch = options.max_batch;
  kserve_options.auth_token = options.auth_token;
  kserve_options.auth_all = options.auth_all;
  kserve_options.metrics = service_options.metrics;
  server.kserve = std::make_unique<KServeService>(server.service.get(), kserve_options);
}

// Step 3: listen (health NOT_SERVING until the model is loaded), serve metrics, write the port.
absl::Status Listen(const Options& options, Server& server) {
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort(options.address, ServerCredentials(options), &port);
  builder.SetMaxReceiveMessageSize(TransportMessageLimit(options.max_message_bytes));
  builder.RegisterService(server.service.get());
  builder.RegisterService(server.kserve.get());
  server.grpc_server = builder.BuildAndStart();
  if (server.grpc_server == nullptr || port == 0) {
    return absl::UnavailableError(absl::StrCat("cannot listen on ", options.address));
  }
  // The health service starts out SERVING; say NOT_SERVING until the model is loaded.
  SetServing(server, false);
  STRATA_LOG(INFO) << "listening on " << options.address << " (port " << port << ")";
  if (server.metrics != nullptr) {
    // Up before the model loads, so a scrape during a long load sees strata_up 0.
    absl::StatusOr<int> metrics_port = server.metrics->Serve(options.metrics_address);
    absl::Status written = metrics_port.status();
    if (written.ok() && !options.metrics_port_file.empty()) {
      written =
          base::WriteFileAtomically(options.metrics_port_file, absl::StrCat(*metrics_port, "\n"));
    }
    if (!written.ok()) {
      return absl::Status(
          written.code(),
          absl::StrCat("--metrics_address=", options.metrics_address, ": ", written.ToString()));
    }
    STRATA_LOG(INFO) << "metrics on http://" << options.metrics_address << "/metrics (port "
                     << *metrics_port << ")";
  }
  if (!options.port_file.empty()) {
    absl::Status written = base::WriteFileAtomically(options.port_file, absl::StrCat(port, "\n"));
    if (!written.ok()) {
      return absl::Status(written.code(),
                          absl::StrCat("cannot write --port_file: ", written.ToString()));
    }
  }
  return absl::OkStatus();
}

// Step 4a: reads the bundle and builds the lower tier it is served with on the opened device:
// int8 on its backend, or float for --device=float, or for auto with a bundle without int8
// scales. Fails (before recovery touches the state directory) for an int8 device and a bundle
// without scales.
absl::StatusOr<ServedModel> ReadModel(const ModelOptions& options, const Device& device) {
  absl::StatusOr<model::Bundle> bundle = model::ReadBundle(options.bundle);
  if (!bundle.ok()) {
    return absl::Status(bundle.status().code(),
                        absl::StrCat("cannot load the model bundle ", options.bundle, ": ",
                                     bundle.status().ToString()));
  }
  // The auto rule's last step (Device::ServedBackend): an automatic device serves an image bundle
  // without int8 scales in float; an explicit int8 device refuses it. A text model's encoder
  // quantises its activations per token as it runs, so it needs no stored scales.
  const bool text = bundle->lower->architecture().text.has_value();
  fpga::Backend* backend = device.ServedBackend(text || !bundle->int8.empty());
  absl::StatusOr<std::shared_ptr<const model::FeatureExtractor>> extractor =
      text::MakeBundleExtractor(*bundle, backend);
  if (!extractor.ok()) {
    return absl::Status(extractor.status().code(),
                        absl::StrCat("cannot serve the model bundle ", options.bundle, ": ",
                                     extractor.status().message()));
  }
  if (device.backend != nullptr && backend == nullptr) {
    STRATA_LOG(INFO) << "device auto: the bundle has no int8 activation scales (written before "
                        "strata-train stored them); serving the float lower tier instead of "
                     << device.name;
  }
  return ServedModel{*std::move(bundle), *std::move(extractor)};
}

// Step 4, replicated mode: the store loaded from the stream's newest snapshot and caught up with
// the stream's tail (server/replication.h).
absl::Status LoadReplicatedModel(const Options& options, ServedModel served, Server& server) {
  absl::StatusOr<ReplicatedServing> replicated = StartReplicatedServing(
      options.replication, options.max_message_bytes, std::move(served.bundle),
      std::move(served.extractor), &server.models.front()->store, server.service.get(),
      [&server](const absl::Status&) {
        // A replica that cannot follow the log only grows stale: report NOT_SERVING and shut
        // down (the SIGTERM path), so that its restart catches up from the newest snapshot.
        SetServing(server, false);
        kill(getpid(), SIGTERM);
      },
      [&server](bool ready) { OnReplicaReadiness(server, ready); });
  if (!replicated.ok()) {
    return absl::Status(
        replicated.status().code(),
        absl::StrCat("replicated mode (--nats_servers): ", replicated.status().ToString()));
  }
  server.replicated = *std::move(replicated);
  return absl::OkStatus();
}

// Step 4, one model: read, recovered from its state directory (replayed through the extractor
// that will serve), and loaded into its store.
absl::Status LoadOneModel(const Options& options, ModelState& model, Server& server) {
  const absl::Time load_start = absl::Now();
  const ModelOptions& paths = model.options;
  absl::StatusOr<ServedModel> served = ReadModel(paths, server.device);
  if (!served.ok()) return served.status();
  if (options.replicated) return LoadReplicatedModel(options, *std::move(served), server);
  if (paths.state_dir.empty()) {
    STRATA_LOG(WARNING) << "model " << paths.name
                        << ": no --state_dir: updates are NOT durable; a crash or restart loses "
                           "every update absorbed since the bundle was written";
  } else if (absl::Status recovered =
                 RecoverState(options, *served->extractor, &served->bundle, model, *server.service);
             !recovered.ok()) {
    return absl::Status(recovered.code(),
                        absl::StrCat("cannot recover the state directory ", paths.state_dir, ": ",
                                     recovered.ToString(),
                                     "; refusing to start (see docs/operations.md, "
                                     "\"Durability\")"));
  }
  absl::Status loaded =
      model.store.Load(std::move(served->bundle), served->extractor, model.versions.get());
  if (!loaded.ok()) {
    return absl::Status(loaded.code(), absl::StrCat("cannot load the model bundle ", paths.bundle,
                                                    ": ", loaded.ToString()));
  }
  std::shared_ptr<const update::ModelVersion> current = model.store.Current();
  STRATA_LOG(INFO) << "model " << paths.name << ": loaded " << paths.bundle << " in "
                   << absl::ToDoubleSeconds(absl::Now() - load_start)
                   << " s: " << current->extractor->input_kind().name() << " model version "
                   << current->version << ", " << current->extractor->feature_size()
                   << " features, " << current->readout.labels.size() << " classes, "
                   << current->samples_seen << " samples seen";
  return absl::OkStatus();
}

// Step 4: every model, the default first.
absl::Status LoadModels(const Options& options, Server& server) {
  for (const std::unique_ptr<ModelState>& model : server.models) {
    if (absl::Status loaded = LoadOneModel(options, *model, server); !loaded.ok()) return loaded;
  }
  return absl::OkStatus();
}

// Step 5: serve until SIGTERM / SIGINT, then shut down gracefully.
void Serve(const Options& options, const sigset_t& shutdown_signals, Server& server) {
  {
    // A replica serves while it is within its lag bounds (OnReplicaReadiness).
    absl::MutexLock lock(&server.readiness_mu);
    server.serving_started = true;
    SetServing(server, server.replicated.replica == nullptr || server.replica_ready);
  }
  STRATA_LOG(INFO) << "serving " << kServiceName;

  int signal_number = 0;
  sigwait(&shutdown_signals, &signal_number);
  STRATA_LOG(INFO) << "received signal " << signal_number << " (" << strsignal(signal_number)
                   << "); shutting down";
  {
    absl::MutexLock lock(&server.readiness_mu);
    server.serving_started = false;
  }
  SetServing(server, false);
  // Predicts waiting for a log position are answered (UNAVAILABLE) before the calls are drained.
  if (server.replicated.replica != nullptr) server.replicated.replica->Stop();
  server.grpc_server->Shutdown(std::chrono::system_clock::now() +
                               absl::ToChronoMilliseconds(options.shutdown_grace));
  server.service->Drain();
  server.grpc_server->Wait();
  STRATA_LOG(INFO) << "shut down";
}

int Run(const Options& options, const sigset_t& shutdown_signals) {
  Server server;
  if (absl::Status opened = OpenServerDevice(options, server); !opened.ok()) {
    STRATA_LOG(ERROR) << opened.message();
    return 1;
  }
  BuildService(options, server);
  absl::Status started = Listen(options, server);
  if (started.ok()) started = LoadModels(options, server);
  if (!started.ok()) {
    STRATA_LOG(ERROR) << started.message();
    if (server.grpc_server != nullptr) server.grpc_server->Shutdown();
    return 1;
  }
  Serve(options, shutdown_signals, server);
  return 0;
}

}  // namespace
}  // namespace strata::server

int main(int argc, char** argv) {
  // Block the shutdown signals before any thread starts, so that every thread inherits the mask and
  // only sigwait() in Run() receives them.
  sigset_t shutdown_signals;
  sigemptyset(&shutdown_signals);
  sigaddset(&shutdown_signals, SIGTERM);
  sigaddset(&shutdown_signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &shutdown_signals, nullptr);

  strata::base::SetLogProgramName("strata-server");
  absl::SetProgramUsageMessage(
      "Serves a Strata model bundle over gRPC.\n"
      "  strata-server --bundle=PATH [--model=NAME=BUNDLE,...] [--address=127.0.0.1:50051]\n"
      "                [--port_file=PATH]\n"
      "                [--state_dir=DIR] [--snapshot_every_samples=100000]\n"
      "                [--nats_servers=URL,... [--nats_stream=STRATA] [--replica_id=NAME]]\n"
      "                [--update_policy=stream-end|eager|periodic|energy-aware] [--policy_*]\n"
      "                [--tls_cert=PEM --tls_key=PEM [--tls_client_ca=PEM]]\n"
      "                [--auth_token_file=PATH] [--auth_all]\n"
      "                [--metrics_address=HOST:PORT [--metrics_port_file=PATH]]\n"
      "                [--model_name=strata] [--log_format=text|json]");
  absl::ParseCommandLine(argc, argv);
  // Debian's Abseil is built with Mutex deadlock detection on: every lock then updates a global
  // lock-order graph (GraphCycles, under a global lock). Off in the server, where it only costs
  // (the tests, which link the same library, keep it).
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  // First, so that every later line, errors included, has the chosen format.
  absl::StatusOr<strata::base::LogFormat> log_format =
      strata::base::ParseLogFormat(absl::GetFlag(FLAGS_log_format));
  if (!log_format.ok()) {
    STRATA_LOG(ERROR) << "--log_format: " << log_format.status().message();
    return 2;
  }
  strata::base::SetLogFormat(*log_format);
  strata::server::RouteProtobufLogs();
  absl::StatusOr<strata::server::Options> options = strata::server::ReadOptions();
  if (!options.ok()) {
    STRATA_LOG(ERROR) << options.status().message() << " (see --help)";
    return 2;
  }
  if (options->replicated) {
    // Replicas of one service usually log to one place: every line names its replica.
    strata::base::SetLogProgramName(
        absl::StrCat("strata-server ", options->replication.jetstream.replica_id));
  }
  return strata::server::Run(*options, shutdown_signals);
}
