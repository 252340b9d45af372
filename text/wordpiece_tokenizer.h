// The BERT-uncased WordPiece tokenizer of all-MiniLM-L6-v2: UTF-8 text to token ids, equal to
// Hugging Face `tokenizers` (BertNormalizer, BertPreTokenizer, WordPiece, the [CLS] A [SEP]
// template) with the model's tokenizer.json. The rules, in order (docs/text-encoder.md has the
// details and the proof):
//
//   clean        drop U+0000, U+FFFD and "other" characters (categories Cc, Cf, Co, Cs) except
//                \t \n \r; every White_Space character becomes ' '.
//   CJK          put spaces around each CJK ideograph (the blocks BERT's is_chinese_char lists).
//   accents      NFD, then drop nonspacing marks (Mn) (done when lowercasing, as BERT uncased
//   does). lowercase    each code point's full lowercase mapping, without context (so no final
//   sigma:
//                'Σ' is always 'σ', as Rust's char::to_lowercase does).
//   split        on White_Space (dropped) and around punctuation (ASCII punctuation, or any Unicode
//                P* category), each punctuation character a word of its own.
//   word pieces  per word, greedy longest match from the left against the vocabulary, pieces after
//                the first looked up with the "##" prefix; a word with no full cover, or longer
//                than max_input_chars_per_word code points, is the single token [UNK].
//   template     [CLS] pieces [SEP], the pieces truncated to max_length - 2.
//
// Unicode data (categories, White_Space, NFD, case mappings) comes from ICU (Debian's libicu-dev),
// not from hand-written tables.
#ifndef STRATA_TEXT_WORDPIECE_TOKENIZER_H_
#define STRATA_TEXT_WORDPIECE_TOKENIZER_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace strata::text {

struct TokenizerOptions {
  // Tokens per encoded text, [CLS] and [SEP] included; longer texts are truncated (their first
  // max_length - 2 pieces kept). >= 2. 256 is sentence-transformers' max_seq_length for
  // all-MiniLM-L6-v2 (its tokenizer.json's own truncation, 128, is not applied).
  int max_length = 256;
};

// Immutable after loading; Encode is const and thread-safe.
class WordPieceTokenizer {
 public:
  // Reads a Hugging Face tokenizer.json: its BertNormalizer flags, BertPreTokenizer, WordPiece
  // model (vocab, unk_token, continuing_subword_prefix, max_input_chars_per_word) and the ids of
  // [CLS] and [SEP]. NOT_FOUND if the file is missing; INVALID_ARGUMENT naming the field if it is
  // not valid JSON, uses another normalizer / pre-tokenizer / model, or the special tokens are not
  // in the vocabulary; also INVALID_ARGUMENT if options.max_length < 2.
  static absl::StatusOr<WordPieceTokenizer> FromTokenizerJson(const std::string& path,
                                                              const TokenizerOptions& options = {});

  // The token ids of `text` ([CLS] ... [SEP], at most max_length). INVALID_ARGUMENT naming the
  // byte offset if `text` is not valid UTF-8. Empty text gives [CLS] [SEP].
  absl::StatusOr<std::vector<int32_t>> Encode(absl::string_view text) const;

  // The normalised, split words of `text` before word pieces (for tests and debugging).
  absl::StatusOr<std::vector<std::string>> Words(absl::string_view text) const;

  int vocab_size() const { return vocab_size_; }
  int cls_id() const { return cls_id_; }
  int sep_id() const { return sep_id_; }
  int unk_id() const { return unk_id_; }
  int pad_id() const { return pad_id_; }
  int max_length() const { return options_.max_length; }

 private:
  WordPieceTokenizer() = default;
  // Appends the word pieces of one normalised word (UTF-8) to `ids`.
  void AppendWordPieces(absl::string_view word, std::vector<int32_t>& ids) const;

  TokenizerOptions options_;
  // BertNormalizer flags.
  bool clean_text_ = true;
  bool handle_chinese_chars_ = true;
  bool strip_accents_ = true;
  bool lowercase_ = true;
  // Pieces that start a word, and continuation pieces keyed without their "##" prefix.
  absl::flat_hash_map<std::string, int32_t> word_start_;
  absl::flat_hash_map<std::string, int32_t> continuation_;
  int max_input_chars_per_word_ = 100;
  int vocab_size_ = 0;
  int32_t cls_id_ = -1, sep_id_ = -1, unk_id_ = -1, pad_id_ = 0;
};

}  // namespace strata::text

#endif  // STRATA_TEXT_WORDPIECE_TOKENIZER_H_
