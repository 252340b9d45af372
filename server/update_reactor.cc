#include "server/update_reactor.h"

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "base/log.h"
#include "server/request_parsing.h"
#include "server/validation.h"

namespace strata::server {
namespace {

// Exactly one read, metadata send or piece of queued work is outstanding at any time, so the
// members need no lock; Finish() is called exactly once, by FinishWith().
class UpdateReactor final : public grpc::ServerReadReactor<grpc::ByteBuffer> {
 public:
  UpdateReactor(UpdateCallContext env, grpc::CallbackServerContext* context,
                grpc::ByteBuffer* reply)
      : env_(std::move(env)), context_(context), reply_(reply) {
    // Checked before anything is read, so an unauthenticated stream absorbs nothing.
    grpc::Status allowed = env_.auth->Check(*context_, CallKind::kWrite);
    if (!allowed.ok()) {
      FinishWith(allowed);
      return;
    }
    StartRead(&buffer_);
  }

  void OnReadDone(bool ok) override {
    if (ok) {
      env_.update_queue->Schedule([this] { AbsorbMessage(); });
    } else {
      // The client half-closed, or the call is broken: the metadata send tells which.
      StartSendInitialMetadata();
    }
  }

  void OnSendInitialMetadataDone(bool ok) override {
    env_.update_queue->Schedule([this, ok] {
      if (!ok || context_->IsCancelled()) {
        // Samples already absorbed stay in the statistics; the next publish includes them.
        FinishWith(grpc::Status::CANCELLED);
        return;
      }
      // A stream that sent nothing ends on the default model (which refuses it as empty).
      if (absl::Status started = StartStream(""); !started.ok()) {
        FinishWith(ToGrpcStatus(started));
        return;
      }
      stream_->OnStreamEnd([this](absl::StatusOr<update::StreamSummary> summary) {
        if (!summary.ok()) {
          FinishWith(ToGrpcStatus(summary.status()));
          return;
        }
        if (summary->refresh.has_value()) RecordRefresh(*summary->refresh);
        FillSummary(*summary);
        FinishWith(grpc::Status::OK);
      });
    });
  }

  void OnDone() override { delete this; }

 private:
  // Parses buffer_ and hands the message to the pipeline, then reads the next one.
  void AbsorbMessage() {
    if (context_->IsCancelled()) {
      FinishWith(grpc::Status::CANCELLED);
      return;
    }
    const update::MessageResult result = HandMessageOver();
    if (Metrics* metrics = env_.stats->metrics(); metrics != nullptr) {
      metrics->AddUpdateMessage(result.accepted, result.rejected);
    }
    if (result.refresh.has_value()) RecordRefresh(*result.refresh);
    if (!result.status.ok()) {
      // A stream that could not start (an unknown model, none loaded yet) is not a server fault.
      if (stream_ != nullptr) STRATA_LOG(ERROR) << "Update: absorbing failed: " << result.status;
      FinishWith(ToGrpcStatus(result.status));
      return;
    }
    StartRead(&buffer_);
  }

  // Starts the stream on the pipeline of `model` (empty: the default), once: the first message's.
  absl::Status StartStream(absl::string_view model) {
    if (stream_ != nullptr) return absl::OkStatus();
    absl::StatusOr<update::UpdatePipeline*> pipeline = env_.route(model);
    if (!pipeline.ok()) return pipeline.status();
    absl::StatusOr<std::unique_ptr<update::UpdateStream>> stream = (*pipeline)->StartStream();
    if (!stream.ok()) return stream.status();
    stream_ = *std::move(stream);
    pipeline_ = *pipeline;
    return absl::OkStatus();
  }

  // Why a later message naming `model` cannot join this stream (another model, or an unknown
  // one); empty if it can.
  std::string WrongModel(absl::string_view model) const {
    if (model.empty()) return "";
    absl::StatusOr<update::UpdatePipeline*> pipeline = env_.route(model);
    if (!pipeline.ok()) return std::string(pipeline.status().message());
    if (*pipeline != pipeline_) {
      return absl::StrCat("model: \"", model,
                          "\" is not this stream's model (named by its first message)");
    }
    return "";
  }

  static update::MessageResult Failed(absl::Status status) {
    update::MessageResult result;
    result.status = std::move(status);
    return result;
  }

