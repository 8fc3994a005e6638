// The one op library of nnraw: every schema lives here; kernels register themselves per device in
// csrc/cpu/<op>.cpp and csrc/cuda/<op>.cu with TORCH_LIBRARY_IMPL(nnraw, CPU|CUDA, m).
// The same shared object is also a small pybind11 module (nnraw._C) that reports build information.
#include <torch/library.h>
#include <pybind11/pybind11.h>

#include <string>

TORCH_LIBRARY(nnraw, m) {
  // Fused PReLU with per-channel slopes. x: [N, C, ...]; weight: [C].
  m.def("prelu(Tensor x, Tensor weight) -> Tensor");
  // Backward, two kernels as in the reference system: grad_x plus per-(sample, channel) partial
  // sums of x*grad over x <= 0, reduced over the samples in a second pass.
  m.def("prelu_backward(Tensor grad, Tensor x, Tensor weight) -> (Tensor, Tensor)");

  // Central-pixel mixed MS-SSIM + L1 loss (Zhao et al. 2017) on odd square patches.
  // pred, target: [N, C, P, P]; returns the per-(sample, channel) loss [N, C].
  m.def("center_ms_ssim_l1(Tensor pred, Tensor target, float alpha) -> Tensor");
  m.def("center_ms_ssim_l1_backward(Tensor grad, Tensor pred, Tensor target, float alpha) -> Tensor");

  // Full-image MS-SSIM (Wang et al. 2003): 5 scales, 11x11 Gaussian (sigma 1.5), 2x average pooling.
  // x, y: [N, C, H, W]; returns MS-SSIM per sample [N].
  m.def("ms_ssim(Tensor x, Tensor y, float data_range) -> Tensor");
  m.def("ms_ssim_backward(Tensor grad, Tensor x, Tensor y, float data_range) -> Tensor");

  // Edge-aware (soft-weighted Hamilton-Adams) pre-demosaic. mosaic: [N, 1, H, W] float;
  // pattern: "RGGB" | "BGGR" | "GRBG" | "GBRG"; wb: [3] or [N, 3] white-balance gains, applied before
  // interpolation and removed after. Returns camera RGB [N, 3, H, W].
  m.def("edge_aware_demosaic(Tensor mosaic, str pattern, Tensor wb) -> Tensor");
}

namespace {

bool built_with_cuda() {
#if NNRAW_WITH_CUDA
  return true;
#else
  return false;
#endif
}

}  // namespace

PYBIND11_MODULE(_C, module) {
  module.doc() = "nnraw compiled ops (registered under torch.ops.nnraw)";
  module.def("built_with_cuda", &built_with_cuda, "Whether the CUDA kernels were compiled into this library");
  module.attr("version") = std::string(NNRAW_VERSION);
}
