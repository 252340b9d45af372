// The Update RPC's reactor: a thin adapter between a gRPC client stream and an
// update::UpdateStream (update/pipeline.h), which does each message's work.
//
// The stream's model, and so its pipeline, is the one its first message names; its UpdateStream
// starts when that message arrives (on the update queue). A later message naming another model is
// rejected whole.
//
// It reads one message at a time (as bytes) and parses it (sample by sample if it does not parse
// whole; a message over max_message_bytes is rejected unread); on the update queue the pipeline
// validates, logs, predicts, absorbs and offers it to the update policy, then the next read starts.
// When the reads end, the reactor first tells a half-close from a broken call (OnReadDone(false)
// means either): it sends the initial metadata, which fails on a call gRPC has cancelled (a message
// over the transport's limit, a client cancel, a deadline). A half-closed stream ends in the
// pipeline (which publishes under "stream-end" and waits for the log) and finishes with its
// summary; a broken one finishes CANCELLED and publishes nothing.
#ifndef STRATA_SERVER_UPDATE_REACTOR_H_
#define STRATA_SERVER_UPDATE_REACTOR_H_

#include "grpcpp/grpcpp.h"
#include "server/auth.h"
#include "server/reports.h"
#include "server/work_queue.h"
#include "update/pipeline.h"

namespace strata::server {

// What an Update call needs from the service; everything outlives the call.
struct UpdateCallContext {
  const CallAuthenticator* auth = nullptr;
  // The pipeline of the model a stream's first message names (UpdateRequest.model; empty: the
  // default), or NOT_FOUND naming it. Thread-safe.
  std::function<absl::StatusOr<update::UpdatePipeline*>(absl::string_view model)> route;
  // Single-threaded: serialises every stream's messages, snapshots and refreshes.
  WorkQueue* update_queue = nullptr;
  CallStats* stats = nullptr;
  int max_message_bytes = 0;
};

// Starts serving one Update call; the reactor deletes itself when gRPC is done with it.
grpc::ServerReadReactor<grpc::ByteBuffer>* StartUpdateCall(UpdateCallContext env,
                                                           grpc::CallbackServerContext* context,
                                                           grpc::ByteBuffer* reply);

}  // namespace strata::server

#endif  // STRATA_SERVER_UPDATE_REACTOR_H_
