// strata-server's replicated mode (docs/replication.md): the start-up step that connects to the
// NATS JetStream update log, restores the newest snapshot, loads the store, makes the service
// replicated and follows the log until this replica has caught up with the stream's tail.
#ifndef STRATA_SERVER_REPLICATION_H_
#define STRATA_SERVER_REPLICATION_H_

#include <functional>
#include <memory>

#include "absl/status/statusor.h"
#include "model/bundle.h"
#include "model/feature_extractor.h"
#include "server/service.h"
#include "update/jetstream_update_log.h"
#include "update/model_store.h"
#include "update/replica.h"

namespace strata::server {

struct ReplicationOptions {
  update::JetStreamOptions jetstream;
  update::ReplicaOptions replica;
};

// What replicated mode owns. Destroy `replica` before `log` (it reads through it), and stop the
// replica (Replica::Stop) before the service it completes Predict waits on goes.
struct ReplicatedServing {
  std::unique_ptr<update::JetStreamUpdateLog> log;
  std::unique_ptr<update::Replica> replica;
};

// Connects to the stream (creating it and its snapshot bucket if missing), loads the newest intact
// snapshot onto `bundle` (or starts from the bundle at log position 0), loads `store` with it,
// makes `service`'s Updates replicated, starts following the log and returns once every entry the
// stream held at start is applied (the caller then reports SERVING). Service messages larger than
// the NATS servers accept are refused: `service` must have been built with max_message_bytes below
// the log's payload limit (checked here: FAILED_PRECONDITION naming both). `on_failure` is called
// if the replica later stops following the log; `on_readiness` whenever it falls behind the
// stream's tail or catches up again (Replica::Start; ReplicatedServing::replica->counters().ready
// says where it is now).
absl::StatusOr<ReplicatedServing> StartReplicatedServing(
    const ReplicationOptions& options, int max_message_bytes, model::Bundle bundle,
    std::shared_ptr<const model::FeatureExtractor> extractor, update::ModelStore* store,
    StrataService* service, std::function<void(const absl::Status&)> on_failure,
    std::function<void(bool ready)> on_readiness);

}  // namespace strata::server

#endif  // STRATA_SERVER_REPLICATION_H_
