#include "text/wordpiece_tokenizer.h"

#include <unicode/normalizer2.h>
#include <unicode/uchar.h>
#include <unicode/unistr.h>
#include <unicode/ustring.h>
#include <unicode/utf16.h>
#include <unicode/utf8.h>

#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "base/file.h"
#include "nlohmann/json.hpp"

namespace strata::text {
namespace {

using CodePoints = std::vector<UChar32>;
using nlohmann::json;

// BERT's "Chinese character" blocks (CJK Unified Ideographs and their extensions, compatibility
// ideographs): the exact ranges of tokenizers' bert.rs, which differ from the original BERT's in
// one place (Extension E from U+2B920, not U+2B820; measured: U+2B820..U+2B91F are not spaced).
// A fixed list, not a Unicode property, so hand-written.
bool IsCjkIdeograph(UChar32 c) {
  return (c >= 0x4E00 && c <= 0x9FFF) || (c >= 0x3400 && c <= 0x4DBF) ||
         (c >= 0x20000 && c <= 0x2A6DF) || (c >= 0x2A700 && c <= 0x2B73F) ||
         (c >= 0x2B740 && c <= 0x2B81F) || (c >= 0x2B920 && c <= 0x2CEAF) ||
         (c >= 0xF900 && c <= 0xFAFF) || (c >= 0x2F800 && c <= 0x2FA1F);
}

bool IsWhitespace(UChar32 c) { return c == '\t' || c == '\n' || c == '\r' || u_isUWhiteSpace(c); }

// tokenizers takes three predicates (control, punctuation, nonspacing mark) from the
// unicode_categories crate, whose tables are Unicode 8.0: a character assigned later has none of
// them there (measured over every code point: e.g. U+2E43..U+2E4F, Adlam, Newa). ICU knows the
// version that assigned each character (u_charAge), so we ask ICU's category only for characters
// of Unicode 8.0 or earlier.
bool InUnicode8(UChar32 c) {
  UVersionInfo age;
  u_charAge(c, age);
  return age[0] < 8 || (age[0] == 8 && age[1] == 0);
}

// The category of `c` as tokenizers' Unicode 8.0 tables have it: ICU's, except for the characters
// assigned by 8.0 whose category Unicode changed later (found by comparing every code point with
// tokenizers; hand-written because no library ships old category tables).
int8_t Unicode8Category(UChar32 c) {
  if (!InUnicode8(c)) return U_UNASSIGNED;
  switch (c) {
    case 0x166D:
      return U_OTHER_PUNCTUATION;  // CANADIAN SYLLABICS CHI SIGN: So since 12.0
    case 0x1734:
      return U_NON_SPACING_MARK;  // HANUNOO SIGN PAMUDPOD: Mc since 14.0
    case 0x1885:                  // MONGOLIAN LETTER ALI GALI (THREE) BALUDA:
    case 0x1886:
      return U_OTHER_LETTER;  //   Mn since 9.0
    case 0xA9BD:
      return U_COMBINING_SPACING_MARK;  // JAVANESE CONSONANT SIGN KERET: Mn since 12.0
    case 0x111C9:
      return U_OTHER_PUNCTUATION;  // SHARADA SANDHI MARK: Mn since 9.0
    default:
      return u_charType(c);
  }
}

// BERT's "control": the Unicode "other" categories except unassigned (Cn), as tokenizers'
// unicode_categories::is_other; \t \n \r are whitespace, not control.
bool IsControl(UChar32 c) {
  if (c == '\t' || c == '\n' || c == '\r') return false;
  switch (Unicode8Category(c)) {
    case U_CONTROL_CHAR:
    case U_FORMAT_CHAR:
    case U_PRIVATE_USE_CHAR:
    case U_SURROGATE:
      return true;
    default:
      return false;
  }
}

// ASCII punctuation (which includes symbols such as $ + < = > ^ ` | ~) or a Unicode P* category.
bool IsPunctuation(UChar32 c) {
  if (c < 0x80) {
    return (c >= 33 && c <= 47) || (c >= 58 && c <= 64) || (c >= 91 && c <= 96) ||
           (c >= 123 && c <= 126);
  }
  switch (Unicode8Category(c)) {
    case U_CONNECTOR_PUNCTUATION:
    case U_DASH_PUNCTUATION:
    case U_START_PUNCTUATION:
    case U_END_PUNCTUATION:
    case U_INITIAL_PUNCTUATION:
    case U_FINAL_PUNCTUATION:
    case U_OTHER_PUNCTUATION:
      return true;
    default:
      return false;
  }
}

absl::StatusOr<CodePoints> DecodeUtf8(absl::string_view text) {
  CodePoints out;
  out.reserve(text.size());
  const auto* s = reinterpret_cast<const uint8_t*>(text.data());
  const int32_t length = static_cast<int32_t>(text.size());
  for (int32_t i = 0; i < length;) {
    const int32_t at = i;
    UChar32 c;
    U8_NEXT(s, i, length, c);
    if (c < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("text is not valid UTF-8 (byte offset ", at, ")"));
    }
    out.push_back(c);
  }
  return out;
}

// clean_text and handle_chinese_chars.
CodePoints CleanAndSpaceCjk(const CodePoints& in, bool clean, bool cjk) {
  CodePoints out;
  out.reserve(in.size());
  for (UChar32 c : in) {
    if (clean) {
      if (c == 0 || c == 0xFFFD || IsControl(c)) continue;
      if (IsWhitespace(c)) c = ' ';
    }
    if (cjk && IsCjkIdeograph(c)) {
      out.insert(out.end(), {' ', c, ' '});
    } else {
      out.push_back(c);
    }
  }
  return out;
}

// NFD, then without nonspacing marks.
CodePoints StripAccents(const CodePoints& in) {
  // U+00C0 is the first code point with a canonical decomposition; below it NFD is the identity
  // and there are no marks.
  bool plain = true;
  for (UChar32 c : in) plain = plain && c < 0xC0;
  if (plain) return in;
  UErrorCode status = U_ZERO_ERROR;
  const icu::Normalizer2* nfd = icu::Normalizer2::getNFDInstance(status);
  const icu::UnicodeString source =
      icu::UnicodeString::fromUTF32(in.data(), static_cast<int32_t>(in.size()));
  const icu::UnicodeString decomposed = U_SUCCESS(status) ? nfd->normalize(source, status) : source;
  CodePoints out;
  out.reserve(in.size());
  for (int32_t i = 0; i < decomposed.length(); i = decomposed.moveIndex32(i, 1)) {
    const UChar32 c = decomposed.char32At(i);
    if (Unicode8Category(c) != U_NON_SPACING_MARK) out.push_back(c);
  }
  return out;
}

// Each code point's full lowercase mapping, independently of its neighbours (the root locale's
// unconditional mappings: 'İ' becomes "i̇", 'Σ' always 'σ').
CodePoints Lowercase(const CodePoints& in) {
  CodePoints out;
  out.reserve(in.size());
  for (UChar32 c : in) {
    if (c < 0x80) {
      out.push_back(c >= 'A' && c <= 'Z' ? c + ('a' - 'A') : c);
      continue;
    }
    UChar source[2];
    int32_t source_length = 0;
    U16_APPEND_UNSAFE(source, source_length, c);
    UChar lower[8];
    UErrorCode status = U_ZERO_ERROR;
    const int32_t n = u_strToLower(lower, 8, source, source_length, "", &status);
    if (U_FAILURE(status)) {
      out.push_back(c);
      continue;
    }
    for (int32_t i = 0; i < n;) {
      UChar32 l;
      U16_NEXT(lower, i, n, l);
      out.push_back(l);
    }
  }
  return out;
}

void AppendUtf8(UChar32 c, std::string& out) {
  uint8_t buffer[U8_MAX_LENGTH];
  int32_t n = 0;
  U8_APPEND_UNSAFE(buffer, n, c);
  out.append(reinterpret_cast<const char*>(buffer), n);
}

// BertPreTokenizer: words split on whitespace (dropped) and punctuation (kept, one per word).
std::vector<std::string> SplitWords(const CodePoints& text) {
  std::vector<std::string> words;
  std::string word;
  auto flush = [&] {
    if (!word.empty()) words.push_back(std::move(word));
    word.clear();
  };
  for (UChar32 c : text) {
    if (IsWhitespace(c)) {
      flush();
    } else if (IsPunctuation(c)) {
      flush();
      AppendUtf8(c, word);
      flush();
    } else {
      AppendUtf8(c, word);
    }
  }
  flush();
  return words;
}

// A boolean field of the normalizer: its value, or `if_null` when it is null.
absl::StatusOr<bool> NormalizerFlag(const json& normalizer, const char* name, bool if_null) {
  const auto it = normalizer.find(name);
  if (it == normalizer.end() || it->is_null()) return if_null;
  if (!it->is_boolean()) {
    return absl::InvalidArgumentError(
        absl::StrCat("tokenizer.json: normalizer.", name, " is not a boolean"));
  }
  return it->get<bool>();
}

// The id of `token` in the vocabulary, or INVALID_ARGUMENT naming it.
absl::StatusOr<int32_t> SpecialId(const json& vocab, const std::string& token) {
  const auto it = vocab.find(token);
  if (it == vocab.end() || !it->is_number_integer()) {
    return absl::InvalidArgumentError(
        absl::StrCat("tokenizer.json: special token ", token, " is not in model.vocab"));
  }
  return it->get<int32_t>();
}

// The "type" string of a tokenizer.json section, "" if absent.
std::string SectionType(const json& root, const char* section) {
  const auto it = root.find(section);
  if (it == root.end() || !it->is_object()) return "";
  const auto type = it->find("type");
  return type != it->end() && type->is_string() ? type->get<std::string>() : "";
}

}  // namespace

