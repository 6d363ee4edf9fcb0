// CPU kernels of gumbel_noise (the noise an rng_state stands for) and target_score,
// t = tau (K softmax(-g) - 1) per field (DESIGN 1.3).
#include <torch/library.h>

#include "ops/cpu/tile.h"
#include "ops/target_score.h"

namespace gnsm {
namespace cpu {
namespace {

at::Tensor gumbel_noise_cpu(const at::Tensor& rng_state, c10::SymIntArrayRef sym_shape) {
  const auto shape = C10_AS_INTARRAYREF_SLOW(sym_shape);
  NoiseArgs args = check_gumbel_noise(rng_state, shape);
  uint64_t seed, offset;
  read_state(rng_state, &seed, &offset);
  at::Tensor g = at::empty(shape, rng_state.options().dtype(at::kFloat));
  float* g_p = g.data_ptr<float>();
  const Dims& d = args.dims;
  for_each_tile(d, [&](const Tile& t) {
    float* buf = scratch<float, 1>(d.channels * kTile);
    fill_gumbel(t, d, seed, offset, buf);
    const int64_t base = t.base(d.channels, d.spatial), cs = t.cstride(d.spatial), ls = t.lane_stride(d.channels);
    for (int64_t c = 0; c < d.channels; ++c) {
      for (int64_t i = 0; i < t.n; ++i) g_p[base + c * cs + i * ls] = buf[c * kTile + i];
    }
  });
  return g;
}

at::Tensor target_score_cpu(const at::Tensor& rng_state, c10::SymIntArrayRef sym_shape, at::IntArrayRef field_sizes,
                            const at::Tensor& tau) {
  const auto shape = C10_AS_INTARRAYREF_SLOW(sym_shape);
  NoiseArgs args = check_target_score(rng_state, shape, field_sizes, tau);
  uint64_t seed, offset;
  read_state(rng_state, &seed, &offset);
  at::Tensor out = at::empty(shape, rng_state.options().dtype(at::kFloat));
  float* out_p = out.data_ptr<float>();
  const at::Tensor tau_f = tau_as<float>(tau);
  const float* tau_p = tau_f.data_ptr<float>();
  const Dims& d = args.dims;
  for_each_tile(d, [&](const Tile& t) {
    float* g = scratch<float, 2>(d.channels * kTile);
    float tau_l[kTile], inv_tau[kTile], mx[kTile], log_sum[kTile];
    lane_tau(t, tau_p, tau_l, inv_tau);
    fill_gumbel(t, d, seed, offset, g);
    for (int64_t v = 0; v < d.channels * kTile; ++v) g[v] = -g[v];  // softmax(-g)
    const int64_t base = t.base(d.channels, d.spatial), cs = t.cstride(d.spatial), ls = t.lane_stride(d.channels);
    for (int64_t j = 0; j < args.layout.num_fields(); ++j) {
      const int64_t o = args.layout.offsets[j], K = args.layout.sizes[j];
      field_lse(g + o * kTile, K, t.n, mx, log_sum);
      for (int64_t k = 0; k < K; ++k) {
        const float* nk = g + (o + k) * kTile;
        float* ok = out_p + base + (o + k) * cs;
        for (int64_t i = 0; i < t.n; ++i) {
          ok[i * ls] = math::score_from_prob(math::fast_exp((nk[i] - mx[i]) - log_sum[i]), static_cast<float>(K), tau_l[i]);
        }
      }
    }
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(gnsm, CPU, m) {
  m.impl("gumbel_noise", &gumbel_noise_cpu);
  m.impl("target_score", &target_score_cpu);
}

}  // namespace cpu
}  // namespace gnsm
