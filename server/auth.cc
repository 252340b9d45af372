#include "server/auth.h"

#include <cstdint>
#include <utility>

namespace strata::server {
namespace {

constexpr absl::string_view kBearerPrefix = "Bearer ";

}  // namespace

bool ConstantTimeEquals(absl::string_view a, absl::string_view b) {
  // Every byte of b is visited, whatever matches; the lengths are folded into the same result.
  volatile uint8_t difference = a.size() == b.size() ? 0 : 1;
  for (size_t i = 0; i < b.size(); ++i) {
    const uint8_t expected = a.empty() ? 0 : static_cast<uint8_t>(a[i % a.size()]);
    difference = difference | (expected ^ static_cast<uint8_t>(b[i]));
  }
  return difference == 0;
}

CallAuthenticator::CallAuthenticator(std::string token, bool all_rpcs)
    : token_(std::move(token)), all_rpcs_(all_rpcs) {}

grpc::Status CallAuthenticator::Check(const grpc::ServerContextBase& context, CallKind kind) const {
  if (token_.empty() || (kind == CallKind::kRead && !all_rpcs_)) return grpc::Status::OK;
  const auto& metadata = context.client_metadata();
  const auto found = metadata.find("authorization");
  if (found == metadata.end()) {
    return grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                        "this call needs the metadata \"authorization: Bearer <token>\"");
  }
  const absl::string_view value(found->second.data(), found->second.size());
  if (value.substr(0, kBearerPrefix.size()) != kBearerPrefix ||
      !ConstantTimeEquals(token_, value.substr(kBearerPrefix.size()))) {
    return grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                        "the authorization metadata does not carry the server's bearer token");
  }
  return grpc::Status::OK;
}

}  // namespace strata::server
