// The tokenizer's and encoder's contracts on the real all-MiniLM-L6-v2 files (fetched by
// scripts/fetch-minilm.sh; the ctest fixture runs it): known token ids, invalid UTF-8, truncation;
// a batch equals its texts one by one (packing is exact up to float summation order); int8 on the
// cpu backend close to float; bad model folders give errors naming the file or tensor.
#include "text/text_encoder.h"

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "fpga/backend.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/text/minilm_dir.h"
#include "text/wordpiece_tokenizer.h"

namespace strata::text {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

const WordPieceTokenizer& Tokenizer() {
  static const auto* tokenizer = [] {
    auto t = WordPieceTokenizer::FromTokenizerJson(test::MiniLmDir() + "/tokenizer.json");
    EXPECT_TRUE(t.ok()) << t.status();
    return new WordPieceTokenizer(*std::move(t));
  }();
  return *tokenizer;
}

TEST(WordPieceTokenizerTest, KnownIds) {
  // tokenizers 0.21.1 with the model's tokenizer.json (its ids, by hand from its vocab).
  auto ids = Tokenizer().Encode("Hello, world!");
  ASSERT_TRUE(ids.ok());
  EXPECT_THAT(*ids, ElementsAre(101, 7592, 1010, 2088, 999, 102));
  auto empty = Tokenizer().Encode("");
  ASSERT_TRUE(empty.ok());
  EXPECT_THAT(*empty, ElementsAre(101, 102));
}

TEST(WordPieceTokenizerTest, NormalisesAccentsCaseCjkAndControls) {
  auto words = Tokenizer().Words(
      "Crème\tBRÛLÉE\x01 你好 a\xE2\x80\x8B"
      "b it's");
  ASSERT_TRUE(words.ok());
  EXPECT_THAT(*words, ElementsAre("creme", "brulee", "你", "好", "ab", "it", "'", "s"));
}

TEST(WordPieceTokenizerTest, LongWordIsUnknownAndTruncationKeepsSep) {
  auto long_word = Tokenizer().Encode(std::string(101, 'a'));
  ASSERT_TRUE(long_word.ok());
  EXPECT_THAT(*long_word, ElementsAre(101, Tokenizer().unk_id(), 102));
  auto tokenizer = WordPieceTokenizer::FromTokenizerJson(test::MiniLmDir() + "/tokenizer.json",
                                                         {.max_length = 5});
  ASSERT_TRUE(tokenizer.ok());
  auto ids = tokenizer->Encode("one two three four five six");
  ASSERT_TRUE(ids.ok());
  ASSERT_EQ(ids->size(), 5u);
  EXPECT_EQ(ids->front(), 101);
  EXPECT_EQ(ids->back(), 102);
}

TEST(WordPieceTokenizerTest, InvalidUtf8IsInvalidArgument) {
  for (const std::string& bad : {std::string("ab\xFF"), std::string("\xC3"),
                                 std::string("\xED\xA0\x80"), std::string("\xC0\xAF")}) {
    auto ids = Tokenizer().Encode(bad);
    EXPECT_EQ(ids.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(ids.status().message(), HasSubstr("not valid UTF-8 (byte offset"));
  }
}

TEST(WordPieceTokenizerTest, RejectsOtherTokenizers) {
  const std::string path = ::testing::TempDir() + "/tokenizer.json";
  std::ofstream(path)
      << R"({"normalizer":{"type":"NFKC"},"pre_tokenizer":{"type":"BertPreTokenizer"},
                            "model":{"type":"WordPiece","vocab":{"[UNK]":0}}})";
  auto t = WordPieceTokenizer::FromTokenizerJson(path);
  EXPECT_EQ(t.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(t.status().message(), HasSubstr("normalizer.type is \"NFKC\""));
  std::ofstream(path) << "{\"normalizer\": ";
  EXPECT_THAT(WordPieceTokenizer::FromTokenizerJson(path).status().message(),
              HasSubstr("not a JSON object"));
}

const std::vector<std::string>& Texts() {
  static const auto* texts = new std::vector<std::string>{
      "GNU Bourne Again SHell", "a", "",
      "Crème brûlée — naïve café; 你好 🙂 and a rather longer sentence that pads the "
      "others "
      "in a batch to its own length, which is much longer than theirs.",
      "command-line JSON processor"};
  return *texts;
}

TEST(TextEncoderTest, BatchEqualsOneByOneAndRowsAreUnit) {
  auto encoder = TextEncoder::Load(test::MiniLmDir());
  ASSERT_TRUE(encoder.ok()) << encoder.status();
  auto batch = (*encoder)->Embed(Texts());
  ASSERT_TRUE(batch.ok()) << batch.status();
  ASSERT_EQ(batch->rows(), static_cast<Eigen::Index>(Texts().size()));
  ASSERT_EQ(batch->cols(), 384);
  for (size_t i = 0; i < Texts().size(); ++i) {
    auto single = (*encoder)->Embed(std::span(Texts()).subspan(i, 1));
    ASSERT_TRUE(single.ok());
    EXPECT_NEAR(batch->row(i).norm(), 1.0f, 1e-5f);
    EXPECT_LT((batch->row(i) - single->row(0)).cwiseAbs().maxCoeff(), 1e-5f) << i;
  }
  // Different texts, different embeddings.
  EXPECT_LT(batch->row(0).dot(batch->row(4)), 0.9f);
}

TEST(TextEncoderTest, Int8OnCpuIsCloseToFloatAndCounted) {
  auto backend = fpga::CreateBackend("cpu");
  ASSERT_TRUE(backend.ok());
  auto float_encoder = TextEncoder::Load(test::MiniLmDir());
  TextEncoderOptions options;
  options.backend = backend->get();
  auto int8_encoder = TextEncoder::Load(test::MiniLmDir(), options);
  ASSERT_TRUE(float_encoder.ok() && int8_encoder.ok()) << int8_encoder.status();
  EXPECT_EQ((*int8_encoder)->device(), "cpu");
  fpga::OpCounts counts;
  auto a = (*float_encoder)->Embed(Texts());
  auto b = (*int8_encoder)->Embed(Texts(), &counts);
  ASSERT_TRUE(a.ok() && b.ok());
  for (Eigen::Index i = 0; i < a->rows(); ++i) EXPECT_GT(a->row(i).dot(b->row(i)), 0.98f) << i;
  uint64_t dense = 0;
  for (const std::string& text : Texts()) {
    dense += (*int8_encoder)->DenseMacs(static_cast<int>(Tokenizer().Encode(text)->size()));
  }
  EXPECT_EQ(counts.int8_macs, dense);
  EXPECT_GT(counts.fp32_macs, 0u);  // attention stays float
  // Every int8-path operation is per row or per sequence (integer sums exact), so a text's
  // embedding does not depend on its batch, bit for bit: what replaying an update log needs.
  for (size_t i = 0; i < Texts().size(); ++i) {
    auto single = (*int8_encoder)->Embed(std::span(Texts()).subspan(i, 1));
    ASSERT_TRUE(single.ok());
    EXPECT_EQ(b->row(i), single->row(0)) << i;
  }
}

TEST(TextEncoderTest, BadModelFolders) {
  const std::filesystem::path dir = ::testing::TempDir() + "/bad_minilm";
  std::filesystem::create_directories(dir);
  for (const char* name : {"config.json", "tokenizer.json"}) {
    std::filesystem::copy_file(test::MiniLmDir() + "/" + name, dir / name,
                               std::filesystem::copy_options::overwrite_existing);
  }
  std::filesystem::remove(dir / "model.safetensors");
  auto missing = TextEncoder::Load(dir);
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(missing.status().message(), HasSubstr("model.safetensors"));

  // The real file with its data cut short: the header still names every tensor, and the last one
  // in the data (the unused pooler) now runs past the end.
  {
    std::ifstream in(test::MiniLmDir() + "/model.safetensors", std::ios::binary);
    std::string bytes((std::istreambuf_iterator<char>(in)), {});
    bytes.resize(bytes.size() - 1000);
    std::ofstream(dir / "model.safetensors", std::ios::binary) << bytes;
  }
  auto truncated = TextEncoder::Load(dir);
  EXPECT_EQ(truncated.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(truncated.status().message(), HasSubstr("out of range"));
  EXPECT_THAT(truncated.status().message(), HasSubstr("tensor pooler.dense.weight: data_offsets"));

  auto too_long = TextEncoder::Load(test::MiniLmDir(), {.tokenizer = {.max_length = 513}});
  EXPECT_EQ(too_long.status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(TextEncoderTest, InvalidUtf8NamesTheText) {
  auto encoder = TextEncoder::Load(test::MiniLmDir());
  ASSERT_TRUE(encoder.ok());
  const std::vector<std::string> texts = {"fine", "bad \xFF"};
  auto out = (*encoder)->Embed(texts);
  EXPECT_EQ(out.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(out.status().message(), HasSubstr("text 1: text is not valid UTF-8"));
}

}  // namespace
}  // namespace strata::text
