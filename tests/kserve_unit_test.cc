// The KServe v2 front-end before a model is loaded, in process (a real gRPC server on loopback
// over an empty model store): what a client sees while strata-server is still loading, which a
// test against the real binary cannot catch deterministically.
#include <memory>

#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "inference/grpc_service.grpc.pb.h"
#include "server/kserve_service.h"
#include "server/service.h"
#include "update/model_store.h"

namespace strata::server {
namespace {

class KServeNotLoadedTest : public ::testing::Test {
 protected:
  void SetUp() override {
    grpc::ServerBuilder builder;
    int port = 0;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
    builder.RegisterService(&strata_);
    builder.RegisterService(&kserve_);
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
    stub_ = inference::GRPCInferenceService::NewStub(grpc::CreateChannel(
        "127.0.0.1:" + std::to_string(port), grpc::InsecureChannelCredentials()));
  }
  void TearDown() override {
    server_->Shutdown();
    strata_.Drain();
  }

  update::ModelStore store_;  // never loaded
  StrataService strata_{&store_, ServiceOptions{}};
  KServeService kserve_{&strata_, KServeOptions{}};
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<inference::GRPCInferenceService::Stub> stub_;
};

TEST_F(KServeNotLoadedTest, LiveButNotReady) {
  kserve_.SetServing(true);  // even so: no model yet
  grpc::ClientContext live_context;
  inference::ServerLiveResponse live;
  ASSERT_TRUE(stub_->ServerLive(&live_context, {}, &live).ok());
  EXPECT_TRUE(live.live());
  grpc::ClientContext ready_context;
  inference::ServerReadyResponse ready;
  ASSERT_TRUE(stub_->ServerReady(&ready_context, {}, &ready).ok());
  EXPECT_FALSE(ready.ready());
  grpc::ClientContext model_context;
  inference::ModelReadyRequest model_request;
  model_request.set_name("strata");
  inference::ModelReadyResponse model_ready;
  ASSERT_TRUE(stub_->ModelReady(&model_context, model_request, &model_ready).ok());
  EXPECT_FALSE(model_ready.ready());
}

TEST_F(KServeNotLoadedTest, MetadataAndInferAreUnavailable) {
  grpc::ClientContext metadata_context;
  inference::ModelMetadataRequest metadata_request;
  metadata_request.set_name("strata");
  inference::ModelMetadataResponse metadata;
  EXPECT_EQ(stub_->ModelMetadata(&metadata_context, metadata_request, &metadata).error_code(),
            grpc::StatusCode::UNAVAILABLE);
  grpc::ClientContext infer_context;
  inference::ModelInferRequest infer_request;
  infer_request.set_model_name("strata");
  inference::ModelInferResponse infer;
  const grpc::Status status = stub_->ModelInfer(&infer_context, infer_request, &infer);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(status.error_message(), "the model is not loaded yet; retry later");
  // An unknown model is NOT_FOUND whether or not a model is loaded.
  grpc::ClientContext other_context;
  infer_request.set_model_name("other");
  EXPECT_EQ(stub_->ModelInfer(&other_context, infer_request, &infer).error_code(),
            grpc::StatusCode::NOT_FOUND);
}

TEST_F(KServeNotLoadedTest, RepositoryIndexSaysLoading) {
  grpc::ClientContext context;
  inference::RepositoryIndexResponse index;
  ASSERT_TRUE(stub_->RepositoryIndex(&context, {}, &index).ok());
  ASSERT_EQ(index.models_size(), 1);
  EXPECT_EQ(index.models(0).name(), "strata");
  EXPECT_EQ(index.models(0).state(), "LOADING");
  EXPECT_EQ(index.models(0).version(), "");
  grpc::ClientContext ready_context;
  inference::RepositoryIndexRequest ready_only;
  ready_only.set_ready(true);
  ASSERT_TRUE(stub_->RepositoryIndex(&ready_context, ready_only, &index).ok());
  EXPECT_EQ(index.models_size(), 0);
}

}  // namespace
}  // namespace strata::server
