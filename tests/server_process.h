// What the tests that talk to a real strata-server share: the server process itself, and a small
// real model bundle to serve.
#ifndef STRATA_TESTS_SERVER_PROCESS_H_
#define STRATA_TESTS_SERVER_PROCESS_H_

#include <sys/types.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "client/client.h"

namespace strata::test {

// The --max_batch and --max_message_bytes every ServerProcess is started with.
inline constexpr int kMaxBatch = 64;
inline constexpr int kMaxMessageBytes = 256 * 1024;
// Guards against hangs only; nothing asserts on how long anything takes.
inline constexpr absl::Duration kStartupLimit = absl::Seconds(120);

// Fits a small real model on the first `train_images` Fashion-MNIST training images (12 PCA
// filters, 256 random features, lambda 10, seed 7) and writes it to `path` as a bundle.
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

  // Runs strata-server with `args`; the child is killed if this process dies.
  static pid_t Spawn(const std::vector<std::string>& args);

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

}  // namespace strata::test

#endif  // STRATA_TESTS_SERVER_PROCESS_H_
