#include "server/replication.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "base/log.h"

namespace strata::server {
namespace {

// Loads the store with `bundle`, already restored onto `base` (LoadReplicaBase).
absl::Status LoadBase(const update::ReplicaBase& base, model::Bundle bundle,
                      std::shared_ptr<const model::FeatureExtractor> extractor,
                      update::ModelStore* store, absl::Time start) {
  update::PublishOptions publish;
  publish.log_position = base.position;
  publish.digest = true;
  if (absl::Status loaded = store->Load(std::move(bundle), std::move(extractor), nullptr, publish);
      !loaded.ok()) {
    return loaded;
  }
  STRATA_LOG(INFO) << "replica: base "
                   << (base.snapshot.empty() ? std::string("the bundle (log position 0)")
                                             : absl::StrCat("the snapshot at ", base.snapshot))
                   << ", model version " << base.model_version << ", statistics "
                   << store->Current()->statistics_digest << " ("
                   << absl::ToDoubleSeconds(absl::Now() - start) << " s)";
  return absl::OkStatus();
}

// Follows the log until the entries the stream held at start are applied, saying how far it got.
absl::Status CatchUp(update::JetStreamUpdateLog& log, update::Replica& replica) {
  const absl::Time start = absl::Now();
  absl::StatusOr<uint64_t> tail = log.TailSequence();
  if (!tail.ok()) return tail.status();
  for (;;) {
    absl::Status caught_up = replica.WaitApplied(*tail, absl::Seconds(10));
    if (caught_up.ok()) break;
    if (!absl::IsDeadlineExceeded(caught_up)) return caught_up;
    STRATA_LOG(INFO) << "replica: catching up: " << caught_up.message();
  }
  const update::ReplicaCounters counters = replica.counters();
  STRATA_LOG(INFO) << "replica: caught up with log position " << *tail << " in "
                   << absl::ToDoubleSeconds(absl::Now() - start) << " s ("
                   << counters.entries_applied << " entries, " << counters.samples_absorbed
                   << " samples, " << counters.refreshes << " refreshes)";
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<ReplicatedServing> StartReplicatedServing(
    const ReplicationOptions& options, int max_message_bytes, model::Bundle bundle,
    std::shared_ptr<const model::FeatureExtractor> extractor, update::ModelStore* store,
    StrataService* service, std::function<void(const absl::Status&)> on_failure,
    std::function<void(bool ready)> on_readiness) {
  ReplicatedServing serving;
  absl::StatusOr<std::unique_ptr<update::JetStreamUpdateLog>> log =
      update::JetStreamUpdateLog::Connect(options.jetstream);
  if (!log.ok()) return log.status();
  serving.log = *std::move(log);
  // An Update message becomes one log entry of about its size: it must fit in one NATS message.
  if (max_message_bytes > serving.log->max_payload() / 2) {
    return absl::FailedPreconditionError(
        absl::StrCat("--max_message_bytes=", max_message_bytes,
                     " is over half the NATS servers' max_payload (", serving.log->max_payload(),
                     " bytes): lower it, or raise max_payload in the NATS servers' "
                     "configuration"));
  }
  const absl::Time start = absl::Now();
  // The bucket may be leaderless for a few seconds after a NATS node restarts: retry that.
  absl::StatusOr<update::ReplicaBase> base = absl::UnavailableError("not read");
  for (const absl::Time limit = start + options.jetstream.connect_timeout;;) {
    base = update::LoadReplicaBase(*serving.log, *extractor, &bundle);
    if (!absl::IsUnavailable(base.status()) || absl::Now() > limit) break;
    STRATA_LOG(WARNING) << "replica: reading the snapshot bucket: " << base.status()
                        << "; retrying";
    absl::SleepFor(absl::Milliseconds(500));
  }
  if (!base.ok()) return base.status();
  serving.replica = std::make_unique<update::Replica>(serving.log.get(), store, service->meter(),
                                                      options.replica, base->position);
  // Before the store is loaded: no Update may run unreplicated.
  update::Durability durability;
  durability.log = serving.log.get();
  durability.replication = serving.replica.get();
  service->EnableDurability(std::move(durability));
  service->EnableReplication(serving.replica.get(), options.jetstream.replica_id);
  if (absl::Status loaded = LoadBase(*base, std::move(bundle), std::move(extractor), store, start);
      !loaded.ok()) {
    return loaded;
  }
  if (absl::Status started = serving.replica->Start(std::move(on_failure), std::move(on_readiness));
      !started.ok()) {
    return started;
  }
  STRATA_LOG(INFO) << "replica " << options.jetstream.replica_id << ": following JetStream stream "
                   << options.jetstream.stream << " after log position " << base->position;
  if (absl::Status caught_up = CatchUp(*serving.log, *serving.replica); !caught_up.ok()) {
    return caught_up;
  }
  return serving;
}

}  // namespace strata::server
