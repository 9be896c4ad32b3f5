import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils.flop_counter import FlopCounterMode

from gaptheory.flops import (
    best_subset_flops,
    FlopCount,
    dictionary_step_flops,
    encoder_flops,
    fista_flops,
    matmul_flops,
    training_step_flops,
)
from gaptheory.instances import make_instance
from gaptheory.solvers import best_subset, lasso


def _counted(function) -> int:
    with FlopCounterMode(display=False) as counter:
        function()
    return counter.get_total_flops()


def _affine_stack(widths, generator):
    params = []
    for a, b in zip(widths[:-1], widths[1:]):
        params += [torch.randn(a, b, generator=generator).requires_grad_(), torch.zeros(b, requires_grad=True)]
    return params


def _forward(X, params):
    H = X
    for i in range(0, len(params), 2):
        H = torch.relu(H @ params[i] + params[i + 1])
    return H


@settings(max_examples=5, deadline=None)
@given(
    B=st.integers(1, 64),
    hidden=st.lists(st.integers(1, 12), max_size=2),
    M=st.integers(1, 10),
    N=st.integers(1, 20),
    decoder=st.sampled_from(["learned", "fixed", "none"]),
)
def test_training_step_matmul_flops_match_torch_flop_counter(B, hidden, M, N, decoder):
    generator = torch.Generator().manual_seed(0)
    widths = (M, *hidden, N)
    params = _affine_stack(widths, generator)
    X = torch.randn(B, M, generator=generator)
    W_dec = torch.randn(N, M, generator=generator).requires_grad_(decoder == "learned")
    Z_true = torch.randn(B, N, generator=generator)

    def step():
        Z = _forward(X, params)
        if decoder == "none":
            loss = ((Z - Z_true) ** 2).sum()
        else:
            loss = ((Z @ W_dec - X) ** 2).sum() + Z.abs().sum()
        loss.backward()

    analytic = training_step_flops(B, widths, decoder=decoder)
    assert analytic.matmul == _counted(step)
    assert analytic.elementwise > 0


@pytest.mark.parametrize("widths", [(8, 16), (8, 32, 16), (8, 256, 256, 16)])
def test_encoder_flops_match_torch_flop_counter_on_inference(widths):
    generator = torch.Generator().manual_seed(1)
    params = [p.detach() for p in _affine_stack(widths, generator)]
    X = torch.randn(100, widths[0], generator=generator)
    assert encoder_flops(100, widths).matmul == _counted(lambda: _forward(X, params))


def test_dictionary_step_matmul_flops_match_torch_flop_counter():
    generator = torch.Generator().manual_seed(2)
    Z, X = torch.randn(50, 16, generator=generator), torch.randn(50, 8, generator=generator)
    W_dec = torch.randn(16, 8, generator=generator, requires_grad=True)
    counted = _counted(lambda: ((Z @ W_dec - X) ** 2).sum().backward())
    assert dictionary_step_flops(50, N=16, M=8).matmul == counted


def test_fista_flops_match_torch_flop_counter_on_the_actual_solver():
    inst = make_instance(16, 8, 3, 40, seed=0)
    with FlopCounterMode(display=False) as counter:
        result = lasso(inst.X, inst.D, 0.05, nonnegative=True, method="fista", return_info=True, device="cpu")
    analytic = fista_flops(result.n_iter, N=16, M=8)
    # The solver batches rows, so the counter sees the same products as the per-row sum.
    assert analytic.matmul == counter.get_total_flops()


def test_best_subset_flops_match_torch_flop_counter_on_the_actual_solver():
    inst = make_instance(10, 6, 3, 30, seed=1)
    with FlopCounterMode(display=False) as counter:
        best_subset(inst.X, inst.D, 3, nonnegative=True, device="cpu")
    # For size-1 supports torch lowers the einsum to an elementwise multiply, which the
    # counter does not see: 2 s^2 = 2 FLOPs per row and atom.
    assert best_subset_flops(30, N=10, M=6, K=3).matmul == counter.get_total_flops() + 2 * 30 * 10


def test_best_subset_flops_grow_with_the_number_of_supports():
    assert best_subset_flops(1, N=16, M=8, K=3).total < best_subset_flops(1, N=32, M=8, K=3).total < best_subset_flops(1, N=32, M=8, K=4).total


def test_fista_flops_grow_with_the_iterations_actually_used():
    few, many = fista_flops([10, 10], N=16, M=8), fista_flops([10, 500], N=16, M=8)
    assert many.total > few.total
    assert fista_flops([], N=16, M=8).matmul == matmul_flops(16, 8, 16)


def test_batch_size_is_counted_once():
    one, many = training_step_flops(1, (8, 16)), training_step_flops(1024, (8, 16))
    learned_parameters = 8 * 16 + 16 + 16 * 8 + 8
    per_sample = one.matmul
    assert many.matmul == 1024 * per_sample
    assert many.elementwise < 1024 * one.elementwise  # optimizer work does not scale with B
    assert one.elementwise > learned_parameters


def test_flopcount_adds_and_scales():
    count = FlopCount(3, 4) + FlopCount(1, 1) * 2
    assert (count.matmul, count.elementwise, count.total) == (5, 6, 11)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: encoder_flops(4, (8,)), "at least"),
        (lambda: encoder_flops(4, (8, 16), activation="gelu"), "activation"),
        (lambda: training_step_flops(4, (8, 16), decoder="tied"), "decoder"),
        (lambda: fista_flops([-1], N=16, M=8), "n_iter"),
        (lambda: matmul_flops(-1, 2, 3), "a=-1"),
    ],
)
def test_flop_functions_reject_bad_arguments(call, match):
    with pytest.raises(ValueError, match=match):
        call()
