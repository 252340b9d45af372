// Prometheus metrics (server/metrics.h) and JSON logs of a real strata-server.
//
// The server tests start strata-server with --metrics_address=127.0.0.1:0, make real Predict,
// Update, GetModelInfo and GetStats calls through the client library, scrape GET /metrics with a
// small HTTP/1.0 client over a socket, and check that every series moved by exactly what the calls
// did. The unit tests check the Metrics class directly (exposition, binding errors).
#include "server/metrics.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "client/client.h"
#include "data/dataset.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/server_process.h"

namespace strata {
namespace {

using test::ServerProcess;
using ::testing::HasSubstr;

constexpr int kTrainImages = 1000;

// ---- scraping --------------------------------------------------------------------------------

// GET `path` from 127.0.0.1:`port` over HTTP/1.0; the body of a 200 reply, else an error.
absl::StatusOr<std::string> HttpGet(int port, const std::string& path) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return absl::InternalError("socket() failed");
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(static_cast<uint16_t>(port));
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0) {
    close(fd);
    return absl::UnavailableError(absl::StrCat("cannot connect to port ", port));
  }
  const std::string request = absl::StrCat("GET ", path, " HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
  size_t sent = 0;
  while (sent < request.size()) {
    const ssize_t n = send(fd, request.data() + sent, request.size() - sent, MSG_NOSIGNAL);
    if (n <= 0) {
      close(fd);
      return absl::UnavailableError("send() failed");
    }
    sent += static_cast<size_t>(n);
  }
  std::string reply;
  char buffer[65536];
  for (;;) {
    const ssize_t n = recv(fd, buffer, sizeof(buffer), 0);
    if (n <= 0) break;
    reply.append(buffer, static_cast<size_t>(n));
  }
  close(fd);
  const size_t header_end = reply.find("\r\n\r\n");
  if (header_end == std::string::npos) return absl::DataLossError("no HTTP header: " + reply);
  const std::string status_line = reply.substr(0, reply.find("\r\n"));
  if (status_line.find(" 200 ") == std::string::npos) {
    return absl::FailedPreconditionError("HTTP status: " + status_line);
  }
  return reply.substr(header_end + 4);
}

// Series (name plus labels, exactly as exposed) -> value.
using Scrape = std::map<std::string, double>;

Scrape Parse(const std::string& text) {
  Scrape series;
  for (absl::string_view line : absl::StrSplit(text, '\n', absl::SkipEmpty())) {
    if (line[0] == '#') continue;
    const size_t space = line.rfind(' ');
    if (space == absl::string_view::npos) {
      ADD_FAILURE() << "bad exposition line: " << line;
      continue;
    }
    double value = 0;
    const absl::string_view number = line.substr(space + 1);
    if (number == "+Inf") {
      value = INFINITY;
    } else if (!absl::SimpleAtod(number, &value)) {
      ADD_FAILURE() << "bad value in: " << line;
      continue;
    }
    series[std::string(line.substr(0, space))] = value;
  }
  return series;
}

// The value of `name` (0 if absent: a counter not yet incremented is not exposed).
double Get(const Scrape& scrape, const std::string& name) {
  auto it = scrape.find(name);
  return it == scrape.end() ? 0 : it->second;
}

std::string Requests(const std::string& method, const std::string& code) {
  return absl::StrCat("strata_rpc_requests_total{code=\"", code, "\",method=\"", method, "\"}");
}

std::string ReadFirstLine(const std::string& path) {
  std::ifstream in(path);
  std::string line;
  std::getline(in, line);
  return line;
}

// ---- the server and its model ------------------------------------------------------------------

struct Fixture {
  std::string dir;
  std::string bundle_path;
  data::LabeledImages images;  // images the bundle was not fitted on
};
Fixture* fixture = nullptr;

class MetricsServerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto* f = new Fixture;
    char dir_template[] = "/tmp/strata_metrics_test.XXXXXX";
    ASSERT_NE(mkdtemp(dir_template), nullptr);
    f->dir = dir_template;
    f->bundle_path = f->dir + "/model.bundle";
    absl::Status written = test::WriteFashionBundle(f->bundle_path, kTrainImages);
    ASSERT_TRUE(written.ok()) << written;
    absl::StatusOr<data::LabeledImages> images =
        data::Load("fashion-mnist:train", {kTrainImages, 200});
    ASSERT_TRUE(images.ok()) << images.status();
    f->images = *std::move(images);
    fixture = f;
  }
  static void TearDownTestSuite() {
    if (fixture != nullptr) std::filesystem::remove_all(fixture->dir);
    delete fixture;
    fixture = nullptr;
  }

  void StartServer(std::vector<std::string> extra_args = {}) {
    ASSERT_NE(fixture, nullptr) << "building the test model failed";
    metrics_port_file_ = absl::StrCat(fixture->dir, "/metrics_port.", getpid(), ".", starts_++);
    extra_args.push_back("--metrics_address=127.0.0.1:0");
    extra_args.push_back("--metrics_port_file=" + metrics_port_file_);
    server_ = ServerProcess::Start(fixture->bundle_path, extra_args);
    ASSERT_NE(server_, nullptr);
    // Written before the model loads, so it is there once the server is SERVING.
    ASSERT_TRUE(absl::SimpleAtoi(ReadFirstLine(metrics_port_file_), &metrics_port_))
        << "no port in " << metrics_port_file_;
    ASSERT_GT(metrics_port_, 0);
  }

  Scrape ScrapeNow() {
    absl::StatusOr<std::string> body = HttpGet(metrics_port_, "/metrics");
    EXPECT_TRUE(body.ok()) << body.status();
    return body.ok() ? Parse(*body) : Scrape();
  }

  v1::PredictRequest PredictOf(int first, int n) {
    v1::PredictRequest request;
    for (int i = first; i < first + n; ++i) {
      request.add_samples()->set_pixels(fixture->images.image(i), fixture->images.image_size());
    }
    return request;
  }

  client::Client& client() { return server_->client(); }

  std::unique_ptr<ServerProcess> server_;
  std::string metrics_port_file_;
  int metrics_port_ = 0;
  int starts_ = 0;
};

