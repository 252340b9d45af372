// Labelled image data sets read from files: IDX (the MNIST / Fashion-MNIST format, optionally
// gzip-compressed) and CSV.
#ifndef STRATA_DATA_DATASET_H_
#define STRATA_DATA_DATASET_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace strata::data {

// A set of same-sized 8-bit grey-scale images with one string label each.
struct LabeledImages {
  int height = 0;
  int width = 0;
  // size() * height * width bytes, image after image, each row-major.
  std::vector<uint8_t> pixels;
  std::vector<std::string> labels;

  size_t size() const { return labels.size(); }
  size_t image_size() const { return static_cast<size_t>(height) * width; }
  const uint8_t* image(size_t i) const { return pixels.data() + i * image_size(); }
};

// Which part of a file to read: skip `offset` samples, then read at most `limit` (all if 0).
struct Range {
  size_t offset = 0;
  size_t limit = 0;
};

// Reads an IDX image file (magic 0x00000803, u8 data, 3 dimensions) and its IDX label file
// (magic 0x00000801, u8 labels). Either may be gzip-compressed (detected from its content, not its
// name). Labels become their decimal strings ("0".."9"). Fails with NOT_FOUND if a file is missing,
// DATA_LOSS if a file is truncated or malformed, INVALID_ARGUMENT if the counts disagree or the
// range starts past the end.
absl::StatusOr<LabeledImages> ReadIdx(const std::string& images_path,
                                      const std::string& labels_path, Range range = {});

// Reads a CSV file whose rows are `label,p0,p1,...,p(n-1)` with pixel values 0..255 (the layout of
// the Kaggle Fashion-MNIST CSV files). A first line whose second field is not a number is a header
// and is skipped. Every row must have the same number of pixels, which must be a perfect square
// (the images are taken to be square). Errors name the line and column.
absl::StatusOr<LabeledImages> ReadCsv(const std::string& path, Range range = {});

// The directory Debian's dataset-fashion-mnist package installs to.
inline constexpr char kFashionMnistDir[] = "/usr/share/datasets/fashion-mnist";

// Fashion-MNIST's class names, by the class number its label files hold.
inline constexpr const char* kFashionMnistClasses[10] = {
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal",      "Shirt",   "Sneaker",  "Bag",   "Ankle boot"};

// Reads a data set named by a compact source string:
//   "fashion-mnist:train" / "fashion-mnist:test"  the Debian package's IDX files, labelled with
//                                                 the class names of kFashionMnistClasses;
//   "idx:IMAGES,LABELS"                           an IDX image file and its label file;
//   "csv:PATH" or any path ending in ".csv"       a CSV file as ReadCsv describes.
absl::StatusOr<LabeledImages> Load(const std::string& source, Range range = {});

}  // namespace strata::data

#endif  // STRATA_DATA_DATASET_H_
