// tensor.cpp: Tensor factories, metadata, host data access and printing.
#include "runtime/tensor.h"

#include <cmath>
#include <cstdio>
#include <sstream>

#include "runtime/autograd.h"
#include "runtime/kernels.h"
#include "runtime/ops.h"
#include "runtime/rng.h"

namespace loom::runtime {

Tensor Tensor::make(std::shared_ptr<Storage> s, const Dims& shape, const Dims& strides, int64_t offset,
                    DType dt) {
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = std::move(s);
  impl->shape = shape;
  impl->strides = strides;
  impl->offset = offset;
  impl->dtype = dt;
  return Tensor(std::move(impl));
}

Tensor Tensor::empty(const Dims& shape, DType dt, Device dev) {
  for (int64_t d : shape)
    if (d < 0) throw std::invalid_argument("empty: negative extent in shape " + shape.str());
  size_t bytes = size_t(numel_of(shape)) * dtype_size(dt);
  auto storage = std::make_shared<Storage>(bytes, allocator_for(dev));
  return make(std::move(storage), shape, contiguous_strides(shape), 0, dt);
}

Tensor Tensor::full(const Dims& shape, double value, DType dt, Device dev) {
  Tensor t = empty(shape, dt, dev);
  t.fill_(value);
  return t;
}
Tensor Tensor::zeros(const Dims& shape, DType dt, Device dev) { return full(shape, 0.0, dt, dev); }
Tensor Tensor::ones(const Dims& shape, DType dt, Device dev) { return full(shape, 1.0, dt, dev); }
Tensor Tensor::scalar(double value, DType dt, Device dev) { return full(Dims{}, value, dt, dev); }

Tensor Tensor::arange(int64_t n, DType dt, Device dev) {
  std::vector<double> v(size_t(std::max<int64_t>(n, 0)));
  for (int64_t i = 0; i < n; ++i) v[size_t(i)] = double(i);
  return from_vector(v, Dims{n}).to(dt).to(dev);
}

Tensor Tensor::randn(const Dims& shape, uint64_t seed, DType dt, uint64_t stream) {
  Tensor t = empty(shape, dt);
  OpAttrs a;
  a.seed = mix64(seed) ^ stream;
  a.alpha = 0.0;
  a.beta = 1.0;
  dispatch(Op::random_normal, {}, {t}, a);
  return t;
}

Tensor Tensor::rand(const Dims& shape, uint64_t seed, DType dt, uint64_t stream) {
  Tensor t = empty(shape, dt);
  OpAttrs a;
  a.seed = mix64(seed) ^ stream;
  a.alpha = 0.0;
  a.beta = 1.0;
  dispatch(Op::random_uniform, {}, {t}, a);
  return t;
}

int64_t Tensor::size(int64_t d) const { return impl_->shape[wrap_dim(d, dim(), "size")]; }
int64_t Tensor::stride(int64_t d) const { return impl_->strides[wrap_dim(d, dim(), "stride")]; }

bool Tensor::is_contiguous() const {
  if (numel() == 0) return true;
  int64_t expected = 1;
  for (int i = dim() - 1; i >= 0; --i) {
    if (impl_->shape[i] == 1) continue;
    if (impl_->strides[i] != expected) return false;
    expected *= impl_->shape[i];
  }
  return true;
}

void* Tensor::raw_data() const {
  return static_cast<char*>(impl_->storage->data()) + impl_->offset * int64_t(element_size());
}

void check_host_dtype(const Tensor& t, DType want, const char* what) {
  if (!t.defined()) throw std::invalid_argument(std::string(what) + ": undefined tensor");
  if (t.dtype() != want)
    throw std::invalid_argument(std::string(what) + ": tensor is " + dtype_name(t.dtype()) + ", asked for " +
                                dtype_name(want));
  if (!t.device().is_cpu())
    throw std::invalid_argument(std::string(what) + ": tensor is on " + t.device().str() + "; copy it to cpu first");
}

double Tensor::item() const {
  if (numel() != 1) throw std::invalid_argument("item(): tensor has " + std::to_string(numel()) + " elements");
  return to_double_vector()[0];
}

std::vector<double> Tensor::to_double_vector() const { return to_vector<double>(); }

Tensor& Tensor::set_requires_grad(bool r) {
  if (r && !is_floating(dtype()))
    throw std::invalid_argument(std::string("only floating tensors can require grad, not ") + dtype_name(dtype()));
  if (!is_leaf()) throw std::invalid_argument("set_requires_grad: only leaf tensors (no grad_fn)");
  impl_->requires_grad = r;
  return *this;
}

void Tensor::backward(const Tensor& grad_output) const { run_backward({*this}, {grad_output}); }

void Tensor::register_post_accumulate_hook(GradHook hook) {
  if (!is_leaf()) throw std::invalid_argument("post-accumulate hooks are for leaf tensors (parameters)");
  impl_->post_accumulate_hooks.push_back(std::move(hook));
}

Tensor Tensor::detach() const {
  return make(impl_->storage, impl_->shape, impl_->strides, impl_->offset, impl_->dtype);
}

Tensor Tensor::contiguous() const { return runtime::contiguous(*this); }
Tensor Tensor::clone() const { return runtime::clone(*this); }
Tensor Tensor::to(DType dt) const { return cast(*this, dt); }
Tensor Tensor::to(Device dev) const { return to_device(*this, dev); }
Tensor Tensor::view(const Dims& s) const { return runtime::view(*this, s); }
Tensor Tensor::reshape(const Dims& s) const { return runtime::reshape(*this, s); }
Tensor Tensor::transpose(int64_t a, int64_t b) const { return runtime::transpose(*this, a, b); }
Tensor Tensor::permute(const Dims& o) const { return runtime::permute(*this, o); }
Tensor Tensor::narrow(int64_t d, int64_t s, int64_t l) const { return runtime::narrow(*this, d, s, l); }
Tensor Tensor::unsqueeze(int64_t d) const { return runtime::unsqueeze(*this, d); }
Tensor Tensor::squeeze(int64_t d) const { return runtime::squeeze(*this, d); }
Tensor Tensor::expand(const Dims& s) const { return runtime::expand(*this, s); }

static void check_inplace(const Tensor& t, const char* what) {
  if (grad_enabled() && t.requires_grad())
    throw std::invalid_argument(std::string(what) +
                                ": in-place write to a tensor that requires grad (use NoGradGuard for updates)");
}

Tensor& Tensor::fill_(double value) {
  check_inplace(*this, "fill_");
  OpAttrs a;
  a.alpha = value;
  Tensor self = *this;
  dispatch(Op::fill, {}, {self}, a);
  return *this;
}

Tensor& Tensor::copy_(const Tensor& src) {
  check_inplace(*this, "copy_");
  Tensor s = src;
  if (s.shape() != shape()) s = runtime::expand(s.detach(), shape());
  if (s.device() != device()) s = to_device(s.detach().contiguous(), device());
  Tensor self = *this;
  dispatch(Op::copy, {s}, {self});
  return *this;
}

// ---- printing --------------------------------------------------------------------------
namespace {
void print_rec(std::ostream& os, const std::vector<double>& v, const Dims& shape, int d, int64_t& idx,
               int indent, bool is_int) {
  if (shape.size() == 0) {
    os << v[size_t(idx++)];
    return;
  }
  os << "[";
  int64_t n = shape[d];
  bool last = d == shape.size() - 1;
  int64_t inner = 1;
  for (int i = d + 1; i < shape.size(); ++i) inner *= shape[i];
  for (int64_t i = 0; i < n; ++i) {
    if (n > 8 && i == 3) {  // summarise long dims like PyTorch
      os << (last ? "..., " : "...,\n" + std::string(size_t(indent + 1), ' '));
      idx += (n - 6) * inner;
      i = n - 3;
    }
    if (last) {
      char buf[32];
      if (is_int) std::snprintf(buf, sizeof buf, "%lld", (long long)v[size_t(idx)]);
      else std::snprintf(buf, sizeof buf, "%.4g", v[size_t(idx)]);
      os << buf;
      ++idx;
    } else {
      print_rec(os, v, shape, d + 1, idx, indent + 1, is_int);
    }
    if (i + 1 < n) os << (last ? ", " : ",\n" + std::string(size_t(indent + 1), ' '));
  }
  os << "]";
}
}  // namespace

std::string Tensor::str() const {
  if (!defined()) return "Tensor(undefined)";
  std::ostringstream os;
  os << "Tensor(";
  std::vector<double> v = to_double_vector();
  int64_t idx = 0;
  print_rec(os, v, shape(), 0, idx, 7, !is_floating(dtype()));
  os << ", shape=" << shape().str() << ", dtype=" << dtype_name(dtype());
  if (!device().is_cpu()) os << ", device=" << device().str();
  if (grad_fn()) os << ", grad_fn=" << grad_fn()->name();
  else if (requires_grad()) os << ", requires_grad";
  os << ")";
  return os.str();
}

std::ostream& operator<<(std::ostream& os, const Tensor& t) { return os << t.str(); }

}  // namespace loom::runtime