TEST_F(MetricsServerTest, BeforeAnyCallOnlyStateSeriesAreSet) {
  StartServer();
  absl::StatusOr<v1::ModelInfo> info = client().GetModelInfo();
  ASSERT_TRUE(info.ok()) << info.status();
  const Scrape scrape = ScrapeNow();
  EXPECT_EQ(Get(scrape, "strata_up"), 1);
  EXPECT_EQ(Get(scrape, "strata_model_version{model=\"strata\"}"), info->model_version());
  EXPECT_EQ(Get(scrape, absl::StrCat("strata_backend_info{device=\"", info->device(),
                                     "\",energy_table=\"cpu\",model=\"strata\"}")),
            1);
  EXPECT_EQ(Get(scrape, "strata_build_info{version=\"" STRATA_TEST_VERSION "\"}"), 1);
  // The GetModelInfo above is the only call so far.
  EXPECT_EQ(Get(scrape, Requests("GetModelInfo", "OK")), 1);
  EXPECT_EQ(Get(scrape, Requests("Predict", "OK")), 0);
  EXPECT_EQ(Get(scrape, "strata_rpc_latency_seconds_count{method=\"Predict\"}"), 0);
  EXPECT_EQ(Get(scrape, "strata_samples_absorbed_total"), 0);
  EXPECT_EQ(Get(scrape,
                "strata_energy_joules_total{model=\"strata\",phase=\"lower_tier_inference\",tier="
                "\"lower\"}"),
            0);
}

