// A small C++ client for a Strata server (service strata.v1.Strata) and its standard health service.
//
// Every call returns the server's answer, or an absl::Status whose code and message are exactly
// the gRPC status the call ended with (for example INVALID_ARGUMENT "samples[3].pixels: expected
// 784 bytes, got 780", or UNAVAILABLE when the server cannot be reached). Calls block until they
// finish or their deadline (ClientOptions::timeout) passes (then DEADLINE_EXCEEDED).
//
// Thread safety: a Client may be used by any number of threads at once; calls are independent.
#ifndef STRATA_CLIENT_CLIENT_H_
#define STRATA_CLIENT_CLIENT_H_

#include <memory>
#include <span>
#include <string>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "grpcpp/grpcpp.h"
#include "strata/v1/strata.grpc.pb.h"

namespace strata::client {

struct ClientOptions {
  // Deadline of each call, from its start. Default 10 minutes: an Update stream of a whole data set
  // is one call.
  absl::Duration timeout = absl::Minutes(10);
  // Largest reply accepted, in bytes. Default unlimited (-1): an ExtractFeatures reply for a full
  // batch can hold tens of MB, over gRPC's default 4 MB limit.
  int max_receive_message_bytes = -1;

  // Transport security. Default plaintext. With `tls` the channel is TLS and the server's
  // certificate must be signed by one of `tls_root_certs_pem` (PEM; empty: the system's default
  // roots) and name the target's host. For mutual TLS, `tls_cert_chain_pem` and
  // `tls_private_key_pem` are the client's certificate and key (both or neither).
  bool tls = false;
  std::string tls_root_certs_pem;
  std::string tls_cert_chain_pem;
  std::string tls_private_key_pem;
  // If non-empty, every call carries the metadata "authorization: Bearer <auth_token>" (servers
  // started with a token require it on Update and Snapshot). Default: none. Over a plaintext
  // channel the token is visible to anyone on the path: use TLS off loopback.
  std::string auth_token;
};

// The serving status reported by the standard health service.
enum class HealthStatus { kUnknown, kServing, kNotServing };

class Client {
 public:
  // A client for the server at `target` ("host:port", or any gRPC target URI), over a channel
  // made by CreateChannel(target, options). Does not connect yet: the first call does.
  explicit Client(const std::string& target, ClientOptions options = {});
  // A client over an existing channel (shared, not owned exclusively).
  Client(std::shared_ptr<grpc::Channel> channel, ClientOptions options);

  absl::StatusOr<v1::ExtractFeaturesResponse> ExtractFeatures(
      const v1::ExtractFeaturesRequest& request);
  absl::StatusOr<v1::PredictResponse> Predict(const v1::PredictRequest& request);

  // Streams an Update: calls `next` to fill each message until it returns false (the message it
  // was given when it returns false is not sent), then half-closes and returns the server's summary.
  // If the server fails the stream early, stops calling `next` and returns the server's status.
  absl::StatusOr<v1::UpdateSummary> Update(absl::FunctionRef<bool(v1::UpdateRequest*)> next);
  // Streams `messages` in order as one Update.
  absl::StatusOr<v1::UpdateSummary> Update(std::span<const v1::UpdateRequest> messages);

  // `model`: the model to ask about (empty: the server's default model).
  absl::StatusOr<v1::ModelInfo> GetModelInfo(const std::string& model = "");
  // Asks a server with --state_dir for a snapshot (FAILED_PRECONDITION without one).
  absl::StatusOr<v1::SnapshotInfo> Snapshot(const std::string& model = "");
  absl::StatusOr<v1::Stats> GetStats(const std::string& model = "");

  // The health service's status for `service` ("" for the whole server). NOT_FOUND if the server
  // does not know the service; UNAVAILABLE if it cannot be reached.
  absl::StatusOr<HealthStatus> CheckHealth(const std::string& service = "strata.v1.Strata");
  // Polls CheckHealth(service) until it reports SERVING (returns OK) or `wait` has passed (returns
  // the last error, or DEADLINE_EXCEEDED if the server answered but was not serving).
  absl::Status WaitUntilServing(absl::Duration wait,
                                const std::string& service = "strata.v1.Strata");

  const std::shared_ptr<grpc::Channel>& channel() const { return channel_; }

 private:
  void PrepareContext(grpc::ClientContext* context) const;

  std::shared_ptr<grpc::Channel> channel_;
  ClientOptions options_;
  std::unique_ptr<v1::Strata::Stub> stub_;
  std::unique_ptr<grpc::health::v1::Health::Stub> health_;
};

// The absl::Status with the same code and message as `status`.
absl::Status FromGrpcStatus(const grpc::Status& status);

// A channel to `target` as `options` say: plaintext or TLS (tls_*), accepting replies up to
// options.max_receive_message_bytes. (The auth token is added per call by Client, not here.)
std::shared_ptr<grpc::Channel> CreateChannel(const std::string& target,
                                             const ClientOptions& options);

// Fills the TLS fields of `options` from PEM files: `ca_path` (trusted roots; may be empty for the
// system's), `cert_path` and `key_path` (the client certificate, both or neither). Sets
// options->tls. Fails with NOT_FOUND / INVALID_ARGUMENT naming the file.
absl::Status LoadTlsFiles(const std::string& ca_path, const std::string& cert_path,
                          const std::string& key_path, ClientOptions* options);

// A plaintext channel to `target` that accepts replies up to `max_receive_message_bytes` (-1: any).
std::shared_ptr<grpc::Channel> CreateInsecureChannel(const std::string& target,
                                                     int max_receive_message_bytes = -1);

}  // namespace strata::client

#endif  // STRATA_CLIENT_CLIENT_H_
