// strata-bench-echo: the floor gRPC itself sets for Predict on this machine.
//
// A minimal gRPC C++ callback server implementing strata.v1.Strata/Predict with no model work: it
// parses the request like strata-server does and answers with one fixed PredictResponse, built once
// at start-up with the same serialized size as strata-server's reply to the same request (taken
// verbatim from a running strata-server with --reply_like, or padded to --reply_bytes). Everything
// strata-server does beyond this (the batcher, the lower tier, the readout, stats and energy
// accounting) is what a Predict costs on top of the floor. GetStats answers the Predict count
// (predict.ok: requests parsed and answered; predict.failed: requests without exactly the samples
// of the reference request), so load generators that cannot see grpc-status (h2load) can be
// checked from the server side.
//
// Usage:
//   strata-bench-echo --write_request=REQ.bin [--write_frame=REQ.frame] [--data=fashion-mnist:test]
//                     [--image_index=0] [--images=1]
//       writes a serialized PredictRequest of --images images (pixels) from --data, and the same
//       as one gRPC message frame (5-byte prefix + message, for h2load -d), then exits.
//   strata-bench-echo --request=REQ.bin (--reply_like=HOST:PORT | --reply_bytes=N)
//                     [--address=127.0.0.1:0] [--port_file=PATH]
//       serves until SIGINT / SIGTERM. Prints the reply size it serves.
#include <pthread.h>

#include <chrono>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>
#include <utility>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "base/file.h"
#include "data/dataset.h"
#include "grpcpp/grpcpp.h"
#include "strata/v1/strata.grpc.pb.h"

ABSL_FLAG(std::string, write_request, "", "Write a serialized PredictRequest here and exit.");
ABSL_FLAG(std::string, write_frame, "",
          "With --write_request: also write it as one gRPC message frame (for h2load -d).");
ABSL_FLAG(std::string, data, "fashion-mnist:test", "With --write_request: the images' data set.");
ABSL_FLAG(int32_t, image_index, 0, "With --write_request: the first image's index in --data.");
ABSL_FLAG(int32_t, images, 1, "With --write_request: images per request.");
ABSL_FLAG(std::string, request, "", "The serialized PredictRequest the load will send.");
ABSL_FLAG(std::string, reply_like, "",
          "host:port of a strata-server: its reply to --request is the reply served.");
ABSL_FLAG(int32_t, reply_bytes, 0,
          "Without --reply_like: serve a reply padded to this serialized size.");
ABSL_FLAG(std::string, address, "127.0.0.1:0", "Address to listen on (port 0: any free port).");
ABSL_FLAG(std::string, port_file, "", "Write the bound port here once listening.");

namespace strata::bench {
namespace {

class EchoService final : public v1::Strata::CallbackService {
 public:
  EchoService(v1::PredictResponse reply, int samples)
      : reply_(std::move(reply)), samples_(samples) {}

  grpc::ServerUnaryReactor* Predict(grpc::CallbackServerContext* context,
                                    const v1::PredictRequest* request,
                                    v1::PredictResponse* response) override {
    grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
    const bool ok = request->samples_size() == samples_;
    if (ok) *response = reply_;
    {
      absl::MutexLock lock(&mu_);
      ok ? ++ok_ : ++failed_;
    }
    reactor->Finish(ok ? grpc::Status::OK
                       : grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                                      "not the reference request's sample count"));
    return reactor;
  }

  grpc::ServerUnaryReactor* GetStats(grpc::CallbackServerContext* context,
                                     const v1::GetStatsRequest* /*request*/,
                                     v1::Stats* response) override {
    absl::MutexLock lock(&mu_);
    response->mutable_predict()->set_ok(ok_);
    response->mutable_predict()->set_failed(failed_);
    grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
    reactor->Finish(grpc::Status::OK);
    return reactor;
  }

