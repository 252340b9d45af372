#include "server/kserve_service.h"

#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "server/kserve_tensors.h"
#include "server/request_parsing.h"
#include "server/unary_call.h"

namespace strata::server {
namespace {

// ModelMetadata's platform: what kind of model this is (KServe leaves the names to servers).
constexpr char kPlatform[] = "strata_two_tier";

// Whether `text` names model version `version` (a decimal number).
bool IsVersion(const std::string& text, uint64_t version) {
  uint64_t parsed = 0;
  return absl::SimpleAtoi(text, &parsed) && parsed == version;
}

void AddTensor(
    const char* name, const char* datatype, std::initializer_list<int64_t> shape,
    google::protobuf::RepeatedPtrField<inference::ModelMetadataResponse::TensorMetadata>* tensors) {
  inference::ModelMetadataResponse::TensorMetadata* tensor = tensors->Add();
  tensor->set_name(name);
  tensor->set_datatype(datatype);
  for (int64_t dim : shape) tensor->add_shape(dim);
}

}  // namespace

// One ModelInfer call: its request, the strata.v1 Predict it becomes, and the reply. Created by
// ModelInfer, finished exactly once (by Start on an error, else by OnPredictDone on the thread that
// ran the Predict), deleted by gRPC's OnDone().
class KServeService::InferCall final : public grpc::ServerUnaryReactor, public PredictDone {
 public:
  InferCall(const KServeService* service, grpc::CallbackServerContext* context,
            grpc::ByteBuffer* reply)
      : service_(service), context_(context), reply_(reply) {}

  // Admits, reads and checks the request, and submits its Predict; or finishes with the error.
  void Start(const grpc::ByteBuffer& bytes) {
    grpc::Status admitted = service_->Admit(*context_, bytes, RpcMethod::kModelInfer, &request_);
    if (!admitted.ok()) return FinishWith(admitted);
    absl::StatusOr<std::shared_ptr<const update::ModelVersion>> model =
        service_->FindModel(request_.model_name(), request_.model_version());
    if (!model.ok()) return FinishWith(ToGrpcStatus(model.status()));
    absl::StatusOr<InferPlan> plan =
        ReadInferRequest(request_, (*model)->extractor->input_kind(), service_->options_.max_batch);
    if (!plan.ok()) return FinishWith(ToGrpcStatus(plan.status()));
    plan_ = *std::move(plan);
    plan_.predict.set_model(request_.model_name());  // routed to the same model by SubmitPredict
    service_->predictor_->SubmitPredict({context_, &plan_.predict, &predicted_, nullptr, this, {}});
  }

  void OnPredictDone(const grpc::Status& status) override {
    if (service_->options_.metrics != nullptr) {
      service_->options_.metrics->ObservePredictBatch(plan_.predict.samples_size());
    }
    if (!status.ok()) return FinishWith(status);
    const std::string& asked = request_.model_version();
    if (!asked.empty() && !IsVersion(asked, predicted_.model_version())) {
      // An Update published a new version while the request waited: the one asked for is gone.
      return FinishWith(grpc::Status(
          grpc::StatusCode::NOT_FOUND,
          absl::StrCat("model \"", request_.model_name(), "\" version \"", asked,
                       "\" is no longer served: version ", predicted_.model_version(),
                       " replaced it while the request waited; retry with that version or none")));
    }
    response_.set_model_name(request_.model_name());
    response_.set_model_version(absl::StrCat(predicted_.model_version()));
    response_.set_id(request_.id());
    WriteInferOutputs(plan_, predicted_, &response_);
    FinishWith(grpc::Status::OK);
  }

  void OnDone() override { delete this; }

 private:
  // Serialises the reply (for OK), reports the call and finishes it; nothing touches the call
  // afterwards.
  void FinishWith(grpc::Status status) {
    if (status.ok()) status = ToGrpcStatus(SerializeReply(response_, reply_));
    service_->Record(RpcMethod::kModelInfer, status, start_);
    Finish(status);
  }

