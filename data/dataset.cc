#include "data/dataset.h"

#include <zlib.h>

#include <cerrno>
#include <memory>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace strata::data {
namespace {

// Reads a whole file, inflating it if it is gzip-compressed (zlib passes plain files through).
absl::StatusOr<std::string> ReadMaybeGzipped(const std::string& path) {
  std::unique_ptr<gzFile_s, int (*)(gzFile)> file(gzopen(path.c_str(), "rb"), gzclose);
  if (file == nullptr) {
    if (errno == ENOENT) return absl::NotFoundError(absl::StrCat("no such file: ", path));
    return absl::UnavailableError(absl::StrCat("cannot open ", path));
  }
  std::string out;
  char buffer[1 << 16];
  while (true) {
    int n = gzread(file.get(), buffer, sizeof(buffer));
    if (n < 0) {
      int code;
      const char* message = gzerror(file.get(), &code);
      return absl::DataLossError(absl::StrCat(path, ": ", message));
    }
    if (n == 0) break;
    out.append(buffer, static_cast<size_t>(n));
  }
  return out;
}

uint32_t BigEndian32(const std::string& bytes, size_t offset) {
  const auto* p = reinterpret_cast<const unsigned char*>(bytes.data() + offset);
  return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | p[3];
}

// The [begin, end) samples a range selects out of `count`.
absl::StatusOr<std::pair<size_t, size_t>> Select(Range range, size_t count,
                                                 const std::string& what) {
  if (range.offset > count || (range.offset == count && count > 0)) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": offset ", range.offset, " is past the last of ", count, " samples"));
  }
  size_t end = range.limit == 0 ? count : std::min(count, range.offset + range.limit);
  return std::make_pair(range.offset, end);
}

}  // namespace

absl::StatusOr<LabeledImages> ReadIdx(const std::string& images_path,
                                      const std::string& labels_path, Range range) {
  absl::StatusOr<std::string> images = ReadMaybeGzipped(images_path);
  if (!images.ok()) return images.status();
  absl::StatusOr<std::string> labels = ReadMaybeGzipped(labels_path);
  if (!labels.ok()) return labels.status();

  if (images->size() < 16 || BigEndian32(*images, 0) != 0x00000803) {
    return absl::DataLossError(
        absl::StrCat(images_path, ": not an IDX u8 image file (magic 0x00000803 expected)"));
  }
  if (labels->size() < 8 || BigEndian32(*labels, 0) != 0x00000801) {
    return absl::DataLossError(
        absl::StrCat(labels_path, ": not an IDX u8 label file (magic 0x00000801 expected)"));
  }
  const size_t count = BigEndian32(*images, 4);
  const size_t height = BigEndian32(*images, 8);
  const size_t width = BigEndian32(*images, 12);
  if (height == 0 || width == 0 || height > 4096 || width > 4096) {
    return absl::DataLossError(
        absl::StrCat(images_path, ": implausible image size ", height, "x", width));
  }
  if (images->size() != 16 + count * height * width) {
    return absl::DataLossError(absl::StrCat(images_path, ": header promises ", count, " images of ",
                                            height, "x", width, " (", 16 + count * height * width,
                                            " bytes), file has ", images->size(), " bytes"));
  }
  const size_t label_count = BigEndian32(*labels, 4);
  if (labels->size() != 8 + label_count) {
    return absl::DataLossError(absl::StrCat(labels_path, ": header promises ", label_count,
                                            " labels, file has ", labels->size() - 8));
  }
  if (label_count != count) {
    return absl::InvalidArgumentError(absl::StrCat(images_path, " has ", count, " images but ",
                                                   labels_path, " has ", label_count, " labels"));
  }
  auto selected = Select(range, count, images_path);
  if (!selected.ok()) return selected.status();
  auto [begin, end] = *selected;

  LabeledImages out;
  out.height = static_cast<int>(height);
  out.width = static_cast<int>(width);
  const size_t image_size = height * width;
  out.pixels.assign(images->begin() + 16 + begin * image_size,
                    images->begin() + 16 + end * image_size);
  out.labels.reserve(end - begin);
  for (size_t i = begin; i < end; ++i) {
    out.labels.push_back(absl::StrCat(static_cast<unsigned char>((*labels)[8 + i])));
  }
  return out;
}

