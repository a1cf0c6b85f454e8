#ifndef PYEXEC_PROTO_PYEXEC_V1_PARSE_TRAITS_H_
#define PYEXEC_PROTO_PYEXEC_V1_PARSE_TRAITS_H_

// gRPC (de)serialization of the pyexec.v1 messages, included by the generated
// pyexec.grpc.pb.h (grpc_cpp_plugin's additional_header_includes) so that it
// is in force wherever the service or its stubs are instantiated.
//
// It differs from gRPC's stock protobuf traits in two ways:
//  - The parse recursion limit is kMaxParseRecursion instead of protobuf's
//    default of 100, so that Values nested to the server's depth limit parse
//    and the depth check can answer with a precise message.
//  - On the server, a request that does not parse (invalid UTF-8 in a string,
//    nesting past even this limit, garbage) is not rejected here: gRPC 1.51
//    would answer UNIMPLEMENTED with an empty message. It is delivered empty,
//    marked as malformed, and the service answers INVALID_ARGUMENT with the
//    reason (see MalformedRequestError).

#include <climits>
#include <string>

#include "absl/status/status.h"
#include "google/protobuf/io/coded_stream.h"
#include "google/protobuf/unknown_field_set.h"
#include "grpcpp/impl/codegen/proto_utils.h"
#include "grpcpp/support/byte_buffer.h"
#include "grpcpp/support/proto_buffer_reader.h"

namespace pyexec {
namespace v1 {

// Protobuf nesting accepted when parsing pyexec messages.
inline constexpr int kMaxParseRecursion = 200;

// Unknown-field number that marks a request which did not parse. The highest
// legal field number, which no pyexec message uses.
inline constexpr int kMalformedMarkerField = 536870911;

// Parses `buffer` into `message` with kMaxParseRecursion.
inline bool ParseDeep(grpc::ByteBuffer* buffer,
                      google::protobuf::Message* message, std::string* why) {
  grpc::ProtoBufferReader reader(buffer);
  if (!reader.status().ok()) {
    *why = reader.status().error_message();
    return false;
  }
  google::protobuf::io::CodedInputStream input(&reader);
  input.SetRecursionLimit(kMaxParseRecursion);
  input.SetTotalBytesLimit(INT_MAX);
  if (!message->ParseFromCodedStream(&input) || !input.ConsumedEntireMessage()) {
    *why = "not a valid " + message->GetTypeName() +
           " (malformed protobuf, a string that is not UTF-8, or nesting "
           "deeper than " + std::to_string(kMaxParseRecursion) + " levels)";
    return false;
  }
  return true;
}

// Returns INVALID_ARGUMENT with the reason if `request` was marked malformed
// by the server-side traits below, OK otherwise.
inline absl::Status MalformedRequestError(
    const google::protobuf::Message& request) {
  const google::protobuf::UnknownFieldSet& unknown =
      request.GetReflection()->GetUnknownFields(request);
  for (int i = 0; i < unknown.field_count(); ++i) {
    const google::protobuf::UnknownField& field = unknown.field(i);
    if (field.number() == kMalformedMarkerField &&
        field.type() == google::protobuf::UnknownField::TYPE_LENGTH_DELIMITED) {
      return absl::InvalidArgumentError("request is " +
                                        field.length_delimited());
    }
  }
  return absl::OkStatus();
}

// Serialization is gRPC's own; only parsing differs.
template <typename T>
class StockSerialize {
 public:
  static grpc::Status Serialize(const grpc::protobuf::MessageLite& msg,
                                grpc::ByteBuffer* bb, bool* own_buffer) {
    return grpc::GenericSerialize<grpc::ProtoBufferWriter, T>(msg, bb,
                                                              own_buffer);
  }
};

// Traits for a request type: parse failures become a marked, empty message.
template <typename T>
class RequestSerializationTraits : public StockSerialize<T> {
 public:
  static grpc::Status Deserialize(grpc::ByteBuffer* buffer, T* message) {
    std::string why;
    if (!ParseDeep(buffer, message, &why)) {
      message->Clear();
      message->GetReflection()
          ->MutableUnknownFields(message)
          ->AddLengthDelimited(kMalformedMarkerField, why);
    }
    buffer->Clear();
    return grpc::Status::OK;
  }
};

// Traits for a response type: a deeper recursion limit, failures reported.
template <typename T>
class ResponseSerializationTraits : public StockSerialize<T> {
 public:
  static grpc::Status Deserialize(grpc::ByteBuffer* buffer, T* message) {
    std::string why;
    bool ok = ParseDeep(buffer, message, &why);
    buffer->Clear();
    if (!ok) return grpc::Status(grpc::StatusCode::INTERNAL, why);
    return grpc::Status::OK;
  }
};

}  // namespace v1
}  // namespace pyexec

#define PYEXEC_REQUEST_TRAITS(T)                               \
  template <>                                                  \
  class grpc::SerializationTraits<pyexec::v1::T, void>         \
      : public pyexec::v1::RequestSerializationTraits<pyexec::v1::T> {};
#define PYEXEC_RESPONSE_TRAITS(T)                              \
  template <>                                                  \
  class grpc::SerializationTraits<pyexec::v1::T, void>         \
      : public pyexec::v1::ResponseSerializationTraits<pyexec::v1::T> {};

PYEXEC_REQUEST_TRAITS(BindRequest)
PYEXEC_REQUEST_TRAITS(UnbindRequest)
PYEXEC_REQUEST_TRAITS(EvalRequest)
PYEXEC_REQUEST_TRAITS(ExecRequest)
PYEXEC_REQUEST_TRAITS(CallRequest)
PYEXEC_REQUEST_TRAITS(GetStatsRequest)
PYEXEC_REQUEST_TRAITS(ReleaseRequest)
PYEXEC_REQUEST_TRAITS(InterruptRequest)
PYEXEC_REQUEST_TRAITS(AttachRequest)
PYEXEC_REQUEST_TRAITS(RunRequest)
PYEXEC_REQUEST_TRAITS(SnapshotRequest)
PYEXEC_RESPONSE_TRAITS(EvalResponse)
PYEXEC_RESPONSE_TRAITS(CallResponse)
PYEXEC_RESPONSE_TRAITS(CallEvent)
PYEXEC_RESPONSE_TRAITS(RunEvent)

#undef PYEXEC_REQUEST_TRAITS
#undef PYEXEC_RESPONSE_TRAITS

#endif  // PYEXEC_PROTO_PYEXEC_V1_PARSE_TRAITS_H_