  update::MessageResult HandMessageOver() {
    if (buffer_.Length() > static_cast<size_t>(env_.max_message_bytes) && stream_ == nullptr) {
      // Unread, so its model is unknown: the stream goes to the default model.
      if (absl::Status started = StartStream(""); !started.ok()) return Failed(started);
    }
    if (buffer_.Length() > static_cast<size_t>(env_.max_message_bytes)) {
      const size_t length = buffer_.Length();
      buffer_.Clear();
      return stream_->RejectMessage(absl::StrCat(
          "message of ", length, " bytes is over the server's message-size limit of ",
          env_.max_message_bytes, " bytes (--max_message_bytes); send fewer samples per message"));
    }
    ParsedUpdateMessage message = ReadUpdateMessage(buffer_);
    buffer_.Clear();
    const v1::UpdateRequest& request = message.request;
    if (!message.unreadable_header.empty()) {
      // Which model it is for is unknown: the first message ends the stream, a later one is
      // rejected whole.
      if (stream_ == nullptr) return Failed(absl::InvalidArgumentError(message.unreadable_header));
      return stream_->RejectMessage(message.unreadable_header);
    }
    if (stream_ == nullptr) {
      // The first message names the stream's model: an unknown one ends the stream (NOT_FOUND).
      if (absl::Status started = StartStream(request.model()); !started.ok()) {
        return Failed(started);
      }
    } else if (const std::string wrong = WrongModel(request.model()); !wrong.empty()) {
      return stream_->RejectMessage(wrong);
    }
    if (!request.stream_id().empty()) {
      if (absl::Status set = stream_->SetStreamId(request.stream_id()); !set.ok()) {
        return Failed(set);
      }
    }
    std::vector<update::SampleInput> samples(request.samples_size());
    for (int i = 0; i < request.samples_size(); ++i) {
      if (!message.unreadable.empty() && !message.unreadable[i].empty()) {
        samples[i].unreadable = message.unreadable[i];
        continue;
      }
      const v1::LabeledSample& sample = request.samples(i);
      samples[i].label = sample.label();
      samples[i].input = InputOf(sample.sample());
    }
    return stream_->OnMessage(samples, message.unreadable_rest);
  }

  void RecordRefresh(model::RefreshPath path) {
    if (Metrics* metrics = env_.stats->metrics(); metrics != nullptr) metrics->AddRefresh(path);
  }

  void FillSummary(const update::StreamSummary& summary) {
    summary_.set_accepted(summary.accepted);
    summary_.set_rejected(summary.rejected);
    for (const update::Rejection& rejected : summary.rejections) {
      v1::Rejection* rejection = summary_.add_rejections();
      rejection->set_message_index(rejected.message_index);
      rejection->set_sample_index(rejected.sample_index);
      rejection->set_reason(rejected.reason);
    }
    for (const std::string& label : summary.new_labels) summary_.add_new_labels(label);
    summary_.set_model_version(summary.model_version);
    summary_.set_absorb_seconds(summary.absorb_seconds);
    summary_.set_solve_seconds(summary.solve_seconds);
    summary_.set_refreshes(summary.refreshes);
    summary_.set_readout_current(summary.readout_current);
    summary_.set_prequential_errors(summary.prequential_errors);
    summary_.set_skipped(summary.skipped);
    summary_.set_log_position(summary.log_position);
    summary_.set_retry_recognised(summary.retry_recognised);
    summary_.set_duplicate_entries(summary.duplicate_entries);
    FillPhaseEnergy(summary.energy, summary_.mutable_energy());
  }

  // Finishes the call: with `status`, or for OK with the summary. Counts it first.
  void FinishWith(grpc::Status status) {
    if (status.ok()) {
      absl::Status serialized = SerializeReply(summary_, reply_);
      if (!serialized.ok()) status = ToGrpcStatus(serialized);
    }
    env_.stats->Finished(RpcMethod::kUpdate, status, 0, start_);
    Finish(status);
  }

  const UpdateCallContext env_;
  grpc::CallbackServerContext* const context_;
  grpc::ByteBuffer* const reply_;
  v1::UpdateSummary summary_;
  // When the stream started: its latency runs from here to Finish().
  const absl::Time start_ = absl::Now();
  // The stream's work; null if the call was refused before it started.
  std::unique_ptr<update::UpdateStream> stream_;
  // The message being read.
  grpc::ByteBuffer buffer_;
  // The pipeline of the stream's model (set with stream_).
  update::UpdatePipeline* pipeline_ = nullptr;
};

}  // namespace

grpc::ServerReadReactor<grpc::ByteBuffer>* StartUpdateCall(UpdateCallContext env,
                                                           grpc::CallbackServerContext* context,
                                                           grpc::ByteBuffer* reply) {
  return new UpdateReactor(std::move(env), context, reply);
}

}  // namespace strata::server