absl::StatusOr<LabeledImages> ReadCsv(const std::string& path, Range range) {
  absl::StatusOr<std::string> text = ReadMaybeGzipped(path);
  if (!text.ok()) return text.status();

  LabeledImages out;
  size_t pixels_per_row = 0;
  size_t row_index = 0;  // data rows seen, for the range
  size_t line_number = 0;
  for (absl::string_view line : absl::StrSplit(*text, '\n')) {
    ++line_number;
    line = absl::StripSuffix(line, "\r");
    if (absl::StripAsciiWhitespace(line).empty()) continue;
    std::vector<absl::string_view> fields = absl::StrSplit(line, ',');
    if (line_number == 1 && fields.size() > 1) {
      int probe;
      if (!absl::SimpleAtoi(fields[1], &probe)) continue;  // a header
    }
    if (fields.size() < 2) {
      return absl::DataLossError(
          absl::StrCat(path, ":", line_number, ": expected label,pixels..., got one field"));
    }
    if (pixels_per_row == 0) {
      pixels_per_row = fields.size() - 1;
      size_t side = 1;
      while (side * side < pixels_per_row) ++side;
      if (side * side != pixels_per_row) {
        return absl::InvalidArgumentError(absl::StrCat(path, ":", line_number, ": ", pixels_per_row,
                                                       " pixels is not a square image"));
      }
      out.height = out.width = static_cast<int>(side);
    } else if (fields.size() - 1 != pixels_per_row) {
      return absl::DataLossError(absl::StrCat(path, ":", line_number, ": expected ", pixels_per_row,
                                              " pixels, got ", fields.size() - 1));
    }
    const size_t this_row = row_index++;
    if (this_row < range.offset) continue;
    if (range.limit != 0 && this_row >= range.offset + range.limit) break;
    absl::string_view label = absl::StripAsciiWhitespace(fields[0]);
    if (label.empty()) {
      return absl::DataLossError(absl::StrCat(path, ":", line_number, ": empty label"));
    }
    out.labels.emplace_back(label);
    for (size_t c = 1; c < fields.size(); ++c) {
      int value;
      if (!absl::SimpleAtoi(fields[c], &value) || value < 0 || value > 255) {
        return absl::DataLossError(absl::StrCat(path, ":", line_number, ": column ", c + 1,
                                                ": expected a pixel value 0..255, got \"",
                                                fields[c], "\""));
      }
      out.pixels.push_back(static_cast<uint8_t>(value));
    }
  }
  if (out.labels.empty()) {
    if (row_index == 0) return absl::InvalidArgumentError(absl::StrCat(path, ": no data rows"));
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": offset ", range.offset, " is past the last of ", row_index, " rows"));
  }
  return out;
}

absl::StatusOr<LabeledImages> Load(const std::string& source, Range range) {
  if (source == "fashion-mnist:train" || source == "fashion-mnist:test") {
    const std::string prefix = source == "fashion-mnist:train" ? "train" : "t10k";
    const std::string dir = kFashionMnistDir;
    absl::StatusOr<LabeledImages> images =
        ReadIdx(absl::StrCat(dir, "/", prefix, "-images-idx3-ubyte.gz"),
                absl::StrCat(dir, "/", prefix, "-labels-idx1-ubyte.gz"), range);
    if (!images.ok()) return images;
    for (std::string& label : images->labels) {
      int index;
      if (!absl::SimpleAtoi(label, &index) || index < 0 || index >= 10) {
        return absl::DataLossError(
            absl::StrCat(source, ": label ", label, " is not a Fashion-MNIST class 0..9"));
      }
      label = kFashionMnistClasses[index];
    }
    return images;
  }
  if (absl::StartsWith(source, "idx:")) {
    std::vector<std::string> paths = absl::StrSplit(source.substr(4), ',');
    if (paths.size() != 2 || paths[0].empty() || paths[1].empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("data source \"", source, "\": expected idx:IMAGES,LABELS"));
    }
    return ReadIdx(paths[0], paths[1], range);
  }
  if (absl::StartsWith(source, "csv:")) return ReadCsv(source.substr(4), range);
  if (absl::EndsWith(source, ".csv") || absl::EndsWith(source, ".csv.gz")) {
    return ReadCsv(source, range);
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "data source \"", source,
      "\": expected fashion-mnist:train, fashion-mnist:test, idx:IMAGES,LABELS or csv:PATH"));
}

}  // namespace strata::data
