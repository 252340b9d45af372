#include "server/request_parsing.h"

#include <cstdint>
#include <optional>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "base/log.h"
#include "google/protobuf/io/coded_stream.h"
#include "google/protobuf/stubs/common.h"
#include "google/protobuf/stubs/logging.h"
#include "google/protobuf/wire_format_lite.h"
#include "grpcpp/impl/codegen/proto_utils.h"
#include "grpcpp/support/proto_buffer_reader.h"
#include "update/sample.h"

namespace strata::server {
namespace {

using google::protobuf::Descriptor;
using google::protobuf::FieldDescriptor;
using google::protobuf::internal::WireFormatLite;
using google::protobuf::io::CodedInputStream;

// protobuf's own default nesting limit.
constexpr int kMaxDepth = 100;

// The byte width of a packed fixed-width element, or 0 for a varint element.
int PackedWidth(FieldDescriptor::Type type) {
  switch (type) {
    case FieldDescriptor::TYPE_FLOAT:
    case FieldDescriptor::TYPE_FIXED32:
    case FieldDescriptor::TYPE_SFIXED32:
      return 4;
    case FieldDescriptor::TYPE_DOUBLE:
    case FieldDescriptor::TYPE_FIXED64:
    case FieldDescriptor::TYPE_SFIXED64:
      return 8;
    default:
      return 0;
  }
}

// Reads the next field tag as protobuf's parser accepts it: a varint of at most 5 bytes whose value
// fits in 32 bits and names a field number >= 1 (CodedInputStream::ReadTag() is laxer: it reads
// longer varints and truncates them). Returns 0 at the end of the input, and for an invalid tag
// (then in->CurrentPosition() < `size`).
uint32_t ReadFieldTag(CodedInputStream* in, int size) {
  const int start = in->CurrentPosition();
  if (start >= size) return 0;
  uint64_t tag = 0;
  if (!in->ReadVarint64(&tag) || in->CurrentPosition() - start > 5 || tag > UINT32_MAX ||
      WireFormatLite::GetTagFieldNumber(static_cast<uint32_t>(tag)) == 0) {
    return 0;
  }
  return static_cast<uint32_t>(tag);
}

std::string Join(absl::string_view path, absl::string_view name) {
  return path.empty() ? std::string(name) : absl::StrCat(path, ".", name);
}

// Checks a length-delimited field's contents against its declaration. `field_path` names it.
std::string CheckLengthDelimited(const FieldDescriptor& field, absl::string_view contents,
                                 const std::string& field_path, int depth);

std::string Describe(const Descriptor& descriptor, absl::string_view bytes, absl::string_view path,
                     int depth) {
  if (depth > kMaxDepth) {
    return absl::StrCat(path.empty() ? "message" : path, ": nested more than ", kMaxDepth,
                        " levels deep");
  }
  CodedInputStream in(reinterpret_cast<const uint8_t*>(bytes.data()),
                      static_cast<int>(bytes.size()));
  // Occurrences so far of each repeated field, for the "[i]" of its path.
  absl::flat_hash_map<int, int> occurrences;
  const std::string where = path.empty() ? std::string("message") : std::string(path);
  while (true) {
    const int offset = in.CurrentPosition();
    const uint32_t tag = ReadFieldTag(&in, static_cast<int>(bytes.size()));
    if (tag == 0) {
      if (offset == static_cast<int>(bytes.size())) return "";
      return absl::StrCat(where, ": invalid field tag at byte ", offset);
    }
    const int number = static_cast<int>(WireFormatLite::GetTagFieldNumber(tag));
    const WireFormatLite::WireType wire_type = WireFormatLite::GetTagWireType(tag);
    const FieldDescriptor* field = descriptor.FindFieldByNumber(number);
    std::string field_path = absl::StrCat(where, ".<field ", number, ">");
    if (field != nullptr) {
      field_path = Join(path, field->name());
      if (field->is_repeated()) absl::StrAppend(&field_path, "[", occurrences[number]++, "]");
    }
    if (wire_type == WireFormatLite::WIRETYPE_END_GROUP) {
      return absl::StrCat(field_path, ": unexpected end-group tag at byte ", offset);
    }
    if (wire_type != WireFormatLite::WIRETYPE_LENGTH_DELIMITED) {
      // Scalars (and, for unknown fields, groups): only the framing can be wrong.
      if (!WireFormatLite::SkipField(&in, tag)) {
        return absl::StrCat(field_path, ": truncated or malformed value at byte ", offset);
      }
      continue;
    }
    uint32_t length = 0;
    if (!in.ReadVarint32(&length)) {
      return absl::StrCat(field_path, ": malformed length at byte ", offset);
    }
    const int start = in.CurrentPosition();
    const int left = static_cast<int>(bytes.size()) - start;
    if (length > static_cast<uint32_t>(left)) {
      return absl::StrCat(field_path, ": length ", length, " runs past the end of the message (",
                          left, " bytes left)");
    }
    in.Skip(static_cast<int>(length));
    if (field == nullptr) continue;
    if (field->is_packable() && field->is_repeated()) {
      // A packed run: the path names the field, not one element.
      field_path = Join(path, field->name());
    }
    std::string problem =
        CheckLengthDelimited(*field, bytes.substr(start, length), field_path, depth);
    if (!problem.empty()) return problem;
  }
}

std::string CheckLengthDelimited(const FieldDescriptor& field, absl::string_view contents,
                                 const std::string& field_path, int depth) {
  switch (field.type()) {
    case FieldDescriptor::TYPE_MESSAGE:
      return Describe(*field.message_type(), contents, field_path, depth + 1);
    case FieldDescriptor::TYPE_STRING:
      // proto3 string fields must hold UTF-8; C++ protobuf refuses to parse them otherwise.
      if (field.file()->syntax() == google::protobuf::FileDescriptor::SYNTAX_PROTO3 &&
          !google::protobuf::internal::IsStructurallyValidUTF8(contents.data(),
                                                               static_cast<int>(contents.size()))) {
        // Where, by ICU's reading (the same definition of UTF-8 as protobuf's).
        const std::optional<size_t> at = update::FirstInvalidUtf8Byte(contents);
        return absl::StrCat(field_path, ": not valid UTF-8",
                            at.has_value() ? absl::StrCat(" at byte ", *at) : std::string(),
                            " (proto3 string fields must be UTF-8; ", contents.size(), " bytes)");
      }
      return "";
    case FieldDescriptor::TYPE_BYTES:
      return "";
    default:
      break;
  }
  if (!field.is_packable()) return "";  // a wire-type mismatch: protobuf keeps it as unknown
  if (const int width = PackedWidth(field.type()); width > 0) {
    if (contents.size() % width != 0) {
      return absl::StrCat(field_path, ": packed ", field.type_name(), " values take ", width,
                          " bytes each, got ", contents.size(), " bytes");
    }
    return "";
  }
  CodedInputStream in(reinterpret_cast<const uint8_t*>(contents.data()),
                      static_cast<int>(contents.size()));
  for (int i = 0; in.CurrentPosition() < static_cast<int>(contents.size()); ++i) {
    uint64_t value = 0;
    if (!in.ReadVarint64(&value)) {
      return absl::StrCat(field_path, "[", i, "]: malformed varint");
    }
  }
  return "";
}

void ProtobufLogLine(google::protobuf::LogLevel level, const char* file, int line,
                     const std::string& message) {
  if (absl::StrContains(message, "when parsing a protocol buffer")) return;
  const base::LogLevel ours = level <= google::protobuf::LOGLEVEL_INFO ? base::LogLevel::kInfo
                              : level == google::protobuf::LOGLEVEL_WARNING
                                  ? base::LogLevel::kWarning
                                  : base::LogLevel::kError;
  base::LogLine(ours, file, line, absl::StrCat("protobuf: ", message));
}

}  // namespace

void RouteProtobufLogs() { google::protobuf::SetLogHandler(&ProtobufLogLine); }

std::string DescribeParseFailure(const Descriptor& descriptor, absl::string_view bytes,
                                 absl::string_view path) {
  return Describe(descriptor, bytes, path, 0);
}

std::string FlattenBuffer(const grpc::ByteBuffer& buffer) {
  std::string flat;
  if (!buffer.Valid()) return flat;
  std::vector<grpc::Slice> slices;
  if (!buffer.Dump(&slices).ok()) return flat;
  flat.reserve(buffer.Length());
  for (const grpc::Slice& slice : slices) {
    flat.append(reinterpret_cast<const char*>(slice.begin()), slice.size());
  }
  return flat;
}

absl::Status ParseRequest(const grpc::ByteBuffer& buffer, google::protobuf::Message* message) {
  message->Clear();
  if (!buffer.Valid()) return absl::OkStatus();  // no bytes: the empty message
  // ProtoBufferReader reads the slices in place; it takes a mutable buffer but does not change it.
  grpc::ByteBuffer view(buffer);
  grpc::ProtoBufferReader reader(&view);
  if (message->ParseFromZeroCopyStream(&reader)) return absl::OkStatus();
  std::string reason = DescribeParseFailure(*message->GetDescriptor(), FlattenBuffer(buffer));
  if (reason.empty()) reason = "not a valid protobuf encoding";
  message->Clear();
  return absl::InvalidArgumentError(absl::StrCat("cannot parse the ",
                                                 message->GetDescriptor()->name(), " (",
                                                 buffer.Length(), " bytes): ", reason));
}

grpc::Status ToGrpcStatus(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()), std::string(status.message()));
}

