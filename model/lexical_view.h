// The lexical view of a text model (spec line `lexical`, docs/lower-tier-spec.md): hashed word
// unigrams and bigrams of the text, weighted by tf-idf, beside the frozen encoder's embedding.
// The encoder's mean-pooled embedding dilutes the keywords that decide many labels ("Perl module",
// "Rust crate", "-dev"); this view keeps them. It is frozen like the encoder: its parameters (which
// hash buckets it keeps and their idf) come from one counting pass over the training texts, with
// no gradient, and are stored in the bundle ("lower.lexical.*" records).
//
//   tokens   the text's bytes, ASCII letters lower-cased; a token is a maximal run of [a-z0-9] or
//            bytes >= 0x80 (so a UTF-8 word stays whole); every other byte separates tokens.
//   grams    each token, and (ngrams=2) each pair of adjacent tokens joined by one space.
//   bucket   CRC-32C (base/crc32c.h: a fixed polynomial, the same on every machine and process,
//            unlike absl::Hash) of the gram's bytes, extended from `seed`, modulo 2^hash_bits.
//   fit      df(b) = training texts containing a gram of bucket b. The `features` buckets with
//            the highest df (ties: the lower bucket) that have df >= min_df are kept, in that
//            order; idf(b) = ln((1 + n) / (1 + df(b))) + 1 (scikit-learn's smoothed idf) over
//            the n training texts. Labels are not read, so later classes (Update) do not make
//            the view stale.
//   apply    x[j] = (1 + ln count(j)) * idf(j) for kept bucket j (sublinear tf), the row scaled
//            to L2 norm `weight` (a text with no kept gram gives zeros).
#ifndef STRATA_MODEL_LEXICAL_VIEW_H_
#define STRATA_MODEL_LEXICAL_VIEW_H_

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "base/record_file.h"
#include "model/architecture.h"
#include "model/tensor.h"

namespace strata::model {

// The hash buckets of `text`'s grams under `spec` (hash_bits, ngrams, seed), one per gram occurrence
// in text order. The one tokenisation every path uses (fit, serve, update, recovery).
std::vector<uint32_t> LexicalBuckets(std::string_view text, const LexicalSpec& spec);

// Immutable after Fit / Load; Features is const and thread-safe.
class LexicalView {
 public:
  // Counts document frequencies over `texts` (the training texts). INVALID_ARGUMENT if there are
  // fewer than 2 texts. Fewer qualifying buckets than spec.features leave the rest of the columns
  // unused (always zero).
  static absl::StatusOr<LexicalView> Fit(const LexicalSpec& spec,
                                         std::span<const std::string> texts);

  // texts.size() x features().
  MatrixF Features(std::span<const std::string> texts) const;

  const LexicalSpec& spec() const { return spec_; }
  int features() const { return spec_.features; }
  // The buckets kept (column order) and their idf; fewer than features() when few qualified.
  const std::vector<uint32_t>& buckets() const { return buckets_; }
  const std::vector<float>& idf() const { return idf_; }

  // Records lower.lexical.kept (u64: how many buckets), lower.lexical.bucket (u64) and
  // lower.lexical.idf (f32), one entry per kept bucket.
  void Save(base::RecordFileWriter& writer) const;
  // DATA_LOSS (naming the record) if they are missing, not of the kept length, more than
  // spec.features, out of the hash range, repeated, or an idf is not positive and finite.
  static absl::StatusOr<LexicalView> Load(const LexicalSpec& spec,
                                          const base::RecordFileReader& reader);

 private:
  LexicalView(LexicalSpec spec, std::vector<uint32_t> buckets, std::vector<float> idf);

  LexicalSpec spec_;
  std::vector<uint32_t> buckets_;
  std::vector<float> idf_;
  absl::flat_hash_map<uint32_t, int> column_;  // bucket -> column
};

// A text tier's stage input: `embeddings` (one row per text) with `view`'s features of `texts`
// appended; the embeddings themselves when `view` is null.
MatrixF AppendLexical(const MatrixF& embeddings, const LexicalView* view,
                      std::span<const std::string> texts);

}  // namespace strata::model

#endif  // STRATA_MODEL_LEXICAL_VIEW_H_
