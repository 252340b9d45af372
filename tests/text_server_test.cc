// A text model served by a real strata-server (issue #14 part 3): a bundle written by strata-train
// from a `text` spec (all-MiniLM-L6-v2 from .tools/models, then a random ReLU expansion) served on
// the int8 cpu backend; Predict, ExtractFeatures and Update with texts and string labels, a new
// label learnt through Update, every kind of bad text input, recovery of text records after
// kill -9, and routing by the requests' `model` field.
#include <sys/wait.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "client/client.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/server_process.h"
#include "tests/text/minilm_dir.h"

namespace strata::test {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

// Three classes of short sentences: what strata-train fits the bundle's head on.
const std::vector<std::pair<std::string, std::string>>& TrainingTexts() {
  static const auto* texts = new std::vector<std::pair<std::string, std::string>>{
      {"sport", "The striker scored twice in the second half of the match."},
      {"sport", "The tennis final went to five sets before the champion won."},
      {"sport", "Our team lost the football game after a late penalty."},
      {"sport", "She ran the marathon in under three hours."},
      {"sport", "The coach picked a new goalkeeper for the cup tie."},
      {"food", "Slice the onions and fry them slowly in butter."},
      {"food", "This bakery sells the best sourdough bread in town."},
      {"food", "Add a pinch of salt and let the soup simmer for an hour."},
      {"food", "We ordered pizza with mushrooms and extra cheese."},
      {"food", "The chef roasted the chicken with lemon and garlic."},
      {"computers", "The compiler reported a syntax error on line twelve."},
      {"computers", "Install the latest kernel update and reboot the machine."},
      {"computers", "The database server ran out of memory under load."},
      {"computers", "He wrote a Python script to parse the log files."},
      {"computers", "The laptop's solid state drive failed after a year."},
  };
  return *texts;
}

// Sentences of a class the bundle does not know, for Update.
const std::vector<std::string>& WeatherTexts() {
  static const auto* texts = new std::vector<std::string>{
      "Heavy rain and strong winds are expected tomorrow.",
      "It will be sunny and warm all weekend.",
      "Snow is falling in the mountains tonight.",
      "A thunderstorm is moving in from the west.",
      "The forecast says fog in the morning and clear skies later.",
      "Temperatures will drop below freezing overnight.",
  };
  return *texts;
}

v1::Sample TextSample(const std::string& text) {
  v1::Sample sample;
  sample.set_text(text);
  return sample;
}

v1::PredictRequest PredictTexts(const std::vector<std::string>& texts) {
  v1::PredictRequest request;
  for (const std::string& text : texts) *request.add_samples() = TextSample(text);
  request.set_return_scores(true);
  return request;
}

v1::UpdateRequest UpdateTexts(const std::string& label, const std::vector<std::string>& texts) {
  v1::UpdateRequest request;
  for (const std::string& text : texts) {
    v1::LabeledSample* sample = request.add_samples();
    sample->set_label(label);
    *sample->mutable_sample() = TextSample(text);
  }
  return request;
}

class TextServerTest : public ::testing::Test {
 protected:
  // strata-train writes the text bundle once for the suite: the spec, the labelled texts, the run.
  static void SetUpTestSuite() {
    dir_ = new std::string(
        (std::filesystem::temp_directory_path() / absl::StrCat("text_server_test_", getpid()))
            .string());
    std::filesystem::create_directories(*dir_);
    {
      std::ofstream spec(*dir_ + "/text.spec");
      spec << "text encoder=" << MiniLmDir() << " max_tokens=64 max_bytes=256\n"
           << "expand units=512 bias_scale=0.3\n";
      std::ofstream train(*dir_ + "/train.tsv");
      for (const auto& [label, text] : TrainingTexts()) train << label << "\t" << text << "\n";
    }
    const std::string command =
        absl::StrCat(STRATA_BINARY_DIR "/bin/strata-train --spec=", *dir_,
                     "/text.spec --train=", *dir_, "/train.tsv --test= --lambda=0.1 --out=", *dir_,
                     "/text.bundle > ", *dir_, "/train.log 2>&1");
    const int status = std::system(command.c_str());
    ASSERT_EQ(status, 0) << command << " failed; see " << *dir_ << "/train.log";
  }
  static void TearDownTestSuite() {
    std::filesystem::remove_all(*dir_);
    delete dir_;
  }