TEST_F(MetricsServerTest, CountersMoveByExactlyWhatTheCallsDid) {
  StartServer();
  const Scrape before = ScrapeNow();

  // Predict: 4 good requests of 1..4 images, 2 bad ones (INVALID_ARGUMENT) and one over
  // --max_batch (RESOURCE_EXHAUSTED).
  int images_sent = 0;
  for (int n = 1; n <= 4; ++n) {
    absl::StatusOr<v1::PredictResponse> predicted = client().Predict(PredictOf(0, n));
    ASSERT_TRUE(predicted.ok()) << predicted.status();
    images_sent += n;
  }
  v1::PredictRequest empty;
  EXPECT_EQ(client().Predict(empty).status().code(), absl::StatusCode::kInvalidArgument);
  v1::PredictRequest short_pixels;
  short_pixels.add_samples()->set_pixels(std::string(100, '\x10'));
  EXPECT_EQ(client().Predict(short_pixels).status().code(), absl::StatusCode::kInvalidArgument);
  images_sent += 1;
  EXPECT_EQ(client().Predict(PredictOf(0, test::kMaxBatch + 1)).status().code(),
            absl::StatusCode::kResourceExhausted);
  images_sent += test::kMaxBatch + 1;

  // Update: one stream of two messages, 30 good samples and 2 bad ones.
  std::vector<v1::UpdateRequest> messages(2);
  for (int i = 0; i < 30; ++i) {
    v1::LabeledSample* sample = messages[i % 2].add_samples();
    sample->mutable_sample()->set_pixels(fixture->images.image(10 + i),
                                         fixture->images.image_size());
    sample->set_label(fixture->images.labels[10 + i]);
  }
  v1::LabeledSample* no_label = messages[0].add_samples();
  no_label->mutable_sample()->set_pixels(fixture->images.image(0), fixture->images.image_size());
  v1::LabeledSample* bad_pixels = messages[1].add_samples();
  bad_pixels->mutable_sample()->set_pixels(std::string(7, '\x01'));
  bad_pixels->set_label("T-shirt/top");
  absl::StatusOr<v1::UpdateSummary> summary = client().Update(messages);
  ASSERT_TRUE(summary.ok()) << summary.status();
  ASSERT_EQ(summary->accepted(), 30u);
  ASSERT_EQ(summary->rejected(), 2u);

  absl::StatusOr<v1::ModelInfo> info = client().GetModelInfo();
  ASSERT_TRUE(info.ok()) << info.status();
  absl::StatusOr<v1::Stats> stats = client().GetStats();
  ASSERT_TRUE(stats.ok()) << stats.status();
  const Scrape after = ScrapeNow();
  auto moved = [&](const std::string& name) { return Get(after, name) - Get(before, name); };

  EXPECT_EQ(moved(Requests("Predict", "OK")), 4);
  EXPECT_EQ(moved(Requests("Predict", "INVALID_ARGUMENT")), 2);
  EXPECT_EQ(moved(Requests("Predict", "RESOURCE_EXHAUSTED")), 1);
  EXPECT_EQ(moved("strata_rpc_latency_seconds_count{method=\"Predict\"}"), 7);
  // Every latency lands in a bucket: the +Inf bucket equals the count.
  EXPECT_EQ(moved("strata_rpc_latency_seconds_bucket{method=\"Predict\",le=\"+Inf\"}"), 7);
  EXPECT_GT(moved("strata_rpc_latency_seconds_sum{method=\"Predict\"}"), 0);
  EXPECT_EQ(moved("strata_predict_batch_images_count"), 7);
  EXPECT_EQ(moved("strata_predict_batch_images_sum"), images_sent);
  // At most one image: the 1-image request, the bad 1-image one and the empty one.
  EXPECT_EQ(moved("strata_predict_batch_images_bucket{le=\"1\"}"), 3);
  EXPECT_EQ(moved("strata_predict_batch_images_bucket{le=\"2\"}"), 4);
  EXPECT_EQ(moved("strata_predict_batch_images_bucket{le=\"64\"}"), 6);
  EXPECT_EQ(moved("strata_predict_batch_images_bucket{le=\"128\"}"), 7);
  // The lower tier ran at least the 10 good images (batching may add the rejected ones it took).
  EXPECT_GE(moved("strata_lower_tier_batch_rows_sum"), 10);
  EXPECT_GE(moved("strata_lower_tier_batch_rows_count"), 1);

  EXPECT_EQ(moved(Requests("Update", "OK")), 1);
  EXPECT_EQ(moved("strata_rpc_latency_seconds_count{method=\"Update\"}"), 1);
  EXPECT_EQ(moved("strata_update_messages_total"), 2);
  EXPECT_EQ(moved("strata_samples_absorbed_total"), 30);
  EXPECT_EQ(moved("strata_samples_rejected_total"), 2);
  EXPECT_EQ(moved("strata_refreshes_total{path=\"refactor\"}") +
                moved("strata_refreshes_total{path=\"factor_update\"}"),
            summary->refreshes());
  EXPECT_EQ(summary->refreshes(), 1u);  // stream-end: one refresh when the stream ended
  EXPECT_EQ(moved(Requests("GetModelInfo", "OK")), 1);
  EXPECT_EQ(moved(Requests("GetStats", "OK")), 1);

  // The state series agree with GetModelInfo and GetStats (nothing ran between them and the scrape).
  EXPECT_EQ(Get(after, "strata_model_version{model=\"strata\"}"), info->model_version());
  EXPECT_EQ(info->model_version(), summary->model_version());
  EXPECT_GT(Get(after, "strata_model_version{model=\"strata\"}"),
            Get(before, "strata_model_version{model=\"strata\"}"));
  auto near = [](double a, double b) {
    return std::abs(a - b) <= 1e-9 * std::max(1.0, std::abs(b));
  };
  const v1::PhaseEnergy& energy = stats->energy();
  EXPECT_GT(energy.lower_tier_inference_joules(), 0);
  EXPECT_TRUE(near(Get(after,
                       "strata_energy_joules_total{model=\"strata\",phase=\"lower_tier_inference\","
                       "tier=\"lower\"}"),
                   energy.lower_tier_inference_joules()));
  EXPECT_TRUE(near(Get(after,
                       "strata_energy_joules_total{model=\"strata\",phase=\"readout_inference\","
                       "tier=\"upper\"}"),
                   energy.readout_inference_joules()));
  EXPECT_TRUE(near(
      Get(after, "strata_energy_joules_total{model=\"strata\",phase=\"absorb\",tier=\"upper\"}"),
      energy.absorb_joules()));
  EXPECT_TRUE(near(
      Get(after, "strata_energy_joules_total{model=\"strata\",phase=\"refresh\",tier=\"upper\"}"),
      energy.refresh_joules()));
  EXPECT_GT(energy.refresh_joules(), 0);
}

