#include "tests/server_process.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "data/dataset.h"
#include "gtest/gtest.h"
#include "model/bundle.h"
#include "model/lower_tier.h"
#include "model/tensor.h"
#include "model/upper_tier.h"
#include "tests/shared_file.h"

namespace strata::test {

absl::Status FitBundle(const model::LowerTierSpec& spec, const data::LabeledImages& train,
                       const std::string& path) {
  const model::MatrixF images =
      model::PixelsToMatrix(train.pixels, static_cast<Eigen::Index>(train.image_size()));
  absl::StatusOr<model::LowerTier> lower = model::LowerTier::Fit(spec, images);
  if (!lower.ok()) return lower.status();
  model::UpperTier upper(lower->feature_size(), /*lambda=*/10.0);
  absl::Status absorbed = upper.AbsorbLabeled(lower->Features(images), train.labels).status();
  if (!absorbed.ok()) return absorbed;
  model::Bundle bundle{std::make_shared<const model::LowerTier>(*std::move(lower)),
                       std::move(upper), 1};
  return model::WriteBundle(bundle, path);
}

absl::Status WriteFashionBundle(const std::string& path, int train_images) {
  return MakeShared(absl::StrCat("fashion-", train_images, ".bundle"), path,
                    [train_images](const std::string& out) -> absl::Status {
                      absl::StatusOr<data::LabeledImages> train =
                          data::Load("fashion-mnist:train", {0, static_cast<size_t>(train_images)});
                      if (!train.ok()) return train.status();
                      model::LowerTierSpec spec;
                      spec.filters = 12;
                      spec.expansion = 256;
                      spec.pca_images = train_images;
                      spec.seed = 7;
                      return FitBundle(spec, *train, out);
                    });
}

std::unique_ptr<ServerProcess> ServerProcess::Start(const std::string& bundle_path,
                                                    const std::vector<std::string>& extra_args,
                                                    const client::ClientOptions& client_options) {
  std::vector<std::string> args = {absl::StrCat("--max_batch=", kMaxBatch),
                                   absl::StrCat("--max_message_bytes=", kMaxMessageBytes)};
  args.insert(args.end(), extra_args.begin(), extra_args.end());
  absl::StatusOr<std::unique_ptr<ServerProcess>> server =
      Launch(bundle_path, args, "", client_options);
  if (!server.ok()) {
    ADD_FAILURE() << server.status();
    return nullptr;
  }
  return *std::move(server);
}

absl::StatusOr<std::unique_ptr<ServerProcess>> ServerProcess::Launch(
    const std::string& bundle_path, const std::vector<std::string>& args,
    const std::string& stderr_path, const client::ClientOptions& client_options) {
  static std::atomic<int> count{0};
  const std::string port_file =
      (std::filesystem::path(bundle_path).parent_path() / absl::StrCat("port.", count++)).string();
  // A port file left by an earlier run in the same directory would name a dead port.
  std::filesystem::remove(port_file);
  std::unique_ptr<ServerProcess> server(new ServerProcess);
  std::vector<std::string> all_args = {absl::StrCat("--bundle=", bundle_path),
                                       "--address=127.0.0.1:0",
                                       absl::StrCat("--port_file=", port_file)};
  all_args.insert(all_args.end(), args.begin(), args.end());
  SpawnOptions spawn;
  spawn.stderr_path = stderr_path;
  server->pid_ = Spawn(all_args, spawn);
  const absl::Time limit = absl::Now() + kStartupLimit;
  while (server->port_ == 0) {
    std::ifstream in(port_file);
    if (!(in >> server->port_)) server->port_ = 0;
    if (server->port_ != 0) break;
    int status = 0;
    if (waitpid(server->pid_, &status, WNOHANG) == server->pid_) {
      server->pid_ = -1;
      return absl::InternalError(
          absl::StrCat("strata-server exited during start-up, status ", status));
    }
    if (absl::Now() > limit) return absl::InternalError("strata-server wrote no port file");
    absl::SleepFor(absl::Milliseconds(20));
  }
  server->client_ = std::make_unique<client::Client>(server->address(), client_options);
  // The server listens before it loads its model: a server that dies while loading (a sanitizer
  // report, a bad bundle) must fail the test at once, not after the whole start-up limit.
  for (;;) {
    absl::Status serving = server->client_->WaitUntilServing(absl::Seconds(1));
    if (serving.ok()) break;
    int status = 0;
    if (waitpid(server->pid_, &status, WNOHANG) == server->pid_) {
      server->pid_ = -1;
      return absl::InternalError(
          absl::StrCat("strata-server exited before it became SERVING, status ", status));
    }
    if (absl::Now() > limit) {
      return absl::InternalError(
          absl::StrCat("strata-server did not become SERVING: ", serving.ToString()));
    }
  }
  return server;
}

pid_t ServerProcess::Spawn(const std::vector<std::string>& args, const SpawnOptions& options) {
  const std::string binary = STRATA_BINARY_DIR "/bin/strata-server";
  std::vector<std::string> argv_strings = {binary};
  argv_strings.insert(argv_strings.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (std::string& s : argv_strings) argv.push_back(s.data());
  argv.push_back(nullptr);
  const pid_t pid = fork();
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (!options.stderr_path.empty()) {
      const int fd = open(options.stderr_path.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
      if (fd < 0) _exit(126);
      dup2(fd, STDERR_FILENO);
    }
    for (const auto& [name, value] : options.environment) setenv(name.c_str(), value.c_str(), 1);
    execv(binary.c_str(), argv.data());
    _exit(127);
  }
  return pid;
}

ServerExit RunServerToExit(const std::vector<std::string>& args, const std::string& stderr_path) {
  std::remove(stderr_path.c_str());
  ServerProcess::SpawnOptions options;
  options.stderr_path = stderr_path;
  const pid_t pid = ServerProcess::Spawn(args, options);
  ServerExit exit;
  int status = 0;
  if (waitpid(pid, &status, 0) == pid && WIFEXITED(status)) exit.code = WEXITSTATUS(status);
  std::ifstream in(stderr_path);
  std::stringstream text;
  text << in.rdbuf();
  exit.stderr_text = text.str();
  return exit;
}

ServerProcess::~ServerProcess() {
  if (pid_ > 0) {
    kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
  }
}

int ServerProcess::Terminate() {
  kill(pid_, SIGTERM);
  int status = 0;
  waitpid(pid_, &status, 0);
  pid_ = -1;
  return status;
}

std::string ServerProcess::address() const { return absl::StrCat("127.0.0.1:", port_); }

}  // namespace strata::test