  static std::string BundlePath() { return *dir_ + "/text.bundle"; }
  static std::string StateDir(const std::string& name) { return *dir_ + "/state-" + name; }

  static std::string* dir_;
};

std::string* TextServerTest::dir_ = nullptr;

TEST_F(TextServerTest, ModelInfoSaysItTakesText) {
  auto server = ServerProcess::Start(BundlePath(), {"--device=cpu"});
  ASSERT_NE(server, nullptr);
  absl::StatusOr<v1::ModelInfo> info = server->client().GetModelInfo();
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->input_kind(), "text");
  EXPECT_EQ(info->max_text_bytes(), 256u);
  EXPECT_EQ(info->max_text_tokens(), 64u);
  EXPECT_EQ(info->input_size(), 0u);
  EXPECT_EQ(info->feature_size(), 384u + 512u);  // the embedding and its expansion (concat=1)
  EXPECT_EQ(info->device(), "cpu");
  EXPECT_EQ(info->name(), "strata");
  EXPECT_THAT(info->served_models(), ElementsAre("strata"));
  EXPECT_THAT(info->labels(), ElementsAre("sport", "food", "computers"));
  EXPECT_EQ(info->samples_seen(), TrainingTexts().size());
}

TEST_F(TextServerTest, PredictsAndExtractsTexts) {
  auto server = ServerProcess::Start(BundlePath(), {"--device=cpu"});
  ASSERT_NE(server, nullptr);
  std::vector<std::string> texts;
  for (const auto& [label, text] : TrainingTexts()) texts.push_back(text);
  absl::StatusOr<v1::PredictResponse> predicted = server->client().Predict(PredictTexts(texts));
  ASSERT_TRUE(predicted.ok()) << predicted.status();
  ASSERT_EQ(predicted->predictions_size(), static_cast<int>(texts.size()));
  for (size_t i = 0; i < texts.size(); ++i) {
    EXPECT_EQ(predicted->predictions(i).label(), TrainingTexts()[i].first) << texts[i];
  }
  EXPECT_GT(predicted->energy().lower_tier_joules(), 0);

  // Features: one row per text, the same for a text alone and inside a batch: the embedding (the
  // first 384) bit for bit (the int8 encoder is batch-independent), the fp32 expansion after it up
  // to its GEMM's rounding (Eigen sums a single row in another order than a block of rows).
  v1::ExtractFeaturesRequest batch;
  for (const std::string& text : texts) *batch.add_samples() = TextSample(text);
  absl::StatusOr<v1::ExtractFeaturesResponse> all = server->client().ExtractFeatures(batch);
  ASSERT_TRUE(all.ok()) << all.status();
  ASSERT_EQ(all->features_size(), static_cast<int>(texts.size()));
  v1::ExtractFeaturesRequest one;
  *one.add_samples() = TextSample(texts[3]);
  absl::StatusOr<v1::ExtractFeaturesResponse> alone = server->client().ExtractFeatures(one);
  ASSERT_TRUE(alone.ok()) << alone.status();
  ASSERT_EQ(alone->features(0).values_size(), 896);
  for (int j = 0; j < 384; ++j) {
    ASSERT_EQ(alone->features(0).values(j), all->features(3).values(j)) << j;
  }
  for (int j = 384; j < 896; ++j) {
    ASSERT_NEAR(alone->features(0).values(j), all->features(3).values(j), 1e-5f) << j;
  }
}

TEST_F(TextServerTest, UpdateTeachesANewLabel) {
  auto server = ServerProcess::Start(BundlePath(), {"--device=cpu"});
  ASSERT_NE(server, nullptr);
  const std::vector<std::string>& weather = WeatherTexts();
  const std::vector<std::string> train(weather.begin(), weather.end() - 1);
  absl::StatusOr<v1::PredictResponse> before =
      server->client().Predict(PredictTexts({weather.back()}));
  ASSERT_TRUE(before.ok()) << before.status();
  EXPECT_NE(before->predictions(0).label(), "weather");

  std::vector<v1::UpdateRequest> messages = {UpdateTexts("weather", train)};
  absl::StatusOr<v1::UpdateSummary> summary = server->client().Update(messages);
  ASSERT_TRUE(summary.ok()) << summary.status();
  EXPECT_EQ(summary->accepted(), train.size());
  EXPECT_EQ(summary->rejected(), 0u);
  EXPECT_THAT(summary->new_labels(), ElementsAre("weather"));
  EXPECT_TRUE(summary->readout_current());

  absl::StatusOr<v1::PredictResponse> after =
      server->client().Predict(PredictTexts({weather.back(), TrainingTexts()[0].second}));
  ASSERT_TRUE(after.ok()) << after.status();
  EXPECT_EQ(after->predictions(0).label(), "weather");  // a sentence it was not updated with
  EXPECT_EQ(after->predictions(1).label(), "sport");
  EXPECT_GT(after->model_version(), before->model_version());
}