TEST_F(MetricsServerTest, UnauthenticatedCallsAreCountedUnderTheirCode) {
  const std::string token_file = absl::StrCat(fixture->dir, "/token.", getpid());
  std::ofstream(token_file) << "s3cret\n";
  StartServer({"--auth_token_file=" + token_file});
  // Without the token, Update is refused before it reads anything.
  std::vector<v1::UpdateRequest> messages(1);
  v1::LabeledSample* sample = messages[0].add_samples();
  sample->mutable_sample()->set_pixels(fixture->images.image(0), fixture->images.image_size());
  sample->set_label(fixture->images.labels[0]);
  EXPECT_EQ(client().Update(messages).status().code(), absl::StatusCode::kUnauthenticated);
  const Scrape scrape = ScrapeNow();
  EXPECT_EQ(Get(scrape, Requests("Update", "UNAUTHENTICATED")), 1);
  EXPECT_EQ(Get(scrape, "strata_samples_absorbed_total"), 0);
  EXPECT_EQ(Get(scrape, "strata_update_messages_total"), 0);
}

TEST_F(MetricsServerTest, UnknownPathIsNotFoundAndBadAddressStopsTheServer) {
  StartServer();
  absl::StatusOr<std::string> other = HttpGet(metrics_port_, "/nothing-here");
  EXPECT_FALSE(other.ok());
  // A second server asking for the same metrics port fails to start, naming the flag.
  const test::ServerExit exit =
      test::RunServerToExit({"--bundle=" + fixture->bundle_path, "--address=127.0.0.1:0",
                             absl::StrCat("--metrics_address=127.0.0.1:", metrics_port_)},
                            absl::StrCat(fixture->dir, "/second.", getpid(), ".stderr"));
  EXPECT_EQ(exit.code, 1);
  EXPECT_THAT(exit.stderr_text, HasSubstr("--metrics_address=127.0.0.1:"));
}

