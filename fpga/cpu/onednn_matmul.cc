#include "fpga/cpu/onednn_matmul.h"

#include <omp.h>

#include <cstring>
#include <dnnl.hpp>
#include <string>
#include <vector>

namespace strata::fpga::cpu {
namespace {

using dnnl::memory;
using Tag = memory::format_tag;
using Type = memory::data_type;

// The rows the weights' layout is chosen for (every other row count must accept that layout).
constexpr int kLayoutRows = 64;

const dnnl::engine& Engine() {
  static const auto* engine = new dnnl::engine(dnnl::engine::kind::cpu, 0);
  return *engine;
}

// True for the oneDNN implementations whose u8 x s8 products are exact int32 sums: the brgemm
// kernels on VNNI or AMX (vpdpbusd / tdpbusd). Without VNNI, oneDNN sums pairs of products in
// saturating int16 first, and its other kernels are not guaranteed to avoid that.
bool Exact(const dnnl::matmul::primitive_desc& pd) {
  const std::string impl = pd.impl_info_str();
  return impl.rfind("brg:", 0) == 0 &&
         (impl.find("vnni") != std::string::npos || impl.find("amx") != std::string::npos);
}

// Sets `pd` to the primitive for `rows` x in (u8, rows lda bytes apart) times in x out (s8, in a
// layout of oneDNN's choice) into rows x out s32, with a caller-owned scratchpad; false if oneDNN
// has no exact kernel for it.
bool Describe(int rows, int in, int64_t lda, int out, dnnl::matmul::primitive_desc* pd) {
  try {
    const memory::desc a({rows, in}, Type::u8, memory::dims{lda, 1});
    const memory::desc b({in, out}, Type::s8, Tag::any);
    const memory::desc c({rows, out}, Type::s32, Tag::ab);
    dnnl::primitive_attr attr;
    attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
    *pd = dnnl::matmul::primitive_desc(dnnl::matmul::desc(a, b, c), attr, Engine());
    return Exact(*pd);
  } catch (const dnnl::error&) {
    return false;
  }
}

}  // namespace

struct OnednnInt8Matmul::Weights {
  memory::desc desc;
  memory data;
};

struct OnednnInt8Matmul::Primitive {
  dnnl::matmul matmul;
  memory::desc scratchpad;
};

OnednnInt8Matmul::OnednnInt8Matmul(int out, int in, int64_t lda) : out_(out), in_(in), lda_(lda) {}
OnednnInt8Matmul::~OnednnInt8Matmul() = default;

std::unique_ptr<OnednnInt8Matmul> OnednnInt8Matmul::Create(const int8_t* weights, int out, int in,
                                                           int64_t lda) {
  dnnl::matmul::primitive_desc pd;
  if (!Describe(kLayoutRows, in, lda, out, &pd)) return nullptr;
  std::unique_ptr<OnednnInt8Matmul> matmul(new OnednnInt8Matmul(out, in, lda));
  try {
    // Our weights are out x in row-major: the in x out matrix oneDNN multiplies, column-major.
    dnnl::stream stream(Engine());
    const memory::desc user_desc({in, out}, Type::s8, Tag::ba);
    memory user(user_desc, Engine(), const_cast<int8_t*>(weights));
    auto packed =
        std::make_unique<Weights>(Weights{pd.weights_desc(), memory(pd.weights_desc(), Engine())});
    dnnl::reorder(user, packed->data).execute(stream, user, packed->data);
    stream.wait();
    matmul->weights_ = std::move(packed);
    absl::MutexLock lock(&matmul->mu_);
    matmul->primitives_[kLayoutRows] =
        std::make_unique<Primitive>(Primitive{dnnl::matmul(pd), pd.scratchpad_desc()});
  } catch (const dnnl::error&) {
    return nullptr;
  }
  return matmul;
}

const OnednnInt8Matmul::Primitive* OnednnInt8Matmul::ForRows(int rows) const {
  absl::MutexLock lock(&mu_);
  auto it = primitives_.find(rows);
  if (it != primitives_.end()) return it->second.get();
  dnnl::matmul::primitive_desc pd;
  std::unique_ptr<Primitive> primitive;
  // Only a kernel that reads the weights in the layout they were packed in will do.
  if (Describe(rows, in_, lda_, out_, &pd) && pd.weights_desc() == weights_->desc) {
    try {
      primitive = std::make_unique<Primitive>(Primitive{dnnl::matmul(pd), pd.scratchpad_desc()});
    } catch (const dnnl::error&) {
      primitive = nullptr;
    }
  }
  // Cached either way: a row count without a kernel is not asked for again.
  return (primitives_[rows] = std::move(primitive)).get();
}

bool OnednnInt8Matmul::Multiply(const uint8_t* a, int rows, int32_t* c, int threads) const {
  const Primitive* primitive = ForRows(rows);
  if (primitive == nullptr) return false;
  // Scratch per thread, kept between calls (oneDNN's own would be shared by concurrent calls).
  thread_local std::vector<uint8_t> scratch;
  scratch.resize(primitive->scratchpad.get_size());
  const int saved_threads = omp_get_max_threads();
  if (threads > 0) omp_set_num_threads(threads);
  try {
    thread_local dnnl::stream stream(Engine());
    const memory src(memory::desc({rows, in_}, Type::u8, memory::dims{lda_, 1}), Engine(),
                     const_cast<uint8_t*>(a));
    const memory dst(memory::desc({rows, out_}, Type::s32, Tag::ab), Engine(), c);
    const memory pad(primitive->scratchpad, Engine(), scratch.data());
    primitive->matmul.execute(stream, {{DNNL_ARG_SRC, src},
                                       {DNNL_ARG_WEIGHTS, weights_->data},
                                       {DNNL_ARG_DST, dst},
                                       {DNNL_ARG_SCRATCHPAD, pad}});
    stream.wait();
  } catch (const dnnl::error&) {
    if (threads > 0) omp_set_num_threads(saved_threads);
    return false;
  }
  if (threads > 0) omp_set_num_threads(saved_threads);
  return true;
}

}  // namespace strata::fpga::cpu