// Every bad text input is INVALID_ARGUMENT naming the field, and changes nothing.
TEST_F(TextServerTest, BadTextInputIsRefusedAndChangesNothing) {
  auto server = ServerProcess::Start(BundlePath(), {"--device=cpu"});
  ASSERT_NE(server, nullptr);
  client::Client& client = server->client();
  struct Case {
    v1::Sample sample;
    std::string expected;
  };
  std::vector<Case> cases;
  cases.push_back({TextSample(""), "samples[1].text: empty text, expected 1..256 bytes"});
  cases.push_back({TextSample(std::string(257, 'a')), "samples[1].text: 257 bytes"});
  cases.push_back({TextSample("caf\xc3"), "samples[1].text: not valid UTF-8 at byte 3"});
  v1::Sample pixels;
  pixels.set_pixels(std::string(784, '\x10'));
  cases.push_back({pixels, "samples[1].pixels: this model takes text, not pixels"});
  v1::Sample values;
  values.mutable_values()->add_values(0.5f);
  cases.push_back({values, "samples[1].values: this model takes text, not values"});
  cases.push_back({v1::Sample(), "samples[1]: no text set"});
  for (const Case& c : cases) {
    v1::PredictRequest request = PredictTexts({"A fine sentence."});
    *request.add_samples() = c.sample;
    absl::StatusOr<v1::PredictResponse> predicted = client.Predict(request);
    EXPECT_EQ(predicted.status().code(), absl::StatusCode::kInvalidArgument) << c.expected;
    EXPECT_THAT(predicted.status().message(), HasSubstr(c.expected));
    v1::ExtractFeaturesRequest extract;
    *extract.mutable_samples() = request.samples();
    EXPECT_EQ(client.ExtractFeatures(extract).status().code(), absl::StatusCode::kInvalidArgument)
        << c.expected;
  }

  // In an Update, each bad sample is rejected and listed; the good one beside it is absorbed.
  v1::UpdateRequest update = UpdateTexts("food", {"Stir the risotto until creamy."});
  for (const Case& c : cases) {
    v1::LabeledSample* sample = update.add_samples();
    sample->set_label("food");
    *sample->mutable_sample() = c.sample;
  }
  absl::StatusOr<v1::UpdateSummary> summary = client.Update(std::vector<v1::UpdateRequest>{update});
  ASSERT_TRUE(summary.ok()) << summary.status();
  EXPECT_EQ(summary->accepted(), 1u);
  EXPECT_EQ(summary->rejected(), cases.size());
  ASSERT_EQ(summary->rejections_size(), static_cast<int>(cases.size()));
  for (size_t i = 0; i < cases.size(); ++i) {
    EXPECT_EQ(summary->rejections(i).sample_index(), static_cast<int>(i + 1));
    std::string expected = cases[i].expected;
    expected.replace(0, std::string("samples[1]").size(), absl::StrCat("samples[", i + 1, "]"));
    // An Update names the sample's input by its path in the message.
    expected.insert(expected.find(']') + 1, ".sample");
    EXPECT_THAT(summary->rejections(i).reason(), HasSubstr(expected));
  }
  absl::StatusOr<v1::Stats> stats = client.GetStats();
  ASSERT_TRUE(stats.ok()) << stats.status();
  EXPECT_EQ(stats->samples_absorbed(), 1u);
  EXPECT_EQ(stats->samples_rejected(), cases.size());
}