// --log_format=json: every line the real server writes is one JSON object with ts, level, file
// and msg (checked with Python's json module, an independent parser).
TEST_F(MetricsServerTest, JsonLogLinesParse) {
  ASSERT_NE(fixture, nullptr);
  const std::string stderr_path = absl::StrCat(fixture->dir, "/json.", getpid(), ".stderr");
  const std::string port_file = absl::StrCat(fixture->dir, "/json_port.", getpid());
  ServerProcess::SpawnOptions options;
  options.stderr_path = stderr_path;
  options.environment = {{"OMP_WAIT_POLICY", "PASSIVE"}};
  const pid_t pid =
      ServerProcess::Spawn({"--bundle=" + fixture->bundle_path, "--address=127.0.0.1:0",
                            "--port_file=" + port_file, "--log_format=json"},
                           options);
  int port = 0;
  const absl::Time limit = absl::Now() + test::kStartupLimit;
  while (!absl::SimpleAtoi(ReadFirstLine(port_file), &port) && absl::Now() < limit) {
    absl::SleepFor(absl::Milliseconds(20));
  }
  ASSERT_GT(port, 0) << "no port file";
  client::Client client(absl::StrCat("127.0.0.1:", port));
  ASSERT_TRUE(client.WaitUntilServing(test::kStartupLimit).ok());
  kill(pid, SIGTERM);
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;

  std::ifstream in(stderr_path);
  std::stringstream text;
  text << in.rdbuf();
  EXPECT_THAT(text.str(), HasSubstr("\"msg\":\"serving strata.v1.Strata\""));
  EXPECT_THAT(text.str(), HasSubstr("\"file\":\"server/main.cc:"));
  const std::string check = absl::StrCat(
      "python3 -c 'import json, sys\n"
      "lines = open(sys.argv[1], encoding=\"utf-8\").read().splitlines()\n"
      "assert len(lines) >= 3, lines\n"
      "for line in lines:\n"
      "    o = json.loads(line)\n"
      "    assert set(o) == {\"ts\", \"level\", \"program\", \"file\", \"msg\"}, o\n"
      "    assert o[\"level\"] in (\"INFO\", \"WARNING\", \"ERROR\"), o\n"
      "' ",
      stderr_path);
  EXPECT_EQ(system(check.c_str()), 0) << text.str();
}

// ---- the Metrics class without a server --------------------------------------------------------

