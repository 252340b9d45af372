// Transport security and authentication against a real strata-server: TLS, mutual TLS and the
// bearer token, with certificates generated at test time by openssl (a CA, a server certificate for
// 127.0.0.1 / localhost, a client certificate, and a second, unrelated CA with its own client).
#include <stdlib.h>
#include <sys/wait.h>

#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "base/file.h"
#include "client/client.h"
#include "data/dataset.h"
#include "gtest/gtest.h"
#include "tests/server_process.h"
#include "tests/suite_fixture.h"

namespace strata {
namespace {

using test::ServerProcess;

constexpr int kTrainImages = 1000;
constexpr char kToken[] = "s3cret-token-0123456789";

// What the tests share: a directory with the bundle, the certificates and the token file.
struct Fixture : test::FixtureDir {
  std::string bundle_path;
  data::LabeledImages updates;  // labelled images for Update streams

  static void Build(Fixture& f);
};
Fixture*& fixture = test::SuiteFixture<Fixture>::instance;

std::string Path(const std::string& name) { return fixture->Path(name); }

// Runs `command` with /bin/sh; true if it exited 0.
bool Run(const std::string& command) {
  const int status = std::system(command.c_str());
  return status != -1 && WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

// Writes, into the fixture directory: ca.pem / ca.key (the CA), server.pem / server.key (signed by
// it, for IP 127.0.0.1 and DNS localhost), client.pem / client.key (signed by it, clientAuth), and
// other-ca.pem with other-client.pem / other-client.key (an unrelated CA and a client it signed).
void MakeCertificates() {
  ASSERT_TRUE(base::WriteFileAtomically(Path("ext.cnf"),
                                        "[server]\n"
                                        "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
                                        "extendedKeyUsage=serverAuth\n"
                                        "[client]\n"
                                        "extendedKeyUsage=clientAuth\n")
                  .ok());
  const std::string cd = absl::StrCat("cd '", fixture->dir, "' && ");
  const std::string key = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
  auto ca = [&](const std::string& name) {
    return Run(absl::StrCat(cd, "openssl req -x509 ", key, " -keyout ", name, ".key -out ", name,
                            ".pem -days 2 -subj '/CN=", name, "' 2>openssl.log"));
  };
  auto leaf = [&](const std::string& name, const std::string& ca_name, const std::string& section) {
    return Run(absl::StrCat(cd, "openssl req ", key, " -keyout ", name, ".key -out ", name,
                            ".csr -subj '/CN=", name, "' 2>openssl.log && openssl x509 -req -in ",
                            name, ".csr -CA ", ca_name, ".pem -CAkey ", ca_name,
                            ".key -CAcreateserial -days 2 -extfile ext.cnf -extensions ", section,
                            " -out ", name, ".pem 2>openssl.log"));
  };
  ASSERT_TRUE(ca("ca")) << "openssl failed; see " << Path("openssl.log");
  ASSERT_TRUE(leaf("server", "ca", "server"));
  ASSERT_TRUE(leaf("client", "ca", "client"));
  ASSERT_TRUE(ca("other-ca"));
  ASSERT_TRUE(leaf("other-client", "other-ca", "client"));
}

void Fixture::Build(Fixture& f) {
  f.bundle_path = f.Path("model.bundle");
  absl::Status written = test::WriteFashionBundle(f.bundle_path, kTrainImages);
  ASSERT_TRUE(written.ok()) << written;
  absl::StatusOr<data::LabeledImages> updates =
      data::Load("fashion-mnist:train", {kTrainImages, 100});
  ASSERT_TRUE(updates.ok()) << updates.status();
  f.updates = *std::move(updates);
  MakeCertificates();
  ASSERT_TRUE(base::WriteFileAtomically(f.Path("token"), absl::StrCat(kToken, "\n")).ok());
}

// Client options trusting `ca` ("ca" or "other-ca"), presenting `cert` ("" for none).
client::ClientOptions Tls(const std::string& ca, const std::string& cert = "") {
  client::ClientOptions options;
  options.timeout = test::kStartupLimit;
  absl::Status loaded =
      client::LoadTlsFiles(Path(ca + ".pem"), cert.empty() ? "" : Path(cert + ".pem"),
                           cert.empty() ? "" : Path(cert + ".key"), &options);
  EXPECT_TRUE(loaded.ok()) << loaded;
  return options;
}

client::ClientOptions WithToken(client::ClientOptions options, const std::string& token) {
  options.auth_token = token;
  return options;
}

std::vector<std::string> TlsFlags() {
  return {absl::StrCat("--tls_cert=", Path("server.pem")),
          absl::StrCat("--tls_key=", Path("server.key"))};
}

v1::PredictRequest OneImage() {
  v1::PredictRequest request;
  request.add_samples()->set_pixels(fixture->updates.image(0), fixture->updates.image_size());
  return request;
}

std::vector<v1::UpdateRequest> UpdateMessages(int n) {
  std::vector<v1::UpdateRequest> messages(1);
  for (int i = 0; i < n; ++i) {
    v1::LabeledSample* sample = messages[0].add_samples();
    sample->mutable_sample()->set_pixels(fixture->updates.image(i), fixture->updates.image_size());
    sample->set_label(fixture->updates.labels[i]);
  }
  return messages;
}

class SecurityTest : public test::SuiteFixtureTest<Fixture> {};

// The reason a call failed, for messages.
std::string Describe(const absl::Status& status) { return status.ToString(); }

TEST_F(SecurityTest, TlsServesTrustingClientsAndRefusesPlaintextAndTheWrongCa) {
  std::unique_ptr<ServerProcess> server =
      ServerProcess::Start(fixture->bundle_path, TlsFlags(), Tls("ca"));
  ASSERT_NE(server, nullptr);
  absl::StatusOr<v1::PredictResponse> predicted = server->client().Predict(OneImage());
  ASSERT_TRUE(predicted.ok()) << predicted.status();
  EXPECT_EQ(predicted->predictions_size(), 1);

  client::ClientOptions plain_options;
  plain_options.timeout = test::kStartupLimit;
  client::Client plaintext(server->address(), plain_options);
  absl::StatusOr<v1::ModelInfo> info = plaintext.GetModelInfo();
  ASSERT_FALSE(info.ok()) << "a plaintext client was served by a TLS server";
  EXPECT_EQ(info.status().code(), absl::StatusCode::kUnavailable) << Describe(info.status());

  client::Client wrong_ca(server->address(), Tls("other-ca"));
  info = wrong_ca.GetModelInfo();
  ASSERT_FALSE(info.ok()) << "a client trusting an unrelated CA accepted the server";
  EXPECT_EQ(info.status().code(), absl::StatusCode::kUnavailable) << Describe(info.status());
}

TEST_F(SecurityTest, MutualTlsNeedsAClientCertificateFromTheClientCa) {
  std::vector<std::string> flags = TlsFlags();
  flags.push_back(absl::StrCat("--tls_client_ca=", Path("ca.pem")));
  std::unique_ptr<ServerProcess> server =
      ServerProcess::Start(fixture->bundle_path, flags, Tls("ca", "client"));
  ASSERT_NE(server, nullptr);
  absl::StatusOr<v1::PredictResponse> predicted = server->client().Predict(OneImage());
  ASSERT_TRUE(predicted.ok()) << predicted.status();

  client::Client no_certificate(server->address(), Tls("ca"));
  absl::StatusOr<v1::ModelInfo> info = no_certificate.GetModelInfo();
  ASSERT_FALSE(info.ok()) << "a client without a certificate was served under mutual TLS";
  EXPECT_EQ(info.status().code(), absl::StatusCode::kUnavailable) << Describe(info.status());

  client::Client foreign_certificate(server->address(), Tls("ca", "other-client"));
  info = foreign_certificate.GetModelInfo();
  ASSERT_FALSE(info.ok()) << "a client certificate from an unrelated CA was accepted";
  EXPECT_EQ(info.status().code(), absl::StatusCode::kUnavailable) << Describe(info.status());
}

TEST_F(SecurityTest, TokenGuardsUpdateAndSnapshotAndRefusedUpdatesAbsorbNothing) {
  std::vector<std::string> flags = TlsFlags();
  flags.push_back(absl::StrCat("--auth_token_file=", Path("token")));
  flags.push_back(absl::StrCat("--state_dir=", Path("state")));
  std::unique_ptr<ServerProcess> server =
      ServerProcess::Start(fixture->bundle_path, flags, Tls("ca"));
  ASSERT_NE(server, nullptr);
  client::Client& anonymous = server->client();
  absl::StatusOr<v1::ModelInfo> before = anonymous.GetModelInfo();
  ASSERT_TRUE(before.ok()) << before.status();
  ASSERT_TRUE(anonymous.Predict(OneImage()).ok()) << "Predict must stay open without --auth_all";

  constexpr int kSamples = 20;
  const std::vector<v1::UpdateRequest> messages = UpdateMessages(kSamples);
  client::Client wrong(server->address(), WithToken(Tls("ca"), "s3cret-token-0123456780"));
  client::Client prefix(server->address(), WithToken(Tls("ca"), "s3cret"));
  for (client::Client* refused : {&anonymous, &wrong, &prefix}) {
    absl::StatusOr<v1::UpdateSummary> summary = refused->Update(messages);
    ASSERT_FALSE(summary.ok());
    EXPECT_EQ(summary.status().code(), absl::StatusCode::kUnauthenticated)
        << Describe(summary.status());
    absl::StatusOr<v1::SnapshotInfo> snapshot = refused->Snapshot();
    ASSERT_FALSE(snapshot.ok());
    EXPECT_EQ(snapshot.status().code(), absl::StatusCode::kUnauthenticated)
        << Describe(snapshot.status());
  }
  absl::StatusOr<v1::ModelInfo> after_refused = anonymous.GetModelInfo();
  ASSERT_TRUE(after_refused.ok()) << after_refused.status();
  EXPECT_EQ(after_refused->samples_seen(), before->samples_seen());
  EXPECT_EQ(after_refused->model_version(), before->model_version());
  absl::StatusOr<v1::Stats> stats = anonymous.GetStats();
  ASSERT_TRUE(stats.ok()) << stats.status();
  EXPECT_EQ(stats->samples_absorbed(), 0u);

  client::Client authorised(server->address(), WithToken(Tls("ca"), kToken));
  absl::StatusOr<v1::UpdateSummary> summary = authorised.Update(messages);
  ASSERT_TRUE(summary.ok()) << summary.status();
  EXPECT_EQ(summary->accepted(), static_cast<uint64_t>(kSamples));
  absl::StatusOr<v1::ModelInfo> after = anonymous.GetModelInfo();
  ASSERT_TRUE(after.ok()) << after.status();
  EXPECT_EQ(after->samples_seen(), before->samples_seen() + kSamples);
  absl::StatusOr<v1::SnapshotInfo> snapshot = authorised.Snapshot();
  ASSERT_TRUE(snapshot.ok()) << snapshot.status();
  EXPECT_EQ(snapshot->samples_seen(), after->samples_seen());
}

TEST_F(SecurityTest, AuthAllWithTheTokenFromTheEnvironmentGuardsEveryCallButHealth) {
  ASSERT_EQ(setenv("STRATA_AUTH_TOKEN", kToken, 1), 0);
  // Start() proves health stays open: it waits for SERVING through a client without the token.
  std::unique_ptr<ServerProcess> server =
      ServerProcess::Start(fixture->bundle_path, {"--auth_all"});
  unsetenv("STRATA_AUTH_TOKEN");
  ASSERT_NE(server, nullptr);
  absl::StatusOr<v1::ModelInfo> info = server->client().GetModelInfo();
  ASSERT_FALSE(info.ok());
  EXPECT_EQ(info.status().code(), absl::StatusCode::kUnauthenticated) << Describe(info.status());
  absl::StatusOr<v1::PredictResponse> predicted = server->client().Predict(OneImage());
  ASSERT_FALSE(predicted.ok());
  EXPECT_EQ(predicted.status().code(), absl::StatusCode::kUnauthenticated);
  absl::StatusOr<v1::Stats> stats = server->client().GetStats();
  ASSERT_FALSE(stats.ok());
  EXPECT_EQ(stats.status().code(), absl::StatusCode::kUnauthenticated);

  client::ClientOptions options;
  options.auth_token = kToken;
  client::Client authorised(server->address(), options);
  predicted = authorised.Predict(OneImage());
  ASSERT_TRUE(predicted.ok()) << predicted.status();
  EXPECT_EQ(predicted->predictions_size(), 1);
}

// The exit status of strata-server with `args` (which make it fail before listening).
int ExitStatusOf(const std::vector<std::string>& args) {
  const pid_t pid = ServerProcess::Spawn(args);
  int status = 0;
  EXPECT_EQ(waitpid(pid, &status, 0), pid);
  EXPECT_TRUE(WIFEXITED(status)) << "wait status " << status;
  return WEXITSTATUS(status);
}

TEST_F(SecurityTest, InconsistentSecurityFlagsAreUsageErrors) {
  unsetenv("STRATA_AUTH_TOKEN");
  const std::string bundle = absl::StrCat("--bundle=", fixture->bundle_path);
  EXPECT_EQ(ExitStatusOf({bundle, absl::StrCat("--tls_cert=", Path("server.pem"))}), 2);
  EXPECT_EQ(ExitStatusOf({bundle, absl::StrCat("--tls_client_ca=", Path("ca.pem"))}), 2);
  EXPECT_EQ(ExitStatusOf({bundle, "--auth_all"}), 2);
  EXPECT_EQ(ExitStatusOf({bundle, "--auth_token_file=/nonexistent/strata/token"}), 2);
}

}  // namespace
}  // namespace strata