absl::Status SerializeReply(const google::protobuf::Message& message, grpc::ByteBuffer* buffer) {
  bool own_buffer = false;
  grpc::Status status =
      grpc::SerializationTraits<google::protobuf::Message>::Serialize(message, buffer, &own_buffer);
  if (!status.ok()) {
    return absl::InternalError(absl::StrCat(
        "cannot serialise the ", message.GetDescriptor()->name(), ": ", status.error_message()));
  }
  return absl::OkStatus();
}

namespace {

// Whether ReadUpdateMessage's slow path goes on after a field, or stops (the rest is unreadable).
enum class FieldRead { kNext, kStop };

// The message's `model` or `stream_id` field (a length-delimited field number `field`) at byte
// `offset` of `bytes`: kept although a sample is broken, so that the readable samples reach that
// model and a resend of the stream is still recognised.
FieldRead ReadStringField(int field, CodedInputStream* in, int offset, absl::string_view bytes,
                          ParsedUpdateMessage* message) {
  const bool is_model = field == v1::UpdateRequest::kModelFieldNumber;
  std::string value;
  if (!WireFormatLite::ReadString(in, &value)) {
    message->unreadable_rest =
        absl::StrCat("message bytes ", offset, "..", bytes.size(), ": ",
                     is_model ? "model" : "stream_id", ": its length runs past the end");
    return FieldRead::kStop;
  }
  if (!google::protobuf::internal::IsStructurallyValidUTF8(value.data(),
                                                           static_cast<int>(value.size()))) {
    message->unreadable_header = absl::StrCat(
        is_model ? "model" : "stream_id", ": not valid UTF-8 (proto3 string fields must be UTF-8)");
  }
  if (!is_model) {
    message->request.set_stream_id(std::move(value));
    return FieldRead::kNext;
  }
  message->request.set_model(std::move(value));
  return FieldRead::kNext;
}

// One `samples` entry at byte `offset`: parsed and added, or added empty with the reason it is
// unreadable; kStop if its length runs past the end of the message.
FieldRead ReadSampleEntry(CodedInputStream* in, int offset, absl::string_view bytes,
                          ParsedUpdateMessage* message) {
  const std::string field_path = absl::StrCat("samples[", message->request.samples_size(), "]");
  uint32_t length = 0;
  const int left = static_cast<int>(bytes.size()) - in->CurrentPosition();
  if (!in->ReadVarint32(&length) ||
      length > static_cast<uint32_t>(static_cast<int>(bytes.size()) - in->CurrentPosition())) {
    message->unreadable_rest =
        absl::StrCat(field_path, ": its length runs past the end of the message (", left,
                     " bytes left at byte ", offset, ")");
    return FieldRead::kStop;
  }
  const absl::string_view contents(bytes.data() + in->CurrentPosition(), length);
  in->Skip(static_cast<int>(length));
  v1::LabeledSample* sample = message->request.add_samples();
  if (sample->ParseFromArray(contents.data(), static_cast<int>(contents.size()))) {
    message->unreadable.emplace_back();
    return FieldRead::kNext;
  }
  sample->Clear();
  std::string reason = DescribeParseFailure(*v1::LabeledSample::descriptor(), contents, field_path);
  message->unreadable.push_back(
      reason.empty() ? absl::StrCat(field_path, ": not a valid LabeledSample encoding")
                     : std::move(reason));
  return FieldRead::kNext;
}

}  // namespace

