// Reading request bytes into messages, with errors that name what could not be read.
//
// Why this exists: the strata.v1 methods are registered raw (grpc::ByteBuffer in, ByteBuffer out),
// and the service parses requests itself. When gRPC parses a callback method's request, a message
// it cannot parse finishes a unary call with UNIMPLEMENTED and an empty message, and ends a client
// stream as if the client had closed it, silently dropping that message and every one after it.
// Here a request that cannot be parsed is INVALID_ARGUMENT naming the field that could not be read,
// and an Update message is read sample by sample, so one unreadable sample does not cost the good
// samples beside it.
//
// "Cannot be parsed" means what protobuf's parser refuses: a malformed wire format (a truncated
// varint, a length running past the end, an invalid tag or wire type), a string field that is not
// valid UTF-8 (proto3), a packed fixed-width field whose length is not a multiple of its width.
// Unknown fields are skipped, as protobuf does.
//
// Every function here is pure and thread-safe.
#ifndef STRATA_SERVER_REQUEST_PARSING_H_
#define STRATA_SERVER_REQUEST_PARSING_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/message.h"
#include "grpcpp/support/byte_buffer.h"
#include "grpcpp/support/status.h"
#include "strata/v1/strata.pb.h"

namespace strata::server {

// Why `bytes` is not a valid encoding of a `descriptor` message: the proto path of the first field
// that cannot be read (prefixed by `path`, e.g. "samples[2].label") and what is wrong with it, for
// example "samples[2].label: not valid UTF-8 (proto3 string fields must be UTF-8)". Empty if
// nothing is wrong that this walk can see.
std::string DescribeParseFailure(const google::protobuf::Descriptor& descriptor,
                                 absl::string_view bytes, absl::string_view path = "");

// The whole contents of `buffer` as one string. A buffer that is not Valid() (no payload arrived)
// reads as empty.
std::string FlattenBuffer(const grpc::ByteBuffer& buffer);

// Parses `buffer` into `message` (cleared first). On failure INVALID_ARGUMENT: "cannot parse the
// <type name>: <DescribeParseFailure>"; `message` is then unspecified.
absl::Status ParseRequest(const grpc::ByteBuffer& buffer, google::protobuf::Message* message);

// Maps an absl::Status to the grpc::Status with the same code and message.
grpc::Status ToGrpcStatus(const absl::Status& status);

// Serialises `message` into `buffer` (replacing its contents). INTERNAL if protobuf refuses (a
// message over 2 GiB).
absl::Status SerializeReply(const google::protobuf::Message& message, grpc::ByteBuffer* buffer);

// One Update message read sample by sample.
struct ParsedUpdateMessage {
  // The samples in message order. A sample that could not be parsed is left default (empty) at its
  // index, and its reason is in unreadable[index].
  v1::UpdateRequest request;
  // Per sample of `request`: empty if it was read, else why it could not be (naming the field).
  // Empty vector when every sample was read.
  std::vector<std::string> unreadable;
  // Non-empty if the message's own framing broke after the samples above: the bytes from there on
  // cannot be split into samples, so the caller counts them as one more unreadable entry, at sample
  // index request.samples_size(), with this reason.
  std::string unreadable_rest;
  // Non-empty if the message's `model` or `stream_id` field is not UTF-8: the message cannot be
  // routed (or its stream recognised) and is refused whole. Both are read on both paths otherwise.
  std::string unreadable_header;
};

// Routes protobuf's own log lines into the server's log (base/log.h), except its complaints about
// the bytes it was asked to parse ("... when parsing a protocol buffer"): those come from client
// input, which the client is told about (INVALID_ARGUMENT, rejections), and logging them would let
// any client fill the log. Call once at start-up, before serving.
void RouteProtobufLogs();

// Reads an UpdateRequest from `buffer`: the whole message at once when it parses (the common case,
// no extra copy), else each `samples` entry on its own (see ParsedUpdateMessage).
ParsedUpdateMessage ReadUpdateMessage(const grpc::ByteBuffer& buffer);

}  // namespace strata::server

#endif  // STRATA_SERVER_REQUEST_PARSING_H_