TEST_F(TextServerTest, UnknownModelIsNotFound) {
  auto server = ServerProcess::Start(BundlePath(), {"--device=cpu"});
  ASSERT_NE(server, nullptr);
  v1::PredictRequest request = PredictTexts({"Hello."});
  request.set_model("images");
  absl::StatusOr<v1::PredictResponse> predicted = server->client().Predict(request);
  EXPECT_EQ(predicted.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(predicted.status().message(), HasSubstr("\"images\" is not served"));
  request.set_model("strata");  // its own name works like empty
  EXPECT_TRUE(server->client().Predict(request).ok());

  v1::UpdateRequest update = UpdateTexts("food", {"Bake the bread for forty minutes."});
  update.set_model("images");
  absl::StatusOr<v1::UpdateSummary> summary =
      server->client().Update(std::vector<v1::UpdateRequest>{update});
  EXPECT_EQ(summary.status().code(), absl::StatusCode::kNotFound);
  absl::StatusOr<v1::Stats> stats = server->client().GetStats();
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ(stats->samples_absorbed(), 0u);
}

// Two models on one server: an image model (the default, --bundle) and the text model (--model
// news=...). Clients that name no model reach the image model; each model keeps its own classes,
// statistics and state directory.
TEST_F(TextServerTest, ImageAndTextModelsOnOneServer) {
  const std::string image_bundle = *dir_ + "/image.bundle";
  ASSERT_TRUE(WriteFashionBundle(image_bundle, 300).ok());
  const std::string state = StateDir("two-models");
  // --device=auto: the small image bundle has no int8 scales (float), the text model runs int8.
  auto server = ServerProcess::Start(
      image_bundle, {"--device=auto", "--model=news=" + BundlePath(), "--state_dir=" + state});
  ASSERT_NE(server, nullptr);
  client::Client& client = server->client();

  absl::StatusOr<v1::ModelInfo> image = client.GetModelInfo();
  ASSERT_TRUE(image.ok()) << image.status();
  EXPECT_EQ(image->name(), "strata");
  EXPECT_EQ(image->input_kind(), "image");
  EXPECT_EQ(image->input_size(), 784u);
  EXPECT_THAT(image->served_models(), ElementsAre("strata", "news"));
  absl::StatusOr<v1::ModelInfo> news = client.GetModelInfo("news");
  ASSERT_TRUE(news.ok()) << news.status();
  EXPECT_EQ(news->name(), "news");
  EXPECT_EQ(news->input_kind(), "text");
  EXPECT_THAT(news->labels(), ElementsAre("sport", "food", "computers"));
  EXPECT_EQ(client.GetModelInfo("nope").status().code(), absl::StatusCode::kNotFound);

  // An old client (no model field) sends pixels to the default, image model.
  v1::PredictRequest pixels;
  pixels.add_samples()->set_pixels(std::string(784, '\x40'));
  absl::StatusOr<v1::PredictResponse> predicted = client.Predict(pixels);
  ASSERT_TRUE(predicted.ok()) << predicted.status();
  EXPECT_THAT(image->labels(), ::testing::Contains(predicted->predictions(0).label()));
  // Text to the image model, pixels to the text model: INVALID_ARGUMENT naming the field.
  EXPECT_THAT(client.Predict(PredictTexts({"Rain tomorrow."})).status().message(),
              HasSubstr("samples[0].text: this model takes images"));
  pixels.set_model("news");
  EXPECT_THAT(client.Predict(pixels).status().message(),
              HasSubstr("samples[0].pixels: this model takes text"));
  v1::PredictRequest text = PredictTexts({TrainingTexts()[5].second});
  text.set_model("news");
  predicted = client.Predict(text);
  ASSERT_TRUE(predicted.ok()) << predicted.status();
  EXPECT_EQ(predicted->predictions(0).label(), "food");

  // An Update of the text model changes only it, and is logged in its own state directory.
  v1::UpdateRequest update = UpdateTexts("weather", WeatherTexts());
  update.set_model("news");
  absl::StatusOr<v1::UpdateSummary> summary = client.Update(std::vector<v1::UpdateRequest>{update});
  ASSERT_TRUE(summary.ok()) << summary.status();
  EXPECT_THAT(summary->new_labels(), ElementsAre("weather"));
  absl::StatusOr<v1::Stats> news_stats = client.GetStats("news");
  absl::StatusOr<v1::Stats> image_stats = client.GetStats();
  ASSERT_TRUE(news_stats.ok() && image_stats.ok());
  EXPECT_EQ(news_stats->samples_absorbed(), WeatherTexts().size());
  EXPECT_EQ(image_stats->samples_absorbed(), 0u);
  EXPECT_EQ(client.GetModelInfo().value().labels_size(), image->labels_size());
  EXPECT_TRUE(std::filesystem::exists(state + "/news"));
  // A message that does not parse whole (a label that is not UTF-8) is read sample by sample and
  // still reaches the model it names.
  v1::UpdateRequest partly = UpdateTexts("weather", {"Hail and thunder this evening."});
  partly.set_model("news");
  v1::LabeledSample* unreadable = partly.add_samples();
  unreadable->set_label("bad\xff");
  unreadable->mutable_sample()->set_text("x");
  summary = client.Update(std::vector<v1::UpdateRequest>{partly});
  ASSERT_TRUE(summary.ok()) << summary.status();
  EXPECT_EQ(summary->accepted(), 1u);
  EXPECT_EQ(summary->rejected(), 1u);
  EXPECT_EQ(client.GetStats("news").value().samples_absorbed(), WeatherTexts().size() + 1);
  // A later message naming another model is rejected whole; the stream goes on.
  v1::UpdateRequest other = UpdateTexts("food", {"Knead the dough."});
  other.set_model("strata");
  summary = client.Update(std::vector<v1::UpdateRequest>{update, other});
  ASSERT_TRUE(summary.ok()) << summary.status();
  EXPECT_EQ(summary->rejected(), 1u);
  ASSERT_EQ(summary->rejections_size(), 1);
  EXPECT_EQ(summary->rejections(0).sample_index(), -1);
  EXPECT_THAT(summary->rejections(0).reason(), HasSubstr("not this stream's model"));
}

// Text records replay exactly: after kill -9 the recovered server answers with the same scores.
TEST_F(TextServerTest, RecoveryAfterKillReplaysTextRecordsExactly) {
  const std::string state = StateDir("recovery");
  const std::vector<std::string> probes = {WeatherTexts().back(), TrainingTexts()[7].second,
                                           "The referee stopped the game because of the rain."};
  v1::PredictResponse before;
  {
    auto server = ServerProcess::Start(BundlePath(), {"--device=cpu", "--state_dir=" + state});
    ASSERT_NE(server, nullptr);
    const std::vector<std::string>& weather = WeatherTexts();
    std::vector<v1::UpdateRequest> messages = {
        UpdateTexts("weather", {weather.begin(), weather.begin() + 3}),
        UpdateTexts("weather", {weather.begin() + 3, weather.end() - 1}),
        UpdateTexts("sport", {"The cyclists climbed the last mountain pass."})};
    absl::StatusOr<v1::UpdateSummary> summary = server->client().Update(messages);
    ASSERT_TRUE(summary.ok()) << summary.status();
    ASSERT_EQ(summary->accepted(), 6u);
    absl::StatusOr<v1::PredictResponse> predicted = server->client().Predict(PredictTexts(probes));
    ASSERT_TRUE(predicted.ok()) << predicted.status();
    before = *predicted;
  }  // SIGKILL: no shutdown, no snapshot
  auto server = ServerProcess::Start(BundlePath(), {"--device=cpu", "--state_dir=" + state});
  ASSERT_NE(server, nullptr);
  absl::StatusOr<v1::PredictResponse> after = server->client().Predict(PredictTexts(probes));
  ASSERT_TRUE(after.ok()) << after.status();
  ASSERT_EQ(after->predictions_size(), before.predictions_size());
  EXPECT_EQ(before.predictions(0).label(), "weather");
  for (int i = 0; i < before.predictions_size(); ++i) {
    EXPECT_EQ(after->predictions(i).label(), before.predictions(i).label());
    ASSERT_EQ(after->predictions(i).scores_size(), before.predictions(i).scores_size());
    for (int k = 0; k < before.predictions(i).scores_size(); ++k) {
      EXPECT_EQ(after->predictions(i).scores(k), before.predictions(i).scores(k)) << i << " " << k;
    }
  }
}

// A text model with a lexical view (spec line `lexical`, model/lexical_view.h): strata-train fits
// the view on the training texts and stores it in the bundle; the server computes [embedding,
// lexical] features, learns a new label through Update, and replays its records exactly after
// kill -9 (the same tokenisation and hashing in the fit, the live Update and the recovery).
TEST_F(TextServerTest, LexicalViewServesUpdatesAndRecovers) {
  const std::string bundle = *dir_ + "/lexical.bundle";
  {
    std::ofstream spec(*dir_ + "/lexical.spec");
    spec << "text encoder=" << MiniLmDir() << " max_tokens=64 max_bytes=256\n"
         << "lexical features=64 min_df=1 weight=0.7\n";
  }
  const std::string command = absl::StrCat(
      STRATA_BINARY_DIR "/bin/strata-train --spec=", *dir_, "/lexical.spec --train=", *dir_,
      "/train.tsv --test= --lambda=0.1 --out=", bundle, " > ", *dir_, "/lexical.log 2>&1");
  ASSERT_EQ(std::system(command.c_str()), 0)
      << command << " failed; see " << *dir_ << "/lexical.log";
  const std::string state = StateDir("lexical");
  const std::vector<std::string>& weather = WeatherTexts();
  const std::vector<std::string> probes = {weather.back(), TrainingTexts()[7].second,
                                           "The referee stopped the game because of the rain."};
  v1::PredictResponse before;
  {
    auto server = ServerProcess::Start(bundle, {"--device=cpu", "--state_dir=" + state});
    ASSERT_NE(server, nullptr);
    absl::StatusOr<v1::ModelInfo> info = server->client().GetModelInfo();
    ASSERT_TRUE(info.ok()) << info.status();
    EXPECT_EQ(info->feature_size(), 384u + 64u);
    EXPECT_THAT(info->lower_tier_stages(), testing::Contains(HasSubstr("lexical word 1-2-grams")));

    // The lexical columns: non-zero for a text with kept words, L2 norm 0.7, and the same for a
    // text alone and in a batch (counting and hashing do not depend on the batch).
    v1::ExtractFeaturesRequest one, two;
    *one.add_samples() = TextSample(TrainingTexts()[0].second);
    *two.add_samples() = TextSample(TrainingTexts()[5].second);
    *two.add_samples() = TextSample(TrainingTexts()[0].second);
    absl::StatusOr<v1::ExtractFeaturesResponse> alone = server->client().ExtractFeatures(one);
    absl::StatusOr<v1::ExtractFeaturesResponse> batch = server->client().ExtractFeatures(two);
    ASSERT_TRUE(alone.ok() && batch.ok()) << alone.status() << batch.status();
    ASSERT_EQ(alone->features(0).values_size(), 448);
    double norm2 = 0;
    for (int j = 384; j < 448; ++j) {
      const float v = alone->features(0).values(j);
      norm2 += static_cast<double>(v) * v;
      ASSERT_EQ(v, batch->features(1).values(j)) << j;
    }
    EXPECT_NEAR(norm2, 0.49, 1e-5);

    std::vector<std::string> texts;
    for (const auto& [label, text] : TrainingTexts()) texts.push_back(text);
    absl::StatusOr<v1::PredictResponse> predicted = server->client().Predict(PredictTexts(texts));
    ASSERT_TRUE(predicted.ok()) << predicted.status();
    for (size_t i = 0; i < texts.size(); ++i) {
      EXPECT_EQ(predicted->predictions(i).label(), TrainingTexts()[i].first) << texts[i];
    }
    std::vector<v1::UpdateRequest> messages = {
        UpdateTexts("weather", {weather.begin(), weather.begin() + 3}),
        UpdateTexts("weather", {weather.begin() + 3, weather.end() - 1})};
    absl::StatusOr<v1::UpdateSummary> summary = server->client().Update(messages);
    ASSERT_TRUE(summary.ok()) << summary.status();
    EXPECT_EQ(summary->accepted(), 5u);
    EXPECT_THAT(summary->new_labels(), ElementsAre("weather"));
    absl::StatusOr<v1::PredictResponse> after = server->client().Predict(PredictTexts(probes));
    ASSERT_TRUE(after.ok()) << after.status();
    EXPECT_EQ(after->predictions(0).label(), "weather");  // a sentence it was not updated with
    before = *after;
  }  // SIGKILL: no shutdown, no snapshot
  auto server = ServerProcess::Start(bundle, {"--device=cpu", "--state_dir=" + state});
  ASSERT_NE(server, nullptr);
  absl::StatusOr<v1::PredictResponse> after = server->client().Predict(PredictTexts(probes));
  ASSERT_TRUE(after.ok()) << after.status();
  ASSERT_EQ(after->predictions_size(), before.predictions_size());
  for (int i = 0; i < before.predictions_size(); ++i) {
    EXPECT_EQ(after->predictions(i).label(), before.predictions(i).label());
    ASSERT_EQ(after->predictions(i).scores_size(), before.predictions(i).scores_size());
    for (int k = 0; k < before.predictions(i).scores_size(); ++k) {
      EXPECT_EQ(after->predictions(i).scores(k), before.predictions(i).scores(k)) << i << " " << k;
    }
  }
}

}  // namespace
}  // namespace strata::test