ParsedUpdateMessage ReadUpdateMessage(const grpc::ByteBuffer& buffer) {
  ParsedUpdateMessage message;
  if (ParseRequest(buffer, &message.request).ok()) return message;
  // Slow path: split the message into its fields and parse each `samples` entry on its own.
  message.request.Clear();
  const std::string bytes = FlattenBuffer(buffer);
  auto length_delimited = [](int field) {
    return WireFormatLite::MakeTag(field, WireFormatLite::WIRETYPE_LENGTH_DELIMITED);
  };
  CodedInputStream in(reinterpret_cast<const uint8_t*>(bytes.data()),
                      static_cast<int>(bytes.size()));
  FieldRead read = FieldRead::kNext;
  while (read == FieldRead::kNext) {
    const int offset = in.CurrentPosition();
    const uint32_t tag = ReadFieldTag(&in, static_cast<int>(bytes.size()));
    if (tag == 0) {
      if (offset != static_cast<int>(bytes.size())) {
        message.unreadable_rest = absl::StrCat("message bytes ", offset, "..", bytes.size(),
                                               ": invalid field tag at byte ", offset);
      }
      break;
    }
    if (tag == length_delimited(v1::UpdateRequest::kSamplesFieldNumber)) {
      read = ReadSampleEntry(&in, offset, bytes, &message);
    } else if (tag == length_delimited(v1::UpdateRequest::kModelFieldNumber) ||
               tag == length_delimited(v1::UpdateRequest::kStreamIdFieldNumber)) {
      read = ReadStringField(WireFormatLite::GetTagFieldNumber(tag), &in, offset, bytes, &message);
    } else if (WireFormatLite::GetTagWireType(tag) == WireFormatLite::WIRETYPE_END_GROUP ||
               !WireFormatLite::SkipField(&in, tag)) {
      // An unknown field is skipped, as protobuf does; broken framing ends the readable part.
      message.unreadable_rest = absl::StrCat("message bytes ", offset, "..", bytes.size(),
                                             ": malformed field (tag ", tag, ") at byte ", offset);
      read = FieldRead::kStop;
    }
  }
  return message;
}

}  // namespace strata::server
