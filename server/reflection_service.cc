#include "server/reflection_service.h"

#include "absl/container/flat_hash_set.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/descriptor.pb.h"

namespace pyexec {
namespace {

using google::protobuf::Descriptor;
using google::protobuf::DescriptorPool;
using google::protobuf::FileDescriptor;

// Adds `file` and, before it, everything it imports (each once).
template <typename Response>
void AddFileWithDependencies(const FileDescriptor* file,
                             absl::flat_hash_set<const FileDescriptor*>* seen,
                             Response* response) {
  if (!seen->insert(file).second) return;
  google::protobuf::FileDescriptorProto proto;
  file->CopyTo(&proto);
  response->mutable_file_descriptor_response()->add_file_descriptor_proto(
      proto.SerializeAsString());
  for (int i = 0; i < file->dependency_count(); ++i) {
    AddFileWithDependencies(file->dependency(i), seen, response);
  }
}

template <typename Response>
void SetError(int code, const std::string& message, Response* response) {
  response->mutable_error_response()->set_error_code(code);
  response->mutable_error_response()->set_error_message(message);
}

// Makes a reactor type for one protocol version.
template <typename Request, typename Response>
class ReflectionReactor final
    : public grpc::ServerBidiReactor<Request, Response> {
 public:
  explicit ReflectionReactor(const std::vector<std::string>* services)
      : services_(services) {
    this->StartRead(&request_);
  }

  void OnReadDone(bool ok) override {
    if (!ok) {
      this->Finish(grpc::Status::OK);
      return;
    }
    response_.Clear();  // a fresh answer for every request (grpc#18009)
    AnswerReflectionRequest(*services_, request_, &response_);
    this->StartWrite(&response_);
  }

  void OnWriteDone(bool ok) override {
    if (!ok) {
      this->Finish(grpc::Status::CANCELLED);
      return;
    }
    request_.Clear();
    this->StartRead(&request_);
  }

  void OnDone() override { delete this; }

 private:
  const std::vector<std::string>* const services_;
  Request request_;
  Response response_;
};

constexpr int kNotFound = 5;  // grpc::StatusCode::NOT_FOUND
constexpr int kUnimplemented = 12;

}  // namespace

template <typename Request, typename Response>
void AnswerReflectionRequest(const std::vector<std::string>& services,
                             const Request& request, Response* response) {
  const DescriptorPool* pool = DescriptorPool::generated_pool();
  response->set_valid_host(request.host());
  *response->mutable_original_request() = request;
  absl::flat_hash_set<const FileDescriptor*> seen;
  switch (request.message_request_case()) {
    case Request::kListServices:
      for (const std::string& name : services) {
        response->mutable_list_services_response()->add_service()->set_name(name);
      }
      break;
    case Request::kFileByFilename: {
      const FileDescriptor* file = pool->FindFileByName(request.file_by_filename());
      if (file == nullptr) {
        SetError(kNotFound, "file not found: " + request.file_by_filename(),
                 response);
      } else {
        AddFileWithDependencies(file, &seen, response);
      }
      break;
    }
    case Request::kFileContainingSymbol: {
      const FileDescriptor* file =
          pool->FindFileContainingSymbol(request.file_containing_symbol());
      if (file == nullptr) {
        SetError(kNotFound, "symbol not found: " + request.file_containing_symbol(),
                 response);
      } else {
        AddFileWithDependencies(file, &seen, response);
      }
      break;
    }
    case Request::kFileContainingExtension: {
      const Descriptor* type = pool->FindMessageTypeByName(
          request.file_containing_extension().containing_type());
      const google::protobuf::FieldDescriptor* extension =
          type == nullptr ? nullptr
                          : pool->FindExtensionByNumber(
                                type, request.file_containing_extension()
                                          .extension_number());
      if (extension == nullptr) {
        SetError(kNotFound, "extension not found", response);
      } else {
        AddFileWithDependencies(extension->file(), &seen, response);
      }
      break;
    }
    case Request::kAllExtensionNumbersOfType: {
      const Descriptor* type =
          pool->FindMessageTypeByName(request.all_extension_numbers_of_type());
      if (type == nullptr) {
        SetError(kNotFound,
                 "type not found: " + request.all_extension_numbers_of_type(),
                 response);
        break;
      }
      std::vector<const google::protobuf::FieldDescriptor*> extensions;
      pool->FindAllExtensions(type, &extensions);
      auto* numbers = response->mutable_all_extension_numbers_response();
      numbers->set_base_type_name(type->full_name());
      for (const auto* extension : extensions) {
        numbers->add_extension_number(extension->number());
      }
      break;
    }
    default:
      SetError(kUnimplemented, "unknown reflection request", response);
  }
}

grpc::ServerBidiReactor<grpc::reflection::v1alpha::ServerReflectionRequest,
                        grpc::reflection::v1alpha::ServerReflectionResponse>*
ReflectionV1AlphaService::ServerReflectionInfo(grpc::CallbackServerContext*) {
  return new ReflectionReactor<grpc::reflection::v1alpha::ServerReflectionRequest,
                               grpc::reflection::v1alpha::ServerReflectionResponse>(
      &services_);
}

grpc::ServerBidiReactor<grpc::reflection::v1::ServerReflectionRequest,
                        grpc::reflection::v1::ServerReflectionResponse>*
ReflectionV1Service::ServerReflectionInfo(grpc::CallbackServerContext*) {
  return new ReflectionReactor<grpc::reflection::v1::ServerReflectionRequest,
                               grpc::reflection::v1::ServerReflectionResponse>(
      &services_);
}

}  // namespace pyexec
