"""Typed wrappers over the fused ``torch.ops.gnsm`` kernels, with their fake (meta) shape functions
and autograd formulas registered side by side.

Conventions shared by every op:

* ``field_sizes`` is either an ``int`` K (one field: a segmentation mask or label volume; labels are
  ``(B, *spatial)`` and per-position outputs are ``(B, *spatial)``) or a sequence ``[K_1, ..., K_J]``
  (J fields side by side: labels ``(B, J, *spatial)``, per-position outputs ``(B, J, *spatial)``).
  Float tensors (logits, network outputs, samples) are ``(B, C, *spatial)`` with ``C = sum K_j``.
* ``tau`` is a positive float or a tensor of shape ``(B,)``: one temperature per record.
* Randomness: a relax call draws an ``rng_state`` (int64 ``[seed, offset]``) from PyTorch's
  generator for the device (the default one, or ``generator=``), so ``torch.manual_seed``
  reproduces every result; the loss and the target regenerate the same Gumbel noise from that
  state instead of storing it. Every op except ``rng_state`` is a deterministic function of its
  inputs.
"""
from __future__ import annotations

import re
from numbers import Real
from typing import NamedTuple, Sequence

import torch

from gnsm import _C  # noqa: F401  (loads the shared library that registers torch.ops.gnsm)

from gnsm.core import PAPER_EPS as DEFAULT_EPS  # noqa: E402  (the one home of the paper's clip)
from gnsm.core import MAX_FIELD_SIZE, as_field_sizes, check_tau  # noqa: E402

_BOUNDS = _C.build_info()  # the bounds the compiled checks enforce, for the fake (meta) checks below
_MAX_FIELD_SIZE = int(_BOUNDS.get("max_field_size", MAX_FIELD_SIZE))
_MAX_CHANNELS = int(_BOUNDS.get("max_channels", 2 ** 30))
_KINDS = ("kl", "mse")
_REDUCTIONS = ("mean", "sum", "none")


class RelaxedSample(NamedTuple):
    """A relaxed (log-space Concrete) sample and the random state that produced its noise."""

    y: torch.Tensor
    rng_state: torch.Tensor


def _fields(field_sizes: int | Sequence[int]) -> tuple[list[int], bool]:
    """Normalize ``field_sizes`` to a list and say whether the single-field (mask) layout is used
    (the rules of :func:`gnsm.core.as_field_sizes`: ints, numpy integers or 0-d integer tensors,
    each in ``[1, MAX_FIELD_SIZE]``; bools, floats and strings raise ``TypeError``)."""
    return as_field_sizes(field_sizes, "field_sizes")


def _tensor(x, name: str, what: str) -> torch.Tensor:
    """``x`` itself if it is a tensor of rank >= 1; a clear error naming ``name`` otherwise."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor {what}, got {type(x).__module__}.{type(x).__name__} "
                        f"(convert it with torch.as_tensor)")
    if x.dim() == 0:
        raise ValueError(f"{name}: expected a tensor {what}, got a 0-d tensor")
    return x


def _tau(tau: float | torch.Tensor, batch: int, device: torch.device) -> torch.Tensor:
    """tau as a (B,) float32/float64 tensor. A number is range-checked here; a tensor's values are
    checked by the op (on the CPU; on the device for CUDA)."""
    if isinstance(tau, torch.Tensor):
        if tau.requires_grad and torch.is_grad_enabled():
            # No op has a gradient with respect to the temperature: say so rather than leaving tau.grad None.
            raise ValueError("tau: gradients with respect to the temperature are not supported, but tau requires "
                             "grad (pass tau.detach())")
        if tau.dim() == 0:
            tau = tau.expand(batch)
        if not tau.is_floating_point():
            raise TypeError(f"tau: expected a floating-point tensor, got {tau.dtype}")
        return tau if tau.dtype == torch.float64 else tau.float()
    if isinstance(tau, bool) or not isinstance(tau, Real):
        raise TypeError(f"tau: expected a float or a tensor of shape (B,), got {type(tau).__name__} {tau!r} "
                        f"(pass a list as torch.tensor(...))")
    return torch.full((batch,), check_tau(tau), dtype=torch.float32, device=device)


def rng_state(like: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Draw a fresh random state (int64 ``[seed, offset]`` on ``like``'s device) from the generator.

    On CUDA it is read from the generator's Philox state inside a kernel, so CUDA graph replays
    draw fresh noise the way PyTorch's own random ops do.
    """
    return torch.ops.gnsm.rng_state(like, generator)


