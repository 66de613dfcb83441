// tensor.h: Tensor, a ref-counted handle to (storage, shape, strides, offset, dtype) plus
// autograd metadata. Copying a Tensor copies the handle; views share storage. Differentiable
// operations are free functions in ops.h; the methods here are metadata, data access,
// autograd accessors and thin sugar over ops.h.
#pragma once
#include <functional>
#include <memory>
#include <ostream>
#include <string>
#include <vector>

#include "runtime/device.h"
#include "runtime/dtype.h"
#include "runtime/shape.h"
#include "runtime/storage.h"

namespace loom::runtime {

class Node;
class Tensor;
using GradHook = std::function<void(const Tensor& grad)>;

struct TensorImpl {
  std::shared_ptr<Storage> storage;
  Dims shape, strides;
  int64_t offset = 0;  // in elements
  DType dtype = DType::f32;
  // Autograd: a leaf has requires_grad and no grad_fn; a non-leaf has grad_fn.
  bool requires_grad = false;
  std::shared_ptr<TensorImpl> grad;
  std::shared_ptr<Node> grad_fn;
  int output_nr = 0;
  std::weak_ptr<Node> grad_accumulator;
  // Run after a leaf's .grad has been updated (data parallel starts bucket reductions here).
  std::vector<GradHook> post_accumulate_hooks;
};

class Tensor {
 public:
  Tensor() = default;
  explicit Tensor(std::shared_ptr<TensorImpl> impl) : impl_(std::move(impl)) {}

  // ---- factories -------------------------------------------------------------------
  static Tensor empty(const Dims& shape, DType dtype = DType::f32, Device dev = Device::cpu());
  static Tensor zeros(const Dims& shape, DType dtype = DType::f32, Device dev = Device::cpu());
  static Tensor ones(const Dims& shape, DType dtype = DType::f32, Device dev = Device::cpu());
  static Tensor full(const Dims& shape, double value, DType dtype = DType::f32, Device dev = Device::cpu());
  static Tensor scalar(double value, DType dtype = DType::f32, Device dev = Device::cpu());
  static Tensor arange(int64_t n, DType dtype = DType::i64, Device dev = Device::cpu());
  template <class T>
  static Tensor from_vector(const std::vector<T>& v, const Dims& shape, Device dev = Device::cpu());
  template <class T>
  static Tensor from_vector(const std::vector<T>& v) { return from_vector(v, Dims{int64_t(v.size())}); }
  // Deterministic random tensors (Philox): a pure function of (seed, stream, shape).
  static Tensor randn(const Dims& shape, uint64_t seed, DType dtype = DType::f32, uint64_t stream = 0);
  static Tensor rand(const Dims& shape, uint64_t seed, DType dtype = DType::f32, uint64_t stream = 0);
  // A tensor viewing existing storage.
  static Tensor make(std::shared_ptr<Storage> s, const Dims& shape, const Dims& strides, int64_t offset, DType dt);

  // ---- metadata ----------------------------------------------------------------------
  bool defined() const { return impl_ != nullptr; }
  const Dims& shape() const { return impl_->shape; }
  const Dims& strides() const { return impl_->strides; }
  int dim() const { return impl_->shape.size(); }
  int64_t size(int64_t d) const;  // negative d counts from the end
  int64_t stride(int64_t d) const;
  int64_t offset() const { return impl_->offset; }
  int64_t numel() const { return numel_of(impl_->shape); }
  DType dtype() const { return impl_->dtype; }
  Device device() const { return impl_->storage->device(); }
  size_t element_size() const { return dtype_size(impl_->dtype); }
  bool is_contiguous() const;
  const std::shared_ptr<Storage>& storage() const { return impl_->storage; }
  TensorImpl* impl() const { return impl_.get(); }
  const std::shared_ptr<TensorImpl>& impl_ptr() const { return impl_; }
  bool same(const Tensor& o) const { return impl_ == o.impl_; }

  // ---- data access (host tensors) ----------------------------------------------------
  void* raw_data() const;  // storage base + offset
  template <class T> T* data() const;  // checks dtype and that the tensor is on the cpu
  double item() const;  // the value of a one-element tensor, as double (copies from device)
  template <class T> std::vector<T> to_vector() const;  // contiguous copy in row-major order
  std::vector<double> to_double_vector() const;

  // ---- autograd ----------------------------------------------------------------------
  bool requires_grad() const { return impl_->requires_grad || impl_->grad_fn != nullptr; }
  Tensor& set_requires_grad(bool r);
  bool is_leaf() const { return impl_->grad_fn == nullptr; }
  const std::shared_ptr<Node>& grad_fn() const { return impl_->grad_fn; }
  Tensor grad() const { return impl_->grad ? Tensor(impl_->grad) : Tensor(); }
  void set_grad(const Tensor& g) { impl_->grad = g.impl_; }
  void zero_grad() { impl_->grad.reset(); }
  void backward(const Tensor& grad_output = Tensor()) const;
  void register_post_accumulate_hook(GradHook hook);
  Tensor detach() const;  // shares storage, no autograd history

  // ---- conversions and sugar over ops.h ---------------------------------------------
  Tensor contiguous() const;
  Tensor clone() const;
  Tensor to(DType dt) const;
  Tensor to(Device dev) const;
  Tensor view(const Dims& shape) const;
  Tensor reshape(const Dims& shape) const;
  Tensor transpose(int64_t a, int64_t b) const;
  Tensor permute(const Dims& order) const;
  Tensor narrow(int64_t dim, int64_t start, int64_t length) const;
  Tensor unsqueeze(int64_t dim) const;
  Tensor squeeze(int64_t dim) const;
  Tensor expand(const Dims& shape) const;
  // In-place (not recorded by autograd; refused on tensors that need grad while grad is on).
  Tensor& fill_(double value);
  Tensor& zero_() { return fill_(0.0); }
  Tensor& copy_(const Tensor& src);  // broadcasting, casting, cross-device copy

  std::string str() const;

 private:
  std::shared_ptr<TensorImpl> impl_;
};

std::ostream& operator<<(std::ostream& os, const Tensor& t);

// ---- template definitions ---------------------------------------------------------------
void check_host_dtype(const Tensor& t, DType want, const char* what);

template <class T> T* Tensor::data() const {
  check_host_dtype(*this, dtype_of<T>::value, "data<T>()");
  return static_cast<T*>(raw_data());
}

template <class T>
Tensor Tensor::from_vector(const std::vector<T>& v, const Dims& shape, Device dev) {
  if (int64_t(v.size()) != numel_of(shape))
    throw std::invalid_argument("from_vector: " + std::to_string(v.size()) + " values for shape " + shape.str());
  Tensor t = empty(shape, dtype_of<T>::value, Device::cpu());
  std::copy(v.begin(), v.end(), t.data<T>());
  return dev.is_cpu() ? t : t.to(dev);
}

template <class T> std::vector<T> Tensor::to_vector() const {
  Tensor c = to(Device::cpu()).contiguous();
  if (c.dtype() != dtype_of<T>::value) c = c.to(dtype_of<T>::value);
  const T* p = c.data<T>();
  return std::vector<T>(p, p + c.numel());
}

}  // namespace loom::runtime