absl::StatusOr<WordPieceTokenizer> WordPieceTokenizer::FromTokenizerJson(
    const std::string& path, const TokenizerOptions& options) {
  if (options.max_length < 2) {
    return absl::InvalidArgumentError(absl::StrCat("tokenizer: max_length ", options.max_length,
                                                   " leaves no room for [CLS] and [SEP]"));
  }
  absl::StatusOr<std::string> contents = base::ReadFile(path);
  if (!contents.ok()) return contents.status();
  const json root = json::parse(*contents, nullptr, /*allow_exceptions=*/false);
  if (root.is_discarded() || !root.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": not a JSON object"));
  }
  for (auto [section, expected] :
       {std::pair{"normalizer", "BertNormalizer"}, std::pair{"pre_tokenizer", "BertPreTokenizer"},
        std::pair{"model", "WordPiece"}}) {
    if (SectionType(root, section) != expected) {
      return absl::InvalidArgumentError(
          absl::StrFormat("%s: %s.type is \"%s\", this tokenizer implements %s", path, section,
                          SectionType(root, section), expected));
    }
  }
  WordPieceTokenizer t;
  t.options_ = options;
  const json& normalizer = root["normalizer"];
  absl::StatusOr<bool> clean = NormalizerFlag(normalizer, "clean_text", true);
  absl::StatusOr<bool> cjk = NormalizerFlag(normalizer, "handle_chinese_chars", true);
  absl::StatusOr<bool> lowercase = NormalizerFlag(normalizer, "lowercase", true);
  if (!clean.ok()) return clean.status();
  if (!cjk.ok()) return cjk.status();
  if (!lowercase.ok()) return lowercase.status();
  // strip_accents null means "as lowercase" (BERT uncased strips accents).
  absl::StatusOr<bool> strip = NormalizerFlag(normalizer, "strip_accents", *lowercase);
  if (!strip.ok()) return strip.status();
  t.clean_text_ = *clean;
  t.handle_chinese_chars_ = *cjk;
  t.lowercase_ = *lowercase;
  t.strip_accents_ = *strip;

  const json& model = root["model"];
  const auto vocab = model.find("vocab");
  if (vocab == model.end() || !vocab->is_object() || vocab->empty()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": model.vocab is not a token -> id map"));
  }
  const std::string prefix = model.value("continuing_subword_prefix", std::string("##"));
  t.max_input_chars_per_word_ = model.value("max_input_chars_per_word", 100);
  for (const auto& [token, id] : vocab->items()) {
    if (!id.is_number_integer() || id.get<int64_t>() < 0 || id.get<int64_t>() >= INT32_MAX) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": model.vocab[\"", token, "\"] is not a token id"));
    }
    const int32_t value = id.get<int32_t>();
    t.vocab_size_ = std::max(t.vocab_size_, value + 1);
    if (!prefix.empty() && absl::string_view(token).substr(0, prefix.size()) == prefix) {
      t.continuation_.emplace(token.substr(prefix.size()), value);
    }
    // A token that starts with the prefix can still start a word (e.g. "##" itself).
    t.word_start_.emplace(token, value);
  }
  const std::string unk = model.value("unk_token", std::string("[UNK]"));
  absl::StatusOr<int32_t> unk_id = SpecialId(*vocab, unk);
  absl::StatusOr<int32_t> cls_id = SpecialId(*vocab, "[CLS]");
  absl::StatusOr<int32_t> sep_id = SpecialId(*vocab, "[SEP]");
  absl::StatusOr<int32_t> pad_id = SpecialId(*vocab, "[PAD]");
  for (const auto* id : {&unk_id, &cls_id, &sep_id, &pad_id}) {
    if (!id->ok()) return id->status();
  }
  t.unk_id_ = *unk_id;
  t.cls_id_ = *cls_id;
  t.sep_id_ = *sep_id;
  t.pad_id_ = *pad_id;
  return t;
}

