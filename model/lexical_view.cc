#include "model/lexical_view.h"

#include <algorithm>
#include <cmath>
#include <utility>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "base/crc32c.h"

namespace strata::model {
namespace {

bool IsTokenByte(unsigned char c) {
  return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c >= 0x80;
}

// The tokens of `lowered` (already ASCII lower-cased), as views into it.
std::vector<std::string_view> Tokens(std::string_view lowered) {
  std::vector<std::string_view> tokens;
  size_t start = 0;
  while (start < lowered.size()) {
    while (start < lowered.size() && !IsTokenByte(lowered[start])) ++start;
    size_t end = start;
    while (end < lowered.size() && IsTokenByte(lowered[end])) ++end;
    if (end > start) tokens.push_back(lowered.substr(start, end - start));
    start = end;
  }
  return tokens;
}

}  // namespace

std::vector<uint32_t> LexicalBuckets(std::string_view text, const LexicalSpec& spec) {
  std::string lowered(text);
  absl::AsciiStrToLower(&lowered);
  const std::vector<std::string_view> tokens = Tokens(lowered);
  const uint32_t mask = spec.hash_bits >= 32 ? ~0u : (1u << spec.hash_bits) - 1;
  const auto seed = static_cast<uint32_t>(spec.seed);
  std::vector<uint32_t> buckets;
  buckets.reserve(tokens.size() * 2);
  for (size_t i = 0; i < tokens.size(); ++i) {
    buckets.push_back(base::Crc32cExtend(seed, tokens[i].data(), tokens[i].size()) & mask);
    if (spec.ngrams == 2 && i + 1 < tokens.size()) {
      std::string bigram(tokens[i]);
      bigram.append(" ").append(tokens[i + 1]);
      buckets.push_back(base::Crc32cExtend(seed, bigram.data(), bigram.size()) & mask);
    }
  }
  return buckets;
}

LexicalView::LexicalView(LexicalSpec spec, std::vector<uint32_t> buckets, std::vector<float> idf)
    : spec_(spec), buckets_(std::move(buckets)), idf_(std::move(idf)) {
  for (size_t j = 0; j < buckets_.size(); ++j) column_[buckets_[j]] = static_cast<int>(j);
}

absl::StatusOr<LexicalView> LexicalView::Fit(const LexicalSpec& spec,
                                             std::span<const std::string> texts) {
  if (texts.size() < 2) {
    return absl::InvalidArgumentError(
        absl::StrCat("lexical: need at least 2 training texts, got ", texts.size()));
  }
  absl::flat_hash_map<uint32_t, int64_t> df;
  for (const std::string& text : texts) {
    std::vector<uint32_t> buckets = LexicalBuckets(text, spec);
    std::sort(buckets.begin(), buckets.end());
    buckets.erase(std::unique(buckets.begin(), buckets.end()), buckets.end());
    for (uint32_t b : buckets) ++df[b];
  }
  std::vector<std::pair<int64_t, uint32_t>> ranked;  // (df, bucket)
  for (const auto& [bucket, count] : df) {
    if (count >= spec.min_df) ranked.emplace_back(count, bucket);
  }
  // Highest df first, then the lower bucket: a total order, so the fit is deterministic.
  std::sort(ranked.begin(), ranked.end(), [](const auto& a, const auto& b) {
    return a.first != b.first ? a.first > b.first : a.second < b.second;
  });
  if (ranked.size() > static_cast<size_t>(spec.features)) ranked.resize(spec.features);
  std::vector<uint32_t> kept;
  std::vector<float> idf;
  const double n = static_cast<double>(texts.size());
  for (const auto& [count, bucket] : ranked) {
    kept.push_back(bucket);
    idf.push_back(static_cast<float>(std::log((1 + n) / (1 + static_cast<double>(count))) + 1));
  }
  return LexicalView(spec, std::move(kept), std::move(idf));
}

MatrixF LexicalView::Features(std::span<const std::string> texts) const {
  MatrixF out = MatrixF::Zero(static_cast<Eigen::Index>(texts.size()), spec_.features);
  for (size_t i = 0; i < texts.size(); ++i) {
    absl::flat_hash_map<int, int> counts;  // column -> occurrences
    for (uint32_t bucket : LexicalBuckets(texts[i], spec_)) {
      if (auto it = column_.find(bucket); it != column_.end()) ++counts[it->second];
    }
    double norm2 = 0;
    for (const auto& [column, count] : counts) {
      const float value = (1.0f + std::log(static_cast<float>(count))) * idf_[column];
      out(static_cast<Eigen::Index>(i), column) = value;
      norm2 += static_cast<double>(value) * value;
    }
    if (norm2 > 0) {
      out.row(static_cast<Eigen::Index>(i)) *= static_cast<float>(spec_.weight / std::sqrt(norm2));
    }
  }
  return out;
}

void LexicalView::Save(base::RecordFileWriter& writer) const {
  const std::vector<uint64_t> buckets(buckets_.begin(), buckets_.end());
  writer.Scalar<uint64_t>("lower.lexical.kept", buckets.size());
  writer.Tensor("lower.lexical.bucket", buckets.data(), {buckets.size()});
  writer.Tensor("lower.lexical.idf", idf_.data(), {idf_.size()});
}

absl::StatusOr<LexicalView> LexicalView::Load(const LexicalSpec& spec,
                                              const base::RecordFileReader& reader) {
  absl::StatusOr<uint64_t> kept = reader.Scalar<uint64_t>("lower.lexical.kept");
  if (!kept.ok()) return kept.status();
  const uint64_t k = *kept;
  if (k > static_cast<uint64_t>(spec.features)) {
    return reader.Loss(
        absl::StrCat("lower.lexical.kept: ", k, " buckets, the spec's features=", spec.features));
  }
  Eigen::Matrix<uint64_t, Eigen::Dynamic, 1> buckets;
  VectorF idf;
  if (absl::Status s = reader.Tensor<uint64_t>("lower.lexical.bucket", {k}, buckets); !s.ok()) {
    return s;
  }
  if (absl::Status s = reader.Tensor<float>("lower.lexical.idf", {k}, idf); !s.ok()) return s;
  const uint64_t range = uint64_t{1} << spec.hash_bits;
  absl::flat_hash_set<uint64_t> seen;
  for (uint64_t j = 0; j < k; ++j) {
    if (buckets[j] >= range || !seen.insert(buckets[j]).second) {
      return reader.Loss("lower.lexical.bucket: a bucket out of the hash range or repeated");
    }
    if (!(idf[j] > 0) || !std::isfinite(idf[j])) {
      return reader.Loss("lower.lexical.idf: an idf is not positive and finite");
    }
  }
  return LexicalView(spec, std::vector<uint32_t>(buckets.data(), buckets.data() + k),
                     std::vector<float>(idf.data(), idf.data() + k));
}

MatrixF AppendLexical(const MatrixF& embeddings, const LexicalView* view,
                      std::span<const std::string> texts) {
  if (view == nullptr) return embeddings;
  MatrixF inputs(embeddings.rows(), embeddings.cols() + view->features());
  inputs << embeddings, view->Features(texts);
  return inputs;
}

}  // namespace strata::model