def relax_from_labels(labels: torch.Tensor, field_sizes: int | Sequence[int], tau: float | torch.Tensor, *,
                      eps: float = DEFAULT_EPS, dtype: torch.dtype = torch.float32,
                      generator: torch.Generator | None = None,
                      rng_state: torch.Tensor | None = None) -> RelaxedSample:
    """Fused Gumbel noise + log-space softmax relaxation straight from integer labels.

    Args:
        labels: integer tensor (uint8, int16, int32 or int64), ``(B, *spatial)`` for one field or
            ``(B, J, *spatial)`` for J fields. No one-hot is materialized.
        field_sizes: K, or ``[K_1, ..., K_J]``.
        tau: temperature(s), > 0.
        eps: clip of the one-hot: non-true classes get logit log(eps).
        dtype: storage dtype of y (float32, bfloat16, float16 or float64); math is fp32 (fp64 for float64).
        generator: the generator to draw the random state from (default: the device's default).
        rng_state: reuse an explicit state instead of drawing one (reproduces a sample exactly).

    Returns:
        ``RelaxedSample(y, rng_state)`` with y of shape ``(B, C, *spatial)``.
    """
    sizes, single = _fields(field_sizes)
    _tensor(labels, "labels", "of integer labels, (B, *spatial) for one field or (B, J, *spatial)")
    if single:
        labels = labels.unsqueeze(1)
    tau_t = _tau(tau, labels.shape[0], labels.device)
    try:
        return _with_state(labels, generator, rng_state, lambda state: torch.ops.gnsm.relax_from_labels(
            labels, sizes, tau_t, state, float(eps), dtype))
    except ValueError as err:
        if single:  # the op saw (B, 1, *spatial): report the index in the caller's (B, *spatial) tensor
            raise ValueError(_drop_field_coordinate(str(err))) from None
        raise


def _with_state(like: torch.Tensor, generator: torch.Generator | None, rng_state: torch.Tensor | None,
                call) -> RelaxedSample:
    """Run a relax op with a given or freshly drawn state. A call rejected for bad input leaves a CPU
    generator as it was, so a seeded run stays reproducible after a caught error (a CUDA draw only
    bumps an offset and must stay capturable, so it is not rolled back)."""
    if rng_state is not None:
        return RelaxedSample(call(rng_state), rng_state)
    saved = gen = None
    # Under torch.compile there is no rollback (Generator.get_state cannot be traced): the checks of a
    # compiled graph ran when it was traced, so a rejected call there is a shape / dtype error anyway.
    if not torch.compiler.is_compiling():
        gen = generator if generator is not None else (torch.default_generator if like.device.type == "cpu" else None)
        saved = gen.get_state() if gen is not None and gen.device.type == "cpu" else None
    state = torch.ops.gnsm.rng_state(like, generator)
    try:
        return RelaxedSample(call(state), state)
    except (ValueError, TypeError):
        if saved is not None:
            gen.set_state(saved)
        raise


def _drop_field_coordinate(message: str) -> str:
    match = re.search(r"for field 0, found (-?\d+) at index \((\d+), 0(, [^)]*)?\)", message)
    if match is None:
        return message
    index = "(" + match.group(2) + (match.group(3) or ",") + ")"
    return message[:match.start()] + f"found {match.group(1)} at index {index}" + message[match.end():]


