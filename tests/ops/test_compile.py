"""``torch.compile`` of code that calls the fused ops (their ``register_fake`` shape functions and
``register_autograd`` formulas in gnsm/ops/__init__.py): a training-step-like function traced with
``fullgraph=True`` (no graph breaks) by the inductor backend gives the eager result for the same
rng_state, forward and backward. One compilation covers every op, to keep the suite fast on CPU.
"""
from __future__ import annotations

import torch

from ops_testing import assert_close, make_labels, make_tau, ops

FIELDS = [3, 4]


def _step(labels, soft_logits, weight, tau, state):
    y, _ = ops.relax_from_labels(labels, FIELDS, tau, rng_state=state)
    y_soft, _ = ops.relax_from_logits(soft_logits, FIELDS, tau, rng_state=state)
    out = weight * y + y_soft  # stands in for the network output
    loss = ops.score_matching_loss(out, state, FIELDS, tau, kind="kl") \
        + 0.01 * ops.score_matching_loss(out, state, FIELDS, tau, kind="mse", reduction="none").sum()
    target = ops.target_score(state, out.shape, FIELDS, tau)
    g = ops.gumbel_noise(state, out.shape)
    per_record, per_position = ops.score_norms(out.detach(), FIELDS, tau)
    return y, loss, target, g, per_record, per_position


class TestCompile:
    def test_inductor_matches_eager(self, device):
        torch._dynamo.reset()
        labels = make_labels(3, FIELDS, (4, 5), device, torch.uint8)
        tau = make_tau(3, device)
        state = ops.rng_state(labels)
        soft = torch.randn(3, 7, 4, 5, device=device)
        w0 = torch.randn(3, 7, 4, 5, device=device)

        def run(fn):
            weight, logits = w0.clone().requires_grad_(), soft.clone().requires_grad_()
            outs = fn(labels, logits, weight, tau, state)
            grads = torch.autograd.grad(outs[1], (weight, logits))
            return [o.detach() for o in outs] + list(grads)

        step = torch.compile(_step, backend="inductor", fullgraph=True)
        eager = run(_step)
        compiled = run(step)
        names = ["y", "loss", "target", "g", "per_record", "per_position", "grad_weight", "grad_logits"]
        assert torch.equal(compiled[0], eager[0]), "y"  # an op output passes through untouched
        assert torch.equal(compiled[3], eager[3]), "g"
        for name, c, e in zip(names, compiled, eager):
            assert c.shape == e.shape and c.dtype == e.dtype, name
            assert_close(c, e, rtol=1e-5, msg=name)
        # A different state through the same compiled graph gives a different draw (no baked-in constant).
        other = ops.rng_state(labels)
        with torch.no_grad():
            assert not torch.equal(step(labels, soft, w0, tau, other)[0], eager[0])


def _documented_step(labels, tau, weight):
    """The training step of docs/ops.md (Usage): the wrappers draw the state themselves."""
    y, state = ops.relax_from_labels(labels, 8, tau)
    out = weight * y  # stands in for net(y, tau.log())
    return ops.score_matching_loss(out, state, 8, tau, kind="kl")


class TestCompiledPublicApi:
    def test_documented_step_without_rng_state(self):
        # fullgraph=True used to fail on the generator rollback (Generator.get_state) of the wrappers.
        torch._dynamo.reset()
        labels = make_labels(2, 8, (4, 4), "cpu", torch.uint8)
        tau = torch.tensor([2.0, 10.0])
        w0 = torch.randn(2, 8, 4, 4)
        step = torch.compile(_documented_step, backend="inductor", fullgraph=True)
        results = []
        for fn in (_documented_step, step):
            torch.manual_seed(0)
            weight = w0.clone().requires_grad_()
            loss = fn(labels, tau, weight)
            loss.backward()
            results.append((loss.detach(), weight.grad))
        (loss_e, grad_e), (loss_c, grad_c) = results
        assert_close(loss_c, loss_e, rtol=1e-5, msg="loss")
        assert_close(grad_c, grad_e, rtol=1e-5, msg="grad")
        # Each compiled call draws a fresh state from the generator, as the eager wrapper does.
        with torch.no_grad():
            assert not torch.equal(step(labels, tau, w0), step(labels, tau, w0))
