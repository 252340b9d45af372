// The KServe Open Inference Protocol v2 over gRPC (inference.GRPCInferenceService,
// proto/inference/grpc_service.proto): a second protocol front-end beside strata.v1, on the same
// server and port. docs/kserve.md says what is supported.
//
// A front-end only: it parses, checks and translates, and does no model work. ModelInfer's images
// become a strata.v1 PredictRequest (server/kserve_tensors.h) handed to
// StrataService::SubmitPredict, so they run through the same dynamic batcher, lower tier, device
// and energy meter as strata.v1 Predict and get the same answers. Metadata comes from the model
// store's current version, read without waiting, as GetModelInfo reads it.
//
// Requests arrive as bytes (every method registered raw, as strata.v1's; server/request_parsing.h
// says why), so bytes gRPC could not parse are INVALID_ARGUMENT naming the unreadable field, and
// requests over ServiceOptions::max_message_bytes are refused by the front-end with a reason.
//
// Threading: the metadata methods answer on gRPC's callback thread (no model work, no lock);
// ModelInfer finishes on the batcher's worker (or inference queue) that ran its Predict. Every
// RPC finishes exactly once. Thread-safe.
#ifndef STRATA_SERVER_KSERVE_SERVICE_H_
#define STRATA_SERVER_KSERVE_SERVICE_H_

#include <atomic>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "grpcpp/grpcpp.h"
#include "inference/grpc_service.grpc.pb.h"
#include "server/auth.h"
#include "server/metrics.h"
#include "server/service.h"
#include "update/model_store.h"

namespace strata::server {

struct KServeOptions {
  // ServerMetadata's version: the build's (strata-server passes its version).
  std::string server_version;
  // strata.v1's limits and token (ServiceOptions): a request over max_message_bytes fails with
  // RESOURCE_EXHAUSTED, as does an image batch over max_batch; with a token and auth_all every
  // method but ServerLive and ServerReady needs it.
  int max_message_bytes = 64 << 20;
  int max_batch = 1024;
  std::string auth_token;
  bool auth_all = false;
  // Where finished calls are reported (method label ServerLive ... RepositoryIndex). Not owned;
  // null: no metrics.
  Metrics* metrics = nullptr;
};

// inference.GRPCInferenceService with every method raw.
using RawKServeService = inference::GRPCInferenceService::WithRawCallbackMethod_ServerLive<
    inference::GRPCInferenceService::WithRawCallbackMethod_ServerReady<
        inference::GRPCInferenceService::WithRawCallbackMethod_ModelReady<
            inference::GRPCInferenceService::WithRawCallbackMethod_ServerMetadata<
                inference::GRPCInferenceService::WithRawCallbackMethod_ModelMetadata<
                    inference::GRPCInferenceService::WithRawCallbackMethod_ModelInfer<
                        inference::GRPCInferenceService::WithRawCallbackMethod_RepositoryIndex<
                            inference::GRPCInferenceService::Service>>>>>>>;

class KServeService final : public RawKServeService {
 public:
  // `predictor` is not owned and must outlive the service: its models (StrataService::models(),
  // by their names; KServe has no default model) are the ones served, and predictions run through
  // predictor->SubmitPredict(). The service is not ready until SetServing(true).
  KServeService(StrataService* predictor, KServeOptions options);

  // Whether the server says it is ready (ServerReady, ModelReady): strata-server sets it with the
  // health service's status, true once the model is loaded, false when shutting down. Default
  // false. Thread-safe.
  void SetServing(bool serving);

  grpc::ServerUnaryReactor* ServerLive(grpc::CallbackServerContext* context,
                                       const grpc::ByteBuffer* request,
                                       grpc::ByteBuffer* reply) override;
  grpc::ServerUnaryReactor* ServerReady(grpc::CallbackServerContext* context,
                                        const grpc::ByteBuffer* request,
                                        grpc::ByteBuffer* reply) override;
  grpc::ServerUnaryReactor* ModelReady(grpc::CallbackServerContext* context,
                                       const grpc::ByteBuffer* request,
                                       grpc::ByteBuffer* reply) override;
  grpc::ServerUnaryReactor* ServerMetadata(grpc::CallbackServerContext* context,
                                           const grpc::ByteBuffer* request,
                                           grpc::ByteBuffer* reply) override;
  grpc::ServerUnaryReactor* ModelMetadata(grpc::CallbackServerContext* context,
                                          const grpc::ByteBuffer* request,
                                          grpc::ByteBuffer* reply) override;
  grpc::ServerUnaryReactor* ModelInfer(grpc::CallbackServerContext* context,
                                       const grpc::ByteBuffer* request,
                                       grpc::ByteBuffer* reply) override;
  grpc::ServerUnaryReactor* RepositoryIndex(grpc::CallbackServerContext* context,
                                            const grpc::ByteBuffer* request,
                                            grpc::ByteBuffer* reply) override;

 private:
  class InferCall;

  // Answers a metadata call on the calling thread: admits it (Admit), runs `handle` on the parsed
  // request, reports it and finishes it.
  template <typename Request, typename Response, typename Handler>
  grpc::ServerUnaryReactor* AnswerNow(grpc::CallbackServerContext* context,
                                      const grpc::ByteBuffer& request, grpc::ByteBuffer* reply,
                                      RpcMethod method, Handler handle);
  // The bearer token (all but the probes ServerLive and ServerReady), the message-size limit,
  // then parsing `bytes` into `request`: UNAUTHENTICATED, RESOURCE_EXHAUSTED or INVALID_ARGUMENT.
  grpc::Status Admit(const grpc::CallbackServerContext& context, const grpc::ByteBuffer& bytes,
                     RpcMethod method, google::protobuf::Message* request) const;
  // The version to answer a request for (`name`, `version`) with: NOT_FOUND for another model
  // name, UNAVAILABLE before a model is loaded, NOT_FOUND for a version other than the current.
  absl::StatusOr<std::shared_ptr<const update::ModelVersion>> FindModel(
      const std::string& name, const std::string& version) const;
  // Reports one finished call, which started at `start`, to the metrics (if any).
  void Record(RpcMethod method, const grpc::Status& status, absl::Time start) const;

  absl::Status DoModelReady(const inference::ModelReadyRequest& request,
                            inference::ModelReadyResponse* response) const;
  absl::Status DoModelMetadata(const inference::ModelMetadataRequest& request,
                               inference::ModelMetadataResponse* response) const;
  absl::Status DoRepositoryIndex(const inference::RepositoryIndexRequest& request,
                                 inference::RepositoryIndexResponse* response) const;

  StrataService* const predictor_;
  const KServeOptions options_;
  const CallAuthenticator auth_;
  std::atomic<bool> serving_{false};
};

}  // namespace strata::server

#endif  // STRATA_SERVER_KSERVE_SERVICE_H_
