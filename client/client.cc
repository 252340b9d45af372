#include "client/client.h"

#include <algorithm>
#include <chrono>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "base/file.h"

namespace strata::client {

absl::Status FromGrpcStatus(const grpc::Status& status) {
  if (status.ok()) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(status.error_code()), status.error_message());
}

std::shared_ptr<grpc::Channel> CreateInsecureChannel(const std::string& target,
                                                     int max_receive_message_bytes) {
  grpc::ChannelArguments arguments;
  arguments.SetMaxReceiveMessageSize(max_receive_message_bytes);
  return grpc::CreateCustomChannel(target, grpc::InsecureChannelCredentials(), arguments);
}

std::shared_ptr<grpc::Channel> CreateChannel(const std::string& target,
                                             const ClientOptions& options) {
  if (!options.tls) return CreateInsecureChannel(target, options.max_receive_message_bytes);
  grpc::SslCredentialsOptions ssl;
  ssl.pem_root_certs = options.tls_root_certs_pem;
  ssl.pem_cert_chain = options.tls_cert_chain_pem;
  ssl.pem_private_key = options.tls_private_key_pem;
  grpc::ChannelArguments arguments;
  arguments.SetMaxReceiveMessageSize(options.max_receive_message_bytes);
  return grpc::CreateCustomChannel(target, grpc::SslCredentials(ssl), arguments);
}

absl::Status LoadTlsFiles(const std::string& ca_path, const std::string& cert_path,
                          const std::string& key_path, ClientOptions* options) {
  if (cert_path.empty() != key_path.empty()) {
    return absl::InvalidArgumentError("a client certificate needs both its chain and its key");
  }
  struct File {
    const std::string& path;
    std::string* pem;
  };
  for (const File& file :
       {File{ca_path, &options->tls_root_certs_pem}, File{cert_path, &options->tls_cert_chain_pem},
        File{key_path, &options->tls_private_key_pem}}) {
    if (file.path.empty()) continue;
    absl::StatusOr<std::string> contents = base::ReadFile(file.path);
    if (!contents.ok()) return contents.status();
    *file.pem = *std::move(contents);
  }
  options->tls = true;
  return absl::OkStatus();
}

Client::Client(const std::string& target, ClientOptions options)
    : Client(CreateChannel(target, options), options) {}

Client::Client(std::shared_ptr<grpc::Channel> channel, ClientOptions options)
    : channel_(std::move(channel)),
      options_(options),
      stub_(v1::Strata::NewStub(channel_)),
      health_(grpc::health::v1::Health::NewStub(channel_)) {}

void Client::PrepareContext(grpc::ClientContext* context) const {
  context->set_deadline(std::chrono::system_clock::now() +
                        absl::ToChronoMilliseconds(options_.timeout));
  if (!options_.auth_token.empty()) {
    context->AddMetadata("authorization", absl::StrCat("Bearer ", options_.auth_token));
  }
}

absl::StatusOr<v1::ExtractFeaturesResponse> Client::ExtractFeatures(
    const v1::ExtractFeaturesRequest& request) {
  grpc::ClientContext context;
  PrepareContext(&context);
  v1::ExtractFeaturesResponse response;
  grpc::Status status = stub_->ExtractFeatures(&context, request, &response);
  if (!status.ok()) return FromGrpcStatus(status);
  return response;
}

absl::StatusOr<v1::PredictResponse> Client::Predict(const v1::PredictRequest& request) {
  grpc::ClientContext context;
  PrepareContext(&context);
  v1::PredictResponse response;
  grpc::Status status = stub_->Predict(&context, request, &response);
  if (!status.ok()) return FromGrpcStatus(status);
  return response;
}

absl::StatusOr<v1::UpdateSummary> Client::Update(absl::FunctionRef<bool(v1::UpdateRequest*)> next) {
  grpc::ClientContext context;
  PrepareContext(&context);
  v1::UpdateSummary summary;
  std::unique_ptr<grpc::ClientWriter<v1::UpdateRequest>> writer = stub_->Update(&context, &summary);
  v1::UpdateRequest message;
  while (next(&message)) {
    // Write() fails only if the stream is broken (the server finished it early, or the connection
    // dropped); Finish() below then returns the reason.
    if (!writer->Write(message)) break;
    message.Clear();
  }
  writer->WritesDone();
  grpc::Status status = writer->Finish();
  if (!status.ok()) return FromGrpcStatus(status);
  return summary;
}