TEST(MetricsTest, ExpositionHasEveryFamilyAndBoundCodes) {
  server::Metrics metrics("1.2.3");
  metrics.ObserveRpc(server::RpcMethod::kPredict, absl::StatusCode::kOk, absl::Microseconds(150));
  metrics.ObserveRpc(server::RpcMethod::kPredict, absl::StatusCode::kOk, absl::Seconds(20));
  metrics.ObserveRpc(server::RpcMethod::kSnapshot, absl::StatusCode::kFailedPrecondition,
                     absl::Milliseconds(3));
  metrics.ObservePredictBatch(3);
  metrics.AddUpdateMessage(5, 1);
  metrics.AddRefresh(model::RefreshPath::kFactorUpdate);
  metrics.SetServing(true);
  metrics.SetStateSource([] {
    std::vector<server::ServedState> states(2);
    states[0].model = "strata";
    states[0].loaded = true;
    states[0].model_version = 7;
    states[0].device = "emu";
    states[0].energy_table = "cpu";
    states[0].absorb_joules = 0.25;
    states[1].model = "news";  // not loaded yet: energy only
    states[1].energy_table = "cpu";
    states[1].lower_tier_inference_joules = 0.5;
    return states;
  });
  const Scrape scrape = Parse(metrics.Scrape());
  EXPECT_EQ(Get(scrape, Requests("Predict", "OK")), 2);
  EXPECT_EQ(Get(scrape, Requests("Snapshot", "FAILED_PRECONDITION")), 1);
  // Codes never seen are not exposed.
  EXPECT_EQ(scrape.count(Requests("Predict", "INTERNAL")), 0u);
  // 150 us is in the 250 us bucket, not the 100 us one; 20 s only in +Inf.
  EXPECT_EQ(Get(scrape, "strata_rpc_latency_seconds_bucket{method=\"Predict\",le=\"0.0001\"}"), 0);
  EXPECT_EQ(Get(scrape, "strata_rpc_latency_seconds_bucket{method=\"Predict\",le=\"0.00025\"}"), 1);
  EXPECT_EQ(Get(scrape, "strata_rpc_latency_seconds_bucket{method=\"Predict\",le=\"10\"}"), 1);
  EXPECT_EQ(Get(scrape, "strata_rpc_latency_seconds_bucket{method=\"Predict\",le=\"+Inf\"}"), 2);
  EXPECT_EQ(Get(scrape, "strata_predict_batch_images_bucket{le=\"2\"}"), 0);
  EXPECT_EQ(Get(scrape, "strata_predict_batch_images_bucket{le=\"4\"}"), 1);
  EXPECT_EQ(Get(scrape, "strata_samples_absorbed_total"), 5);
  EXPECT_EQ(Get(scrape, "strata_samples_rejected_total"), 1);
  EXPECT_EQ(Get(scrape, "strata_update_messages_total"), 1);
  EXPECT_EQ(Get(scrape, "strata_refreshes_total{path=\"factor_update\"}"), 1);
  EXPECT_EQ(Get(scrape, "strata_refreshes_total{path=\"refactor\"}"), 0);
  EXPECT_EQ(Get(scrape, "strata_up"), 1);
  EXPECT_EQ(Get(scrape, "strata_build_info{version=\"1.2.3\"}"), 1);
  EXPECT_EQ(Get(scrape, "strata_model_version{model=\"strata\"}"), 7);
  EXPECT_EQ(
      Get(scrape, "strata_backend_info{device=\"emu\",energy_table=\"cpu\",model=\"strata\"}"), 1);
  EXPECT_EQ(
      Get(scrape, "strata_energy_joules_total{model=\"strata\",phase=\"absorb\",tier=\"upper\"}"),
      0.25);
  // One set of series per model, told apart by the model label.
  EXPECT_EQ(Get(scrape,
                "strata_energy_joules_total{model=\"news\",phase=\"lower_tier_inference\",tier="
                "\"lower\"}"),
            0.5);
  EXPECT_EQ(
      scrape.count("strata_energy_joules_total{model=\"news\",phase=\"absorb\",tier=\"upper\"}"),
      1u);
  EXPECT_EQ(scrape.count("strata_model_version{model=\"news\"}"), 0u);

  // Without a source no model series are exposed.
  metrics.SetStateSource(nullptr);
  const Scrape cleared = Parse(metrics.Scrape());
  EXPECT_EQ(cleared.count("strata_model_version{model=\"strata\"}"), 0u);
  EXPECT_EQ(
      cleared.count("strata_energy_joules_total{model=\"strata\",phase=\"absorb\",tier=\"upper\"}"),
      0u);
}

TEST(MetricsTest, ServeReportsThePortAndRefusesATakenOne) {
  server::Metrics metrics("1.2.3");
  absl::StatusOr<int> port = metrics.Serve("127.0.0.1:0");
  ASSERT_TRUE(port.ok()) << port.status();
  ASSERT_GT(*port, 0);
  absl::StatusOr<std::string> body = HttpGet(*port, "/metrics");
  ASSERT_TRUE(body.ok()) << body.status();
  EXPECT_THAT(*body, HasSubstr("# TYPE strata_rpc_latency_seconds histogram"));
  EXPECT_THAT(*body, HasSubstr("\nstrata_up 0\n"));
  EXPECT_EQ(metrics.Serve("127.0.0.1:0").status().code(), absl::StatusCode::kInvalidArgument);

  server::Metrics other("1.2.3");
  EXPECT_EQ(other.Serve(absl::StrCat("127.0.0.1:", *port)).status().code(),
            absl::StatusCode::kUnavailable);
  EXPECT_EQ(other.Serve("not-an-address").status().code(), absl::StatusCode::kUnavailable);
}

}  // namespace
}  // namespace strata
