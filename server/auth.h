// Bearer-token authentication of Strata calls.
//
// When a token is configured (strata-server --auth_token_file or the STRATA_AUTH_TOKEN environment
// variable), the calls that change server state (Update, Snapshot) must carry the request metadata
// "authorization: Bearer <token>"; with `all_rpcs` (--auth_all) every strata.v1.Strata call must.
// The health and reflection services stay open, so probes and tools work without the token.
//
// The token is compared in constant time: the time taken depends only on the length of the token
// the client presented, never on how much of it matches. A token is only as private as the channel
// it travels over: configure TLS (--tls_cert / --tls_key) whenever a token is used off loopback.
//
// Thread safety: immutable after construction; Check() may be called from any thread.
#ifndef STRATA_SERVER_AUTH_H_
#define STRATA_SERVER_AUTH_H_

#include <string>

#include "absl/strings/string_view.h"
#include "grpcpp/grpcpp.h"

namespace strata::server {

// Whether a call may change server state (Update, Snapshot) or only reads (Predict,
// ExtractFeatures, GetModelInfo, GetStats).
enum class CallKind { kRead, kWrite };

class CallAuthenticator {
 public:
  // `token` empty: authentication is off and every call is allowed (then `all_rpcs` is ignored).
  // Otherwise write calls need the token, and read calls too if `all_rpcs`.
  explicit CallAuthenticator(std::string token = "", bool all_rpcs = false);

  bool enabled() const { return !token_.empty(); }
  bool all_rpcs() const { return all_rpcs_; }

  // OK if a call of `kind` with `context`'s client metadata may proceed; otherwise UNAUTHENTICATED
  // with a message saying what was missing or wrong (never the expected token).
  grpc::Status Check(const grpc::ServerContextBase& context, CallKind kind) const;

 private:
  std::string token_;
  bool all_rpcs_;
};

// a == b, in time that depends only on b's length (b is what the client sent).
bool ConstantTimeEquals(absl::string_view a, absl::string_view b);

}  // namespace strata::server

#endif  // STRATA_SERVER_AUTH_H_