absl::StatusOr<std::vector<std::string>> WordPieceTokenizer::Words(absl::string_view text) const {
  absl::StatusOr<CodePoints> decoded = DecodeUtf8(text);
  if (!decoded.ok()) return decoded.status();
  CodePoints normal = CleanAndSpaceCjk(*decoded, clean_text_, handle_chinese_chars_);
  if (strip_accents_) normal = StripAccents(normal);
  if (lowercase_) normal = Lowercase(normal);
  return SplitWords(normal);
}

void WordPieceTokenizer::AppendWordPieces(absl::string_view word, std::vector<int32_t>& ids) const {
  // Byte offsets of the code point boundaries (the word is valid UTF-8: we encoded it).
  std::vector<int32_t> bounds;
  const auto* s = reinterpret_cast<const uint8_t*>(word.data());
  const int32_t length = static_cast<int32_t>(word.size());
  for (int32_t i = 0; i < length;) {
    bounds.push_back(i);
    U8_FWD_1_UNSAFE(s, i);
  }
  bounds.push_back(length);
  const int chars = static_cast<int>(bounds.size()) - 1;
  if (chars > max_input_chars_per_word_) {
    ids.push_back(unk_id_);
    return;
  }
  const size_t first = ids.size();
  for (int start = 0; start < chars;) {
    const auto& table = start == 0 ? word_start_ : continuation_;
    int end = chars;
    int32_t id = -1;
    for (; end > start; --end) {
      const auto it = table.find(word.substr(bounds[start], bounds[end] - bounds[start]));
      if (it != table.end()) {
        id = it->second;
        break;
      }
    }
    if (id < 0) {  // no piece covers this position: the whole word is unknown
      ids.resize(first);
      ids.push_back(unk_id_);
      return;
    }
    ids.push_back(id);
    start = end;
  }
}

absl::StatusOr<std::vector<int32_t>> WordPieceTokenizer::Encode(absl::string_view text) const {
  absl::StatusOr<std::vector<std::string>> words = Words(text);
  if (!words.ok()) return words.status();
  std::vector<int32_t> ids = {cls_id_};
  const size_t limit = static_cast<size_t>(options_.max_length) - 1;  // before [SEP]
  for (const std::string& word : *words) {
    AppendWordPieces(word, ids);
    if (ids.size() >= limit) break;
  }
  if (ids.size() > limit) ids.resize(limit);
  ids.push_back(sep_id_);
  return ids;
}

}  // namespace strata::text
