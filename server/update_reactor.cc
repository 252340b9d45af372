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
  UpdateReactor(const UpdateCallContext& env, grpc::CallbackServerContext* context,
                grpc::ByteBuffer* reply)
      : env_(env), context_(context), reply_(reply) {
    // Checked before anything is read, so an unauthenticated stream absorbs nothing.
    grpc::Status allowed = env_.auth->Check(*context_, CallKind::kWrite);
    if (!allowed.ok()) {
      FinishWith(allowed);
      return;
    }
    absl::StatusOr<std::unique_ptr<update::UpdateStream>> stream = env_.pipeline->StartStream();
    if (!stream.ok()) {
      FinishWith(ToGrpcStatus(stream.status()));
      return;
    }
    stream_ = *std::move(stream);
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
      STRATA_LOG(ERROR) << "Update: absorbing failed: " << result.status;
      FinishWith(ToGrpcStatus(result.status));
      return;
    }
    StartRead(&buffer_);
  }

  update::MessageResult HandMessageOver() {
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
    if (!request.stream_id().empty()) {
      if (absl::Status set = stream_->SetStreamId(request.stream_id()); !set.ok()) {
        update::MessageResult failed;
        failed.status = set;
        return failed;
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
};

}  // namespace

grpc::ServerReadReactor<grpc::ByteBuffer>* StartUpdateCall(const UpdateCallContext& env,
                                                           grpc::CallbackServerContext* context,
                                                           grpc::ByteBuffer* reply) {
  return new UpdateReactor(env, context, reply);
}

}  // namespace strata::server
