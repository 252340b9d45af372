// strata-text: runs the C++ text encoder over a file of texts, for the equality proofs
// (tests/text/) and by hand. Input: one JSON string per line (so texts may hold newlines and any
// code point). Outputs: the token ids, one JSON array per line; the embeddings, texts x 384
// float32 little-endian, row after row (numpy.fromfile(path, "<f4").reshape(-1, 384)).
//
//   strata-text --model_dir=.tools/models/all-minilm-l6-v2 --input=texts.jsonl
//       --ids_out=ids.jsonl --embeddings_out=emb.f32 --device=float  (or cpu, emu)
#include <cstdio>
#include <fstream>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "fpga/backend.h"
#include "fpga/energy.h"
#include "nlohmann/json.hpp"
#include "text/text_encoder.h"

ABSL_FLAG(std::string, model_dir, ".tools/models/all-minilm-l6-v2",
          "sentence-transformers model folder (config.json, tokenizer.json, model.safetensors)");
ABSL_FLAG(std::string, input, "", "texts, one JSON string per line");
ABSL_FLAG(std::string, ids_out, "", "if set, token ids written here, one JSON array per line");
ABSL_FLAG(std::string, embeddings_out, "", "if set, float32 embeddings written here");
ABSL_FLAG(std::string, device, "float", "float (fp32 on the host) or a backend: cpu, emu, xrt");
ABSL_FLAG(int, max_length, 256, "tokens per text, [CLS] and [SEP] included");
ABSL_FLAG(int, batch, 64, "texts per Embed call");

namespace strata::text {
namespace {

// Options read once from the flags.
struct Options {
  std::string model_dir, input, ids_out, embeddings_out, device;
  int max_length = 256;
  int batch = 64;
};

absl::StatusOr<std::vector<std::string>> ReadTexts(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open ", path));
  std::vector<std::string> texts;
  std::string line;
  while (std::getline(in, line)) {
    const nlohmann::json value = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (value.is_discarded() || !value.is_string()) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ":", texts.size() + 1, ": not a JSON string"));
    }
    texts.push_back(value.get<std::string>());
  }
  return texts;
}

absl::Status WriteIds(const TextEncoder& encoder, const std::vector<std::string>& texts,
                      const std::string& path) {
  std::ofstream out(path);
  for (size_t i = 0; i < texts.size(); ++i) {
    absl::StatusOr<std::vector<int32_t>> ids = encoder.tokenizer().Encode(texts[i]);
    if (!ids.ok())
      return absl::InvalidArgumentError(absl::StrCat("text ", i, ": ", ids.status().message()));
    out << "[" << absl::StrJoin(*ids, ",") << "]\n";
  }
  return out ? absl::OkStatus() : absl::InternalError(absl::StrCat("writing ", path));
}

absl::Status WriteEmbeddings(const TextEncoder& encoder, const std::vector<std::string>& texts,
                             const Options& options) {
  std::ofstream out(options.embeddings_out, std::ios::binary);
  fpga::OpCounts total;
  for (size_t begin = 0; begin < texts.size(); begin += options.batch) {
    const size_t n = std::min<size_t>(options.batch, texts.size() - begin);
    fpga::OpCounts counts;
    absl::StatusOr<model::MatrixF> embeddings =
        encoder.Embed(std::span(texts).subspan(begin, n), &counts);
    if (!embeddings.ok()) return embeddings.status();
    total += counts;
    out.write(reinterpret_cast<const char*>(embeddings->data()),
              static_cast<std::streamsize>(embeddings->size() * sizeof(float)));
  }
  std::cerr << "strata-text: " << texts.size() << " embeddings on " << encoder.device() << ", "
            << fpga::ToString(total) << "\n";
  return out ? absl::OkStatus()
             : absl::InternalError(absl::StrCat("writing ", options.embeddings_out));
}

absl::Status Run(const Options& options) {
  std::unique_ptr<fpga::Backend> backend;
  TextEncoderOptions encoder_options;
  encoder_options.tokenizer.max_length = options.max_length;
  if (options.device != "float") {
    absl::StatusOr<std::unique_ptr<fpga::Backend>> created = fpga::CreateBackend(options.device);
    if (!created.ok()) return created.status();
    backend = *std::move(created);
    encoder_options.backend = backend.get();
  }
  absl::StatusOr<std::unique_ptr<TextEncoder>> encoder =
      TextEncoder::Load(options.model_dir, encoder_options);
  if (!encoder.ok()) return encoder.status();
  absl::StatusOr<std::vector<std::string>> texts = ReadTexts(options.input);
  if (!texts.ok()) return texts.status();
  if (!options.ids_out.empty()) {
    if (absl::Status s = WriteIds(**encoder, *texts, options.ids_out); !s.ok()) return s;
  }
  if (!options.embeddings_out.empty()) {
    if (absl::Status s = WriteEmbeddings(**encoder, *texts, options); !s.ok()) return s;
  }
  return absl::OkStatus();
}

}  // namespace
}  // namespace strata::text

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage("Token ids and sentence embeddings of texts (docs/text-encoder.md)");
  absl::ParseCommandLine(argc, argv);
  strata::text::Options options;
  options.model_dir = absl::GetFlag(FLAGS_model_dir);
  options.input = absl::GetFlag(FLAGS_input);
  options.ids_out = absl::GetFlag(FLAGS_ids_out);
  options.embeddings_out = absl::GetFlag(FLAGS_embeddings_out);
  options.device = absl::GetFlag(FLAGS_device);
  options.max_length = absl::GetFlag(FLAGS_max_length);
  options.batch = std::max(1, absl::GetFlag(FLAGS_batch));
  if (absl::Status s = strata::text::Run(options); !s.ok()) {
    std::cerr << "strata-text: " << s << "\n";
    return 1;
  }
  return 0;
}
