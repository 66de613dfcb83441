// ops_shape.cpp: views (sharing storage) and shape-changing copies, with their backwards.
#include <numeric>

#include "runtime/ops_util.h"

namespace loom::runtime {
using namespace detail;

namespace {
Tensor as_view(const Tensor& x, const Dims& shape, const Dims& strides, int64_t offset) {
  return Tensor::make(x.storage(), shape, strides, offset, x.dtype());
}

// Strides for viewing x as `shape` without a copy, if x's layout allows it. Old dims are
// walked from the innermost; each run of old dims that is contiguous within itself (a chunk)
// must be covered exactly by a run of new dims, which then inherit the chunk's base stride.
bool view_strides(const Tensor& x, const Dims& shape, Dims& out) {
  out.resize(shape.size());
  if (x.is_contiguous() || x.numel() == 0 || x.dim() == 0) {
    out = contiguous_strides(shape);
    return true;
  }
  const Dims& os = x.shape();
  const Dims& ost = x.strides();
  int view_d = shape.size() - 1;
  int64_t chunk_stride = ost.back(), tensor_numel = 1, view_numel = 1;
  for (int d = os.size() - 1; d >= 0; --d) {
    tensor_numel *= os[d];
    bool chunk_ends = d == 0 || (os[d - 1] != 1 && ost[d - 1] != tensor_numel * chunk_stride);
    if (!chunk_ends) continue;
    while (view_d >= 0 && (view_numel < tensor_numel || shape[view_d] == 1)) {
      out[view_d] = view_numel * chunk_stride;
      view_numel *= shape[view_d];
      --view_d;
    }
    if (view_numel != tensor_numel) return false;
    if (d > 0) {
      chunk_stride = ost[d - 1];
      tensor_numel = 1;
      view_numel = 1;
    }
  }
  return view_d == -1;
}

// A strided view whose backward reshapes the gradient back to x's shape.
Tensor restrided(const Tensor& x, const Dims& shape, const Dims& strides, const char* name) {
  Tensor out = as_view(x, shape, strides, x.offset());
  Dims in_shape = x.shape();
  record_lambda(name, {x}, out, [in_shape](std::vector<Tensor>&& g) {
    return std::vector<Tensor>{reshape(g[0], in_shape)};
  });
  return out;
}

Dims infer_shape(const Tensor& x, const Dims& shape, const char* op) {
  Dims s = shape;
  int infer = -1;
  int64_t known = 1;
  for (int i = 0; i < s.size(); ++i) {
    if (s[i] == -1) {
      if (infer >= 0) fail(op, "only one dimension can be -1 in " + shape.str());
      infer = i;
    } else {
      known *= s[i];
    }
  }
  if (infer >= 0) {
    if (known == 0 || x.numel() % known) fail(op, "cannot infer -1 in " + shape.str() + " for " + x.shape().str());
    s[infer] = x.numel() / known;
  }
  if (numel_of(s) != x.numel()) fail(op, "shape " + shape.str() + " does not match " + x.shape().str());
  return s;
}
}  // namespace

Tensor view(const Tensor& x, const Dims& shape) {
  Dims s = infer_shape(x, shape, "view");
  Dims st;
  if (!view_strides(x, s, st))
    fail("view", "tensor of shape " + x.shape().str() + " with strides " + x.strides().str() +
                     " cannot be viewed as " + s.str() + "; use reshape");
  Tensor out = as_view(x, s, st, x.offset());
  Dims in_shape = x.shape();
  record_lambda("ViewBackward", {x}, out, [in_shape](std::vector<Tensor>&& g) {
    return std::vector<Tensor>{reshape(g[0], in_shape)};
  });
  return out;
}

Tensor reshape(const Tensor& x, const Dims& shape) {
  Dims s = infer_shape(x, shape, "reshape");
  Dims st;
  if (view_strides(x, s, st)) return view(x, s);
  return view(contiguous(x), s);
}

Tensor permute(const Tensor& x, const Dims& order) {
  if (order.size() != x.dim()) fail("permute", "order " + order.str() + " for a " + std::to_string(x.dim()) + "-d tensor");
  Dims shape, strides, inverse;
  inverse.resize(x.dim());
  std::vector<bool> seen(size_t(x.dim()), false);
  for (int i = 0; i < order.size(); ++i) {
    int d = wrap_dim(order[i], x.dim(), "permute");
    if (seen[size_t(d)]) fail("permute", "repeated dim in " + order.str());
    seen[size_t(d)] = true;
    shape.push_back(x.size(d));
    strides.push_back(x.stride(d));
    inverse[d] = i;
  }
  Tensor out = as_view(x, shape, strides, x.offset());
  record_lambda("PermuteBackward", {x}, out, [inverse](std::vector<Tensor>&& g) {
    return std::vector<Tensor>{permute(g[0], inverse)};
  });
  return out;
}

Tensor transpose(const Tensor& x, int64_t a, int64_t b) {
  Dims order;
  for (int i = 0; i < x.dim(); ++i) order.push_back(i);
  int da = wrap_dim(a, x.dim(), "transpose"), db = wrap_dim(b, x.dim(), "transpose");
  std::swap(order[da], order[db]);
  return permute(x, order);
}

Tensor narrow(const Tensor& x, int64_t dim, int64_t start, int64_t length) {
  int d = wrap_dim(dim, x.dim(), "narrow");
  if (start < 0) start += x.size(d);
  if (start < 0 || length < 0 || start + length > x.size(d))
    fail("narrow", "range [" + std::to_string(start) + ", " + std::to_string(start + length) + ") outside dim " +
                       std::to_string(d) + " of size " + std::to_string(x.size(d)));
  Dims shape = x.shape();
  shape[d] = length;
  Tensor out = as_view(x, shape, x.strides(), x.offset() + start * x.stride(d));
  Dims full = x.shape();
  record_lambda("NarrowBackward", {x}, out, [full, d, start, length](std::vector<Tensor>&& g) {
    Tensor gx = Tensor::zeros(full, g[0].dtype(), g[0].device());
    Tensor slot = gx.narrow(d, start, length);
    slot.copy_(g[0]);
    return std::vector<Tensor>{gx};
  });
  return out;
}

Tensor unsqueeze(const Tensor& x, int64_t dim) {
  int d = wrap_dim(dim, x.dim() + 1, "unsqueeze");
  Dims shape = x.shape(), strides = x.strides();
  shape.insert(d, 1);
  strides.insert(d, d < x.dim() ? x.stride(d) * x.size(d) : 1);
  return restrided(x, shape, strides, "UnsqueezeBackward");
}

Tensor squeeze(const Tensor& x, int64_t dim) {
  int d = wrap_dim(dim, x.dim(), "squeeze");
  if (x.size(d) != 1) return x;
  Dims shape = x.shape(), strides = x.strides();
  shape.erase(d);
  strides.erase(d);
  return restrided(x, shape, strides, "SqueezeBackward");
}

Tensor expand(const Tensor& x, const Dims& shape) {
  Dims target = shape;
  int lead = target.size() - x.dim();
  if (lead < 0) fail("expand", "cannot expand " + x.shape().str() + " to " + shape.str());
  for (int i = 0; i < target.size(); ++i)
    if (target[i] == -1) {
      if (i < lead) fail("expand", "-1 for a new leading dim in " + shape.str());
      target[i] = x.size(i - lead);
    }
  if (target == x.shape()) return x;
  Dims strides = broadcast_strides(x.shape(), x.strides(), target);
  Tensor out = as_view(x, target, strides, x.offset());
  Dims in_shape = x.shape();
  record_lambda("ExpandBackward", {x}, out, [in_shape](std::vector<Tensor>&& g) {
    return std::vector<Tensor>{sum_to(g[0], in_shape)};
  });
  return out;
}

Tensor sum_to(const Tensor& x, const Dims& shape) {
  if (x.shape() == shape) return x;
  int lead = x.dim() - shape.size();
  if (lead < 0) fail("sum_to", "cannot reduce " + x.shape().str() + " to " + shape.str());
  std::vector<int64_t> dims;
  for (int i = 0; i < x.dim(); ++i)
    if (i < lead || (shape[i - lead] == 1 && x.size(i) != 1)) dims.push_back(i);
  Tensor r = dims.empty() ? x : sum(x, dims, /*keepdim=*/true);
  return reshape(r, shape);
}

Tensor contiguous(const Tensor& x) {
  if (x.is_contiguous()) return x;
  return clone(x);
}

Tensor clone(const Tensor& x) {
  Tensor out = empty_like(x);
  {
    NoGradGuard ng;
    out.copy_(x);
  }
  record_lambda("CloneBackward", {x}, out, [](std::vector<Tensor>&& g) { return std::vector<Tensor>{g[0]}; });
  return out;
}

Tensor cast(const Tensor& x, DType dt) {
  if (x.dtype() == dt) return x;
  Tensor out = Tensor::empty(x.shape(), dt, x.device());
  dispatch(Op::copy, {x}, {out});
  if (is_floating(dt) && is_floating(x.dtype())) {
    DType src = x.dtype();
    record_lambda("CastBackward", {x}, out, [src](std::vector<Tensor>&& g) {
      return std::vector<Tensor>{cast(g[0], src)};
    });
  }
  return out;
}

Tensor to_device(const Tensor& x, Device dev) {
  if (x.device() == dev) return x;
  Tensor src = x.is_contiguous() ? x : clone(x.detach());
  Tensor out = Tensor::empty(x.shape(), x.dtype(), dev);
  size_t bytes = size_t(x.numel()) * x.element_size();
  if (bytes) {
    if (src.device().is_cpu()) allocator_for(dev).copy_from_host(out.raw_data(), src.raw_data(), bytes);
    else if (dev.is_cpu()) allocator_for(src.device()).copy_to_host(out.raw_data(), src.raw_data(), bytes);
    else allocator_for(dev).copy_from_host(out.raw_data(), to_device(src.detach(), Device::cpu()).raw_data(), bytes);
  }
  Device from = x.device();
  if (is_floating(x.dtype()))
    record_lambda("ToDeviceBackward", {x}, out, [from](std::vector<Tensor>&& g) {
      return std::vector<Tensor>{to_device(g[0], from)};
    });
  return out;
}

Tensor concat(const std::vector<Tensor>& xs, int64_t dim) {
  if (xs.empty()) fail("concat", "no tensors");
  int d = wrap_dim(dim, xs[0].dim(), "concat");
  Dims shape = xs[0].shape();
  int64_t total = 0;
  for (const Tensor& t : xs) {
    if (t.dim() != shape.size() || t.dtype() != xs[0].dtype())
      fail("concat", "tensors differ in rank or dtype: " + t.shape().str() + " vs " + shape.str());
    for (int i = 0; i < t.dim(); ++i)
      if (i != d && t.size(i) != shape[i]) fail("concat", "shapes " + t.shape().str() + " and " + shape.str() + " differ off dim " + std::to_string(d));
    total += t.size(d);
  }
  shape[d] = total;
  Tensor out = new_empty(xs[0], shape);
  std::vector<int64_t> sizes;
  {
    NoGradGuard ng;
    int64_t at = 0;
    for (const Tensor& t : xs) {
      out.narrow(d, at, t.size(d)).copy_(t);
      at += t.size(d);
      sizes.push_back(t.size(d));
    }
  }
  record_lambda("ConcatBackward", xs, out, [sizes, d](std::vector<Tensor>&& g) { return split(g[0], sizes, d); });
  return out;
}

std::vector<Tensor> split(const Tensor& x, const std::vector<int64_t>& sizes, int64_t dim) {
  int d = wrap_dim(dim, x.dim(), "split");
  int64_t total = std::accumulate(sizes.begin(), sizes.end(), int64_t(0));
  if (total != x.size(d))
    fail("split", "sizes add up to " + std::to_string(total) + " but dim " + std::to_string(d) + " has " + std::to_string(x.size(d)));
  std::vector<Tensor> parts;
  int64_t at = 0;
  for (int64_t s : sizes) {
    parts.push_back(narrow(x, d, at, s));
    at += s;
  }
  return parts;
}

std::vector<Tensor> chunk(const Tensor& x, int64_t chunks, int64_t dim) {
  int d = wrap_dim(dim, x.dim(), "chunk");
  int64_t n = x.size(d), each = (n + chunks - 1) / chunks;
  std::vector<int64_t> sizes;
  for (int64_t at = 0; at < n; at += each) sizes.push_back(std::min(each, n - at));
  return split(x, sizes, d);
}

}  // namespace loom::runtime