 private:
  const v1::PredictResponse reply_;
  const int samples_;
  absl::Mutex mu_;
  uint64_t ok_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t failed_ ABSL_GUARDED_BY(mu_) = 0;
};

int Fail(const std::string& message) {
  std::fprintf(stderr, "strata-bench-echo: %s\n", message.c_str());
  return 1;
}

int WriteRequest() {
  const int first = absl::GetFlag(FLAGS_image_index);
  const int count = absl::GetFlag(FLAGS_images);
  if (first < 0 || count < 1) return Fail("--image_index must be >= 0 and --images >= 1");
  absl::StatusOr<data::LabeledImages> images = data::Load(
      absl::GetFlag(FLAGS_data), {static_cast<size_t>(first), static_cast<size_t>(count)});
  if (!images.ok()) return Fail(images.status().ToString());
  if (images->size() != static_cast<size_t>(count)) return Fail("not enough images in --data");
  v1::PredictRequest request;
  for (size_t i = 0; i < images->size(); ++i) {
    request.add_samples()->set_pixels(images->image(i), images->image_size());
  }
  const std::string message = request.SerializeAsString();
  absl::Status written = base::WriteFileAtomically(absl::GetFlag(FLAGS_write_request), message);
  if (!written.ok()) return Fail(written.ToString());
  if (const std::string frame_path = absl::GetFlag(FLAGS_write_frame); !frame_path.empty()) {
    // gRPC's length-prefixed message: 1 byte "not compressed", 4 bytes big-endian length.
    std::string frame(5, '\0');
    const uint32_t size = static_cast<uint32_t>(message.size());
    for (int i = 0; i < 4; ++i) frame[1 + i] = static_cast<char>((size >> (24 - 8 * i)) & 0xff);
    frame += message;
    written = base::WriteFileAtomically(frame_path, frame);
    if (!written.ok()) return Fail(written.ToString());
  }
  std::printf("request: %d image(s), %zu bytes serialized\n", count, message.size());
  return 0;
}

// strata-server's reply to `request`, fetched once.
absl::StatusOr<v1::PredictResponse> ReplyLike(const std::string& address,
                                              const v1::PredictRequest& request) {
  auto stub = v1::Strata::NewStub(grpc::CreateChannel(address, grpc::InsecureChannelCredentials()));
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
  context.set_wait_for_ready(true);
  v1::PredictResponse reply;
  grpc::Status status = stub->Predict(&context, request, &reply);
  if (!status.ok()) {
    return absl::UnavailableError(
        absl::StrCat("Predict on ", address, ": ", status.error_message()));
  }
  return reply;
}

int Serve() {
  absl::StatusOr<std::string> bytes = base::ReadFile(absl::GetFlag(FLAGS_request));
  if (!bytes.ok()) return Fail(absl::StrCat("--request: ", bytes.status().ToString()));
  v1::PredictRequest request;
  if (!request.ParseFromString(*bytes)) return Fail("--request: not a serialized PredictRequest");
  v1::PredictResponse reply;
  if (const std::string like = absl::GetFlag(FLAGS_reply_like); !like.empty()) {
    absl::StatusOr<v1::PredictResponse> fetched = ReplyLike(like, request);
    if (!fetched.ok()) return Fail(fetched.status().ToString());
    reply = *std::move(fetched);
  } else {
    const int target = absl::GetFlag(FLAGS_reply_bytes);
    if (target < 1) return Fail("one of --reply_like or --reply_bytes is required");
    // One prediction whose label is padded until the message has the target size (the label's
    // length prefix grows with it, hence the loop).
    v1::Prediction* prediction = reply.add_predictions();
    prediction->set_class_index(1);
    reply.set_model_version(1);
    while (static_cast<int>(reply.ByteSizeLong()) < target)
      prediction->mutable_label()->push_back('x');
    if (static_cast<int>(reply.ByteSizeLong()) != target) {
      return Fail(absl::StrCat("cannot build a reply of exactly ", target, " bytes"));
    }
  }

  EchoService service(reply, request.samples_size());
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort(absl::GetFlag(FLAGS_address), grpc::InsecureServerCredentials(), &port);
  builder.RegisterService(&service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || port == 0)
    return Fail("cannot listen on " + absl::GetFlag(FLAGS_address));
  if (const std::string port_file = absl::GetFlag(FLAGS_port_file); !port_file.empty()) {
    absl::Status written = base::WriteFileAtomically(port_file, absl::StrCat(port, "\n"));
    if (!written.ok()) return Fail(written.ToString());
  }
  std::printf("echo server on port %d: request %zu bytes, reply %zu bytes\n", port, bytes->size(),
              reply.ByteSizeLong());
  std::fflush(stdout);

  // Serve until SIGINT / SIGTERM (blocked in main() before any thread started).
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  int signal = 0;
  sigwait(&signals, &signal);
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(1));
  return 0;
}

}  // namespace
}  // namespace strata::bench

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  // Blocked here, before gRPC starts threads, so that every thread inherits the mask and Serve()
  // receives them with sigwait.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  if (!absl::GetFlag(FLAGS_write_request).empty()) return strata::bench::WriteRequest();
  return strata::bench::Serve();
}