def relax_from_logits(logits: torch.Tensor, field_sizes: int | Sequence[int], tau: float | torch.Tensor, *,
                      dtype: torch.dtype | None = None, generator: torch.Generator | None = None,
                      rng_state: torch.Tensor | None = None) -> RelaxedSample:
    """Fused relaxation of soft inputs: class logits ``(B, C, *spatial)`` (e.g. ``log(clip(p, eps, 1))``).

    Differentiable with respect to ``logits`` (the reparameterized Gumbel-softmax gradient).
    """
    sizes, _ = _fields(field_sizes)
    _tensor(logits, "logits", "of class logits (B, C, *spatial)")
    out_dtype = logits.dtype if dtype is None else dtype
    tau_t = _tau(tau, logits.shape[0], logits.device)
    return _with_state(logits, generator, rng_state, lambda state: torch.ops.gnsm.relax_from_logits(
        logits, sizes, tau_t, state, out_dtype))


def gumbel_noise(rng_state: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """The standard Gumbel noise g (fp32, ``shape`` = ``(B, C, *spatial)``) that ``rng_state`` stands for.

    Exposed for tests and for users who want the noise itself; the fused ops never store it.
    """
    return torch.ops.gnsm.gumbel_noise(rng_state, list(shape))


def target_score(rng_state: torch.Tensor, shape: Sequence[int], field_sizes: int | Sequence[int],
                 tau: float | torch.Tensor) -> torch.Tensor:
    """Closed-form target score t = tau (K softmax(-g) - 1) per field (fp32, ``shape``)."""
    sizes, _ = _fields(field_sizes)
    _tensor(rng_state, "rng_state", "[seed, offset]")
    shape = list(shape)
    if len(shape) < 2:
        raise ValueError(f"shape: expected (B, C, *spatial) with at least 2 dims, got {tuple(shape)}")
    device = rng_state.device
    return torch.ops.gnsm.target_score(rng_state, shape, sizes, _tau(tau, shape[0], device))


def score_matching_loss(output: torch.Tensor, rng_state: torch.Tensor, field_sizes: int | Sequence[int],
                        tau: float | torch.Tensor, *, kind: str = "kl", reduction: str = "mean") -> torch.Tensor:
    """Fused score-matching loss of the network output ``(B, C, *spatial)`` (DESIGN 1.4).

    The Gumbel noise is regenerated from ``rng_state`` (the one returned by the relax call), in the
    forward and again in the fused backward, which writes only the gradient of ``output``.

    Args:
        kind: ``"kl"`` (sum over fields of KL(softmax(-g) || softmax(l))) or ``"mse"`` (0.5 ||s - t||^2).
        reduction: ``"mean"`` (sum / B), ``"sum"``, or ``"none"``: per position, ``(B, *spatial)``
            for one field given as an int, ``(B, J, *spatial)`` for a list of fields.
    """
    sizes, single = _fields(field_sizes)
    _tensor(output, "output", "of network outputs (B, C, *spatial)")
    _tensor(rng_state, "rng_state", "[seed, offset]")
    tau_t = _tau(tau, output.shape[0], output.device)
    if _grad_in_forward(output):
        loss = _LossWithGrad.apply(output, rng_state, sizes, tau_t, kind, reduction)
    else:
        loss = torch.ops.gnsm.score_matching_loss(output, rng_state, sizes, tau_t, kind, reduction)
    if reduction == "none" and single:
        loss = loss.squeeze(1)
    return loss


def _grad_in_forward(output: torch.Tensor) -> bool:
    """Whether the loss computes its gradient in the forward pass (CPU only): the CPU is compute-bound,
    so it produces the gradient in the same pass as the loss rather than regenerating the noise in the
    backward (on a GPU the recompute is the cheaper choice)."""
    return output.device.type == "cpu" and output.requires_grad and torch.is_grad_enabled()


class _LossWithGrad(torch.autograd.Function):
    """Loss whose gradient (for a unit incoming gradient) is computed in the forward pass."""

    @staticmethod
    def forward(ctx, output, rng_state, field_sizes, tau, kind, reduction):
        loss, grad = torch.ops.gnsm.score_matching_loss_with_grad(output, rng_state, field_sizes, tau, kind, reduction)
        ctx.save_for_backward(grad, output, rng_state, tau)
        ctx.field_sizes = field_sizes
        ctx.kind = kind
        ctx.reduction = reduction
        return loss

    @staticmethod
    def backward(ctx, grad_loss):
        grad, output, state, tau = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph=True: a gradient that is itself differentiable
            return (_differentiable_loss_grad(grad_loss, output, state, ctx.field_sizes, tau, ctx.kind, ctx.reduction),
                    None, None, None, None, None)
        if ctx.reduction == "none":  # per (field, position) weights, spread over each field's classes
            sizes = torch.tensor(ctx.field_sizes, device=grad.device)
            weight = grad_loss if len(ctx.field_sizes) == 1 else grad_loss.repeat_interleave(sizes, dim=1)
            return grad * weight.to(grad.dtype), None, None, None, None, None
        if (not torch.compiler.is_compiling() and grad_loss.numel() == 1 and not grad_loss.requires_grad
                and float(grad_loss) == 1.0):
            return grad, None, None, None, None, None  # the usual loss.backward(): no extra pass
        return grad * grad_loss.to(grad.dtype), None, None, None, None, None


def score_norms(output: torch.Tensor, field_sizes: int | Sequence[int],
                tau: float | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """L2 norms of the score s = tau (K softmax(l) - 1) without materializing s.

    Returns:
        ``(per_record, per_position)``: fp32 ``(B,)`` and ``(B, *spatial)`` for one field given as
        an int, or ``(B, J, *spatial)`` (per field and position) for a list of fields.
    """
    sizes, single = _fields(field_sizes)
    _tensor(output, "output", "of network outputs (B, C, *spatial)")
    per_record, per_position = torch.ops.gnsm.score_norms(output, sizes, _tau(tau, output.shape[0], output.device))
    if single:
        per_position = per_position.squeeze(1)
    return per_record, per_position


def build_info() -> dict:
    """Facts about the compiled extension: version, whether CUDA kernels were built, CUDA archs."""
    return dict(_C.build_info())


# ---- fake (meta) implementations: shapes for torch.compile / FakeTensor tracing -------------------

# The fakes also run as the Meta kernels, which the dispatcher picks whenever any input is on the meta
# device: they repeat the C++ checks that need no values (field sizes, devices, with the same messages),
# or a CPU input next to a meta tau would come back as an uninitialized CPU tensor.

def _check_fields_fake(field_sizes, channels=None, against=""):
    if len(field_sizes) == 0:
        raise ValueError("field_sizes: expected at least one field")
    total = 0
    for j, k in enumerate(field_sizes):
        if k < 1:
            raise ValueError(f"field_sizes: expected every K_j >= 1, got K_{j} = {k}")
        if k > _MAX_FIELD_SIZE:
            raise ValueError(f"field_sizes: expected every K_j <= {_MAX_FIELD_SIZE} (the largest supported field), "
                             f"got K_{j} = {k}")
        total += k
        if total >= _MAX_CHANNELS:
            raise ValueError(f"field_sizes: expected fewer than {_MAX_CHANNELS} classes in all, got more after K_{j}")
    if channels is not None and total != channels:
        raise ValueError(f"field_sizes: the fields sum to {total} classes but {against} has {channels} channels in "
                         "dim 1 (mismatched number of classes)")
    return total


def _check_devices_fake(device, tau=None, rng_state=None, grad=None):
    for name, t in (("tau", tau), ("rng_state", rng_state)):
        if t is not None and t.device != device:
            raise ValueError(f"{name}: expected a tensor on {device} (the inputs' device), got {t.device}")
    if grad is not None and grad.device != device:
        raise ValueError(f"grad: expected a tensor on {device}, got {grad.device}")


@torch.library.register_fake("gnsm::rng_state")
def _rng_state_fake(like, generator=None):
    return like.new_empty((2,), dtype=torch.int64)


@torch.library.register_fake("gnsm::relax_from_labels")
def _relax_from_labels_fake(labels, field_sizes, tau, rng_state, eps, dtype):
    channels = _check_fields_fake(field_sizes)
    _check_devices_fake(labels.device, tau, rng_state)
    return labels.new_empty((labels.shape[0], channels, *labels.shape[2:]), dtype=dtype)


@torch.library.register_fake("gnsm::relax_from_logits")
def _relax_from_logits_fake(logits, field_sizes, tau, rng_state, dtype):
    _check_fields_fake(field_sizes, logits.shape[1] if logits.dim() >= 2 else None, "logits")
    _check_devices_fake(logits.device, tau, rng_state)
    return logits.new_empty(logits.shape, dtype=dtype)


@torch.library.register_fake("gnsm::gumbel_noise")
def _gumbel_noise_fake(rng_state, shape):
    return rng_state.new_empty(shape, dtype=torch.float32)


@torch.library.register_fake("gnsm::target_score")
def _target_score_fake(rng_state, shape, field_sizes, tau):
    _check_fields_fake(field_sizes, shape[1] if len(shape) >= 2 else None, "shape")
    _check_devices_fake(rng_state.device, tau)
    return rng_state.new_empty(shape, dtype=torch.float32)


def _loss_shape(output, field_sizes, reduction):
    if reduction == "none":
        return (output.shape[0], len(field_sizes), *output.shape[2:])
    return ()


def _loss_dtype(output):
    return torch.float64 if output.dtype == torch.float64 else torch.float32


def _check_output_fake(output, field_sizes, tau, rng_state=None, grad=None):
    _check_fields_fake(field_sizes, output.shape[1] if output.dim() >= 2 else None, "output")
    _check_devices_fake(output.device, tau, rng_state, grad)


@torch.library.register_fake("gnsm::score_matching_loss")
def _loss_fake(output, rng_state, field_sizes, tau, kind, reduction):
    _check_output_fake(output, field_sizes, tau, rng_state)
    return output.new_empty(_loss_shape(output, field_sizes, reduction), dtype=_loss_dtype(output))


@torch.library.register_fake("gnsm::score_matching_loss_with_grad")
def _loss_with_grad_fake(output, rng_state, field_sizes, tau, kind, reduction):
    _check_output_fake(output, field_sizes, tau, rng_state)
    return (output.new_empty(_loss_shape(output, field_sizes, reduction), dtype=_loss_dtype(output)),
            torch.empty_like(output))


@torch.library.register_fake("gnsm::score_matching_loss_backward")
def _loss_backward_fake(grad, output, rng_state, field_sizes, tau, kind, reduction):
    _check_output_fake(output, field_sizes, tau, rng_state, grad)
    return torch.empty_like(output)


@torch.library.register_fake("gnsm::score_norms")
def _score_norms_fake(output, field_sizes, tau):
    _check_output_fake(output, field_sizes, tau)
    dtype = _loss_dtype(output)
    return (output.new_empty((output.shape[0],), dtype=dtype),
            output.new_empty((output.shape[0], len(field_sizes), *output.shape[2:]), dtype=dtype))


# ---- autograd ----------------------------------------------------------------------------------

def _loss_setup_context(ctx, inputs, output):
    out, state, field_sizes, tau, kind, reduction = inputs
    ctx.save_for_backward(out, state, tau)
    ctx.field_sizes = field_sizes
    ctx.kind = kind
    ctx.reduction = reduction


def _loss_backward(ctx, grad):
    out, state, tau = ctx.saved_tensors
    grad_out = None
    if ctx.needs_input_grad[0] and torch.is_grad_enabled():  # create_graph=True: differentiable gradient
        grad_out = _differentiable_loss_grad(grad, out, state, ctx.field_sizes, tau, ctx.kind, ctx.reduction)
    elif ctx.needs_input_grad[0]:
        grad_out = torch.ops.gnsm.score_matching_loss_backward(grad.contiguous(), out, state, ctx.field_sizes, tau,
                                                               ctx.kind, ctx.reduction)
    return grad_out, None, None, None, None, None


torch.library.register_autograd("gnsm::score_matching_loss", _loss_backward, setup_context=_loss_setup_context)


def _differentiable_loss_grad(grad_loss: torch.Tensor, output: torch.Tensor, rng_state: torch.Tensor,
                              field_sizes: Sequence[int], tau: torch.Tensor, kind: str, reduction: str) -> torch.Tensor:
    """The loss gradient with respect to ``output`` from differentiable torch ops, for double backward
    (``create_graph=True``): the fused kernels' gradient is a constant to autograd. Per field, with
    p = softmax(l) and q = softmax(-g): kl gives p - q; mse, with d = s - t = tau K (p - q), gives
    tau K p (d - <p, d>). Same math type as the kernels (fp32, fp64 for fp64 storage)."""
    acc = torch.float64 if output.dtype == torch.float64 else torch.float32
    l = output.to(acc)
    g = torch.ops.gnsm.gumbel_noise(rng_state, list(output.shape)).to(acc)
    tau_v = tau.to(acc).reshape(-1, *([1] * (output.dim() - 1)))
    parts = []
    for l_j, g_j in zip(torch.split(l, list(field_sizes), dim=1), torch.split(g, list(field_sizes), dim=1)):
        p, q = l_j.softmax(dim=1), (-g_j).softmax(dim=1)
        if kind == "kl":
            parts.append(p - q)
        else:
            scale = tau_v * l_j.shape[1]
            d = scale * (p - q)
            parts.append(scale * p * (d - (p * d).sum(dim=1, keepdim=True)))
    grad = torch.cat(parts, dim=1)
    grad_loss = grad_loss.to(acc)
    if reduction == "none":  # per (field, position) weights, spread over each field's classes
        if grad_loss.dim() == output.dim() - 1:  # the single-field (B, *spatial) form
            grad_loss = grad_loss.unsqueeze(1)
        weight = grad_loss.repeat_interleave(torch.tensor(list(field_sizes), device=output.device), dim=1)
    else:
        weight = grad_loss / output.shape[0] if reduction == "mean" and output.shape[0] > 0 else grad_loss
    return (grad * weight).to(output.dtype)


def _segment_sum(x: torch.Tensor, field_sizes: Sequence[int]) -> torch.Tensor:
    """Per-field sums broadcast back over each field's classes (B, C, *spatial)."""
    parts = torch.split(x, list(field_sizes), dim=1)
    return torch.cat([p.sum(dim=1, keepdim=True).expand_as(p) for p in parts], dim=1)


def _relax_logits_setup_context(ctx, inputs, output):
    logits, field_sizes, tau, _state, _dtype = inputs
    ctx.save_for_backward(output, tau)
    ctx.field_sizes = field_sizes
    ctx.logits_dtype = logits.dtype


def _relax_logits_backward(ctx, grad):
    # y = z - lse(z) per field with z = (a + g)/tau: dL/da = (grad - softmax(y) * sum_field(grad)) / tau.
    y, tau = ctx.saved_tensors
    grad = grad.to(torch.promote_types(grad.dtype, torch.float32))
    p = y.to(grad.dtype).exp()
    ga = (grad - p * _segment_sum(grad, ctx.field_sizes)) / tau.to(grad.dtype).reshape(-1, *([1] * (y.dim() - 1)))
    return ga.to(ctx.logits_dtype), None, None, None, None


torch.library.register_autograd("gnsm::relax_from_logits", _relax_logits_backward,
                                setup_context=_relax_logits_setup_context)


def _norms_setup_context(ctx, inputs, output):
    out, field_sizes, tau = inputs
    ctx.save_for_backward(out, tau)
    ctx.field_sizes = field_sizes


def _norms_backward(ctx, grad_record, grad_position):
    # Rarely needed (scoring runs without grad), so recompute with the reference math under autograd
    # rather than keeping a second fused kernel.
    from gnsm.ops import reference

    out, tau = ctx.saved_tensors
    with torch.enable_grad():
        leaf = out.detach().to(torch.promote_types(out.dtype, torch.float32)).requires_grad_(True)
        per_record, per_position = reference.score_norms(leaf, tau.to(leaf.dtype), ctx.field_sizes)
        terms = []
        if grad_record is not None:
            terms.append((per_record * grad_record.to(per_record.dtype)).sum())
        if grad_position is not None:
            terms.append((per_position * grad_position.to(per_position.dtype)).sum())
        if not terms:
            return None, None, None
        (grad,) = torch.autograd.grad(sum(terms), leaf)
    return grad.to(out.dtype), None, None


torch.library.register_autograd("gnsm::score_norms", _norms_backward, setup_context=_norms_setup_context)


__all__ = ["DEFAULT_EPS", "build_info", "gumbel_noise", "relax_from_labels", "relax_from_logits", "rng_state",
           "score_matching_loss", "score_norms", "target_score"]