  const KServeService* const service_;
  grpc::CallbackServerContext* const context_;
  grpc::ByteBuffer* const reply_;
  const absl::Time start_ = absl::Now();
  inference::ModelInferRequest request_;
  InferPlan plan_;
  v1::PredictResponse predicted_;
  inference::ModelInferResponse response_;
};

KServeService::KServeService(StrataService* predictor, KServeOptions options)
    : predictor_(predictor),
      options_(std::move(options)),
      auth_(options_.auth_token, options_.auth_all) {}

void KServeService::SetServing(bool serving) { serving_.store(serving); }

grpc::Status KServeService::Admit(const grpc::CallbackServerContext& context,
                                  const grpc::ByteBuffer& bytes, RpcMethod method,
                                  google::protobuf::Message* request) const {
  // The probes stay open, like the health service, so orchestrators need no token.
  const bool probe = method == RpcMethod::kServerLive || method == RpcMethod::kServerReady;
  if (!probe) {
    // Nothing here changes server state: a read call, which needs the token only with auth_all.
    grpc::Status allowed = auth_.Check(context, CallKind::kRead);
    if (!allowed.ok()) return allowed;
  }
  absl::Status admitted = CheckRequestSize(bytes, options_.max_message_bytes);
  if (admitted.ok()) admitted = ParseRequest(bytes, request);
  return ToGrpcStatus(admitted);
}

absl::StatusOr<std::shared_ptr<const update::ModelVersion>> KServeService::FindModel(
    const std::string& name, const std::string& version) const {
  absl::StatusOr<NamedModel*> named = predictor_->Route(name);
  if (name.empty() || !named.ok()) {
    std::string served;
    for (const auto& model : predictor_->models()) {
      absl::StrAppend(&served, served.empty() ? "" : ", ", "\"", model->name, "\"");
    }
    return absl::NotFoundError(
        absl::StrCat("model \"", name, "\" not found; this server serves ", served));
  }
  std::shared_ptr<const update::ModelVersion> model = (*named)->store->Current();
  if (model == nullptr) {
    return absl::UnavailableError("the model is not loaded yet; retry later");
  }
  if (!version.empty() && !IsVersion(version, model->version)) {
    return absl::NotFoundError(absl::StrCat("model \"", name, "\" version \"", version,
                                            "\" not found; the served version is ", model->version,
                                            " (only the current one is served)"));
  }
  return model;
}

void KServeService::Record(RpcMethod method, const grpc::Status& status, absl::Time start) const {
  if (options_.metrics == nullptr) return;
  options_.metrics->ObserveRpc(method, static_cast<absl::StatusCode>(status.error_code()),
                               absl::Now() - start);
}

template <typename Request, typename Response, typename Handler>
grpc::ServerUnaryReactor* KServeService::AnswerNow(grpc::CallbackServerContext* context,
                                                   const grpc::ByteBuffer& request,
                                                   grpc::ByteBuffer* reply, RpcMethod method,
                                                   Handler handle) {
  const absl::Time start = absl::Now();
  auto* call = new UnaryCall<Request, Response>(context, reply);
  grpc::Status status = Admit(*context, request, method, &call->request());
  if (status.ok()) status = ToGrpcStatus(handle(call->request(), &call->response()));
  status = call->Seal(status);
  Record(method, status, start);
  call->Finish(status);
  return call;
}

grpc::ServerUnaryReactor* KServeService::ServerLive(grpc::CallbackServerContext* context,
                                                    const grpc::ByteBuffer* request,
                                                    grpc::ByteBuffer* reply) {
  return AnswerNow<inference::ServerLiveRequest, inference::ServerLiveResponse>(
      context, *request, reply, RpcMethod::kServerLive,
      [](const inference::ServerLiveRequest&, inference::ServerLiveResponse* response) {
        response->set_live(true);
        return absl::OkStatus();
      });
}

grpc::ServerUnaryReactor* KServeService::ServerReady(grpc::CallbackServerContext* context,
                                                     const grpc::ByteBuffer* request,
                                                     grpc::ByteBuffer* reply) {
  return AnswerNow<inference::ServerReadyRequest, inference::ServerReadyResponse>(
      context, *request, reply, RpcMethod::kServerReady,
      [this](const inference::ServerReadyRequest&, inference::ServerReadyResponse* response) {
        bool loaded = true;
        for (const auto& model : predictor_->models()) {
          loaded = loaded && model->store->Current() != nullptr;
        }
        response->set_ready(serving_.load() && loaded);
        return absl::OkStatus();
      });
}

grpc::ServerUnaryReactor* KServeService::ModelReady(grpc::CallbackServerContext* context,
                                                    const grpc::ByteBuffer* request,
                                                    grpc::ByteBuffer* reply) {
  return AnswerNow<inference::ModelReadyRequest, inference::ModelReadyResponse>(
      context, *request, reply, RpcMethod::kModelReady,
      [this](const auto& req, auto* response) { return DoModelReady(req, response); });
}

grpc::ServerUnaryReactor* KServeService::ServerMetadata(grpc::CallbackServerContext* context,
                                                        const grpc::ByteBuffer* request,
                                                        grpc::ByteBuffer* reply) {
  return AnswerNow<inference::ServerMetadataRequest, inference::ServerMetadataResponse>(
      context, *request, reply, RpcMethod::kServerMetadata,
      [this](const inference::ServerMetadataRequest&, inference::ServerMetadataResponse* response) {
        response->set_name("strata");
        response->set_version(options_.server_version);
        return absl::OkStatus();
      });
}

grpc::ServerUnaryReactor* KServeService::ModelMetadata(grpc::CallbackServerContext* context,
                                                       const grpc::ByteBuffer* request,
                                                       grpc::ByteBuffer* reply) {
  return AnswerNow<inference::ModelMetadataRequest, inference::ModelMetadataResponse>(
      context, *request, reply, RpcMethod::kModelMetadata,
      [this](const auto& req, auto* response) { return DoModelMetadata(req, response); });
}

grpc::ServerUnaryReactor* KServeService::RepositoryIndex(grpc::CallbackServerContext* context,
                                                         const grpc::ByteBuffer* request,
                                                         grpc::ByteBuffer* reply) {
  return AnswerNow<inference::RepositoryIndexRequest, inference::RepositoryIndexResponse>(
      context, *request, reply, RpcMethod::kRepositoryIndex,
      [this](const auto& req, auto* response) { return DoRepositoryIndex(req, response); });
}

grpc::ServerUnaryReactor* KServeService::ModelInfer(grpc::CallbackServerContext* context,
                                                    const grpc::ByteBuffer* request,
                                                    grpc::ByteBuffer* reply) {
  auto* call = new InferCall(this, context, reply);
  call->Start(*request);
  return call;
}

absl::Status KServeService::DoModelReady(const inference::ModelReadyRequest& request,
                                         inference::ModelReadyResponse* response) const {
  absl::StatusOr<std::shared_ptr<const update::ModelVersion>> model =
      FindModel(request.name(), request.version());
  if (absl::IsUnavailable(model.status())) {
    response->set_ready(false);  // known, but not loaded yet: not ready rather than an error
    return absl::OkStatus();
  }
  if (!model.ok()) return model.status();
  response->set_ready(serving_.load());
  return absl::OkStatus();
}

absl::Status KServeService::DoModelMetadata(const inference::ModelMetadataRequest& request,
                                            inference::ModelMetadataResponse* response) const {
  absl::StatusOr<std::shared_ptr<const update::ModelVersion>> model =
      FindModel(request.name(), request.version());
  if (!model.ok()) return model.status();
  const update::ModelVersion& served = **model;
  response->set_name(request.name());
  response->add_versions(absl::StrCat(served.version));
  response->set_platform(kPlatform);
  if (served.extractor->input_kind().is_text()) {
    AddTensor(kKServeTextInputName, "BYTES", {-1}, response->mutable_inputs());
  } else {
    // UINT8 is the image's native type; FP32 is accepted too (grpc_service.proto).
    AddTensor(kKServeInputName, "UINT8", {-1, served.extractor->input_size()},
              response->mutable_inputs());
  }
  AddTensor(kKServeLabelOutput, "BYTES", {-1}, response->mutable_outputs());
  AddTensor(kKServeClassIndexOutput, "INT64", {-1}, response->mutable_outputs());
  AddTensor(kKServeScoresOutput, "FP32", {-1, static_cast<int64_t>(served.readout.labels.size())},
            response->mutable_outputs());
  return absl::OkStatus();
}

absl::Status KServeService::DoRepositoryIndex(const inference::RepositoryIndexRequest& request,
                                              inference::RepositoryIndexResponse* response) const {
  if (!request.repository_name().empty()) {
    return absl::NotFoundError(absl::StrCat("repository \"", request.repository_name(),
                                            "\" not found; this server has one unnamed "
                                            "repository (leave repository_name empty)"));
  }
  for (const auto& named : predictor_->models()) {
    const std::shared_ptr<const update::ModelVersion> model = named->store->Current();
    if (model == nullptr && request.ready()) continue;
    inference::RepositoryIndexResponse::ModelIndex* index = response->add_models();
    index->set_name(named->name);
    if (model == nullptr) {
      index->set_state("LOADING");
      index->set_reason("the model is being loaded");
      continue;
    }
    index->set_version(absl::StrCat(model->version));
    index->set_state("READY");
  }
  return absl::OkStatus();
}

}  // namespace strata::server