absl::StatusOr<v1::UpdateSummary> Client::Update(std::span<const v1::UpdateRequest> messages) {
  size_t i = 0;
  return Update([&](v1::UpdateRequest* message) {
    if (i == messages.size()) return false;
    *message = messages[i++];
    return true;
  });
}

absl::StatusOr<v1::ModelInfo> Client::GetModelInfo(const std::string& model) {
  v1::GetModelInfoRequest request;
  request.set_model(model);
  grpc::ClientContext context;
  PrepareContext(&context);
  v1::ModelInfo response;
  grpc::Status status = stub_->GetModelInfo(&context, request, &response);
  if (!status.ok()) return FromGrpcStatus(status);
  return response;
}

absl::StatusOr<v1::SnapshotInfo> Client::Snapshot(const std::string& model) {
  v1::SnapshotRequest request;
  request.set_model(model);
  grpc::ClientContext context;
  PrepareContext(&context);
  v1::SnapshotInfo response;
  grpc::Status status = stub_->Snapshot(&context, request, &response);
  if (!status.ok()) return FromGrpcStatus(status);
  return response;
}

absl::StatusOr<v1::Stats> Client::GetStats(const std::string& model) {
  v1::GetStatsRequest request;
  request.set_model(model);
  grpc::ClientContext context;
  PrepareContext(&context);
  v1::Stats response;
  grpc::Status status = stub_->GetStats(&context, request, &response);
  if (!status.ok()) return FromGrpcStatus(status);
  return response;
}

absl::StatusOr<HealthStatus> Client::CheckHealth(const std::string& service) {
  grpc::ClientContext context;
  PrepareContext(&context);
  grpc::health::v1::HealthCheckRequest request;
  request.set_service(service);
  grpc::health::v1::HealthCheckResponse response;
  grpc::Status status = health_->Check(&context, request, &response);
  if (!status.ok()) return FromGrpcStatus(status);
  switch (response.status()) {
    case grpc::health::v1::HealthCheckResponse::SERVING:
      return HealthStatus::kServing;
    case grpc::health::v1::HealthCheckResponse::NOT_SERVING:
      return HealthStatus::kNotServing;
    default:
      return HealthStatus::kUnknown;
  }
}

absl::Status Client::WaitUntilServing(absl::Duration wait, const std::string& service) {
  const absl::Time deadline = absl::Now() + wait;
  absl::Duration pause = absl::Milliseconds(20);
  for (;;) {
    // Each check may itself wait for the connection, but not past the overall deadline.
    grpc::ClientContext context;
    context.set_deadline(
        absl::ToChronoTime(std::max(deadline, absl::Now() + absl::Milliseconds(1))));
    context.set_wait_for_ready(true);
    grpc::health::v1::HealthCheckRequest request;
    request.set_service(service);
    grpc::health::v1::HealthCheckResponse response;
    grpc::Status status = health_->Check(&context, request, &response);
    absl::Status last;
    if (status.ok() && response.status() == grpc::health::v1::HealthCheckResponse::SERVING) {
      return absl::OkStatus();
    } else if (status.ok()) {
      last = absl::DeadlineExceededError(absl::StrCat(
          "health of \"", service, "\": not SERVING after ", absl::FormatDuration(wait),
          " (status ", grpc::health::v1::HealthCheckResponse::ServingStatus_Name(response.status()),
          ")"));
    } else if (status.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED) {
      last = absl::DeadlineExceededError(absl::StrCat("no answer from the health service within ",
                                                      absl::FormatDuration(wait),
                                                      " (is the server running and reachable?)"));
    } else {
      last = FromGrpcStatus(status);
    }
    if (absl::Now() + pause >= deadline) return last;
    absl::SleepFor(pause);
    pause = std::min(pause * 2, absl::Milliseconds(500));
  }
}

}  // namespace strata::client
