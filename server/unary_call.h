// One call of a raw (grpc::ByteBuffer) unary method: the parsed request, the reply being built, and
// the reactor that finishes the call. See server/request_parsing.h for why the methods are raw.
//
// Lifetime: created by the method handler, sealed (Seal()) and finished (Finish()) exactly once,
// deleted by gRPC's OnDone() (the reactor contract of grpcpp/support/server_callback.h), which may
// run as soon as Finish() is called: nothing may touch the call after its Finish(). request() and
// response() stay valid until then, so work queued elsewhere may use them.
#ifndef STRATA_SERVER_UNARY_CALL_H_
#define STRATA_SERVER_UNARY_CALL_H_

#include "absl/status/status.h"
#include "grpcpp/grpcpp.h"
#include "server/request_parsing.h"

namespace strata::server {

template <typename Request, typename Response>
class UnaryCall final : public grpc::ServerUnaryReactor {
 public:
  // `reply` is gRPC's response buffer of the call; not owned.
  UnaryCall(grpc::CallbackServerContext* context, grpc::ByteBuffer* reply)
      : context_(context), reply_(reply) {}

  grpc::CallbackServerContext* context() const { return context_; }
  Request& request() { return request_; }
  const Request& request() const { return request_; }
  Response& response() { return response_; }

  // Parses `bytes` into request(): INVALID_ARGUMENT naming the unreadable field (ParseRequest).
  absl::Status Parse(const grpc::ByteBuffer& bytes) { return ParseRequest(bytes, &request_); }

  // The status to finish the call with: `status`, or for OK, OK once response() is serialised into
  // the reply (INTERNAL if it cannot be). Call once, then Finish() with the result.
  grpc::Status Seal(grpc::Status status) {
    if (status.ok()) {
      absl::Status serialized = SerializeReply(response_, reply_);
      if (!serialized.ok()) {
        status = grpc::Status(grpc::StatusCode::INTERNAL, std::string(serialized.message()));
      }
    }
    return status;
  }

  void OnDone() override { delete this; }

 private:
  grpc::CallbackServerContext* const context_;
  grpc::ByteBuffer* const reply_;
  Request request_;
  Response response_;
};

}  // namespace strata::server

#endif  // STRATA_SERVER_UNARY_CALL_H_
