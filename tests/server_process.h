// What the tests that talk to a real strata-server share: the server process itself, and a small
// real model bundle to serve.
#ifndef STRATA_TESTS_SERVER_PROCESS_H_
#define STRATA_TESTS_SERVER_PROCESS_H_

#include <sys/types.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "client/client.h"
#include "data/dataset.h"
#include "model/lower_tier.h"

namespace strata::test {

// The --max_batch and --max_message_bytes every ServerProcess is started with.
inline constexpr int kMaxBatch = 64;
inline constexpr int kMaxMessageBytes = 256 * 1024;
// Guards against hangs only; nothing asserts on how long anything takes.
inline constexpr absl::Duration kStartupLimit = absl::Seconds(120);

// Fits `spec`'s lower tier on `train`, then an upper tier (lambda 10) on all of it, and writes
// the model to `path` as a bundle.
absl::Status FitBundle(const model::LowerTierSpec& spec, const data::LabeledImages& train,
                       const std::string& path);

// Fits a small real model on the first `train_images` Fashion-MNIST training images (12 PCA
// filters, 256 random features, lambda 10, seed 7) and writes it to `path` as a bundle; once per
// ctest run for each `train_images` (tests/shared_file.h).
absl::Status WriteFashionBundle(const std::string& path, int train_images);

// A strata-server child process (<build>/bin/strata-server) on 127.0.0.1, on a free port.
class ServerProcess {
 public:
  // Starts strata-server on `bundle_path` (the port file goes beside it) with --max_batch and
  // --max_message_bytes as above and `extra_args` appended, and waits until it reports SERVING
  // through a client made with `client_options` (which client() then is). Returns null (after
  // reporting a test failure) if the server exits or does not serve in time.
  static std::unique_ptr<ServerProcess> Start(const std::string& bundle_path,
                                              const std::vector<std::string>& extra_args = {},
                                              const client::ClientOptions& client_options = {});

  // Start() without the test limits and without GoogleTest (for bench/ commands): starts
  // strata-server on `bundle_path` with `args` appended (its own defaults otherwise) and its
  // stderr appended to `stderr_path` if set, and waits until it is SERVING. INTERNAL (with the
  // reason) if the server exits or does not serve within kStartupLimit.
  static absl::StatusOr<std::unique_ptr<ServerProcess>> Launch(
      const std::string& bundle_path, const std::vector<std::string>& args,
      const std::string& stderr_path = "", const client::ClientOptions& client_options = {});

  // How Spawn starts the child.
  struct SpawnOptions {
    std::string stderr_path;  // if set, the child's stderr is appended there
    // Environment variables set in the child only (name, value).
    std::vector<std::pair<std::string, std::string>> environment;
  };
  // Runs strata-server with `args`; the child is killed if this process dies.
  static pid_t Spawn(const std::vector<std::string>& args, const SpawnOptions& options = {});

  // Kills the server no matter what.
  ~ServerProcess();

  // Sends SIGTERM and returns the wait status.
  int Terminate();

  int port() const { return port_; }
  std::string address() const;
  client::Client& client() { return *client_; }

 private:
  ServerProcess() = default;
  pid_t pid_ = -1;
  int port_ = 0;
  std::unique_ptr<client::Client> client_;
};

// What a strata-server run that exits by itself (e.g. failing at start) ended with.
struct ServerExit {
  int code = -1;  // the exit code; -1 if it did not exit normally
  std::string stderr_text;
};
// Runs strata-server with `args` to completion, its stderr captured in `stderr_path`.
ServerExit RunServerToExit(const std::vector<std::string>& args, const std::string& stderr_path);

}  // namespace strata::test

#endif  // STRATA_TESTS_SERVER_PROCESS_H_
