"""Two CPU processes (gloo) train together: the gather's gradients, identical parameters, and
the gradient of a DDP step equal to one process's on the global batch."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from tests.models.helpers import random_state_dict, save_state_dict
from tests.training.test_trainer import tiny_config
from wildreid.config import load_config
from wildreid.data.synthetic import SynthConfig, generate_synthetic
from wildreid.training.components import LossPair
from wildreid.training.config import TrainConfig
from wildreid.training.distributed import (
    DistContext,
    average_gradients,
    gather_tensor,
    gather_with_grad,
    init_distributed,
    shutdown_distributed,
)
from wildreid.training.trainer import Trainer

LOSS_RECIPES = {
    # The BNNeck baseline: cross-entropy and centres on each rank's batch, triplet mining
    # on the gathered global batch.
    "bnneck": [
        {"name": "softmax_ce", "params": {"label_smoothing": 0.1}},
        {"name": "triplet", "params": {"margin": 0.3, "mining": "hard"}},
        {"name": "center", "weight": 0.0005},
    ],
    "arcface": [{"name": "arcface"}, {"name": "triplet", "params": {"mining": "hard"}}],
}

WORLD_SIZE = 2


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _check_collectives(ctx: DistContext) -> dict[str, torch.Tensor]:
    """Gather with gradient over ranks holding 2 and 3 rows; average gradients."""
    rows = 2 + ctx.rank
    x = torch.full((rows, 2), float(ctx.rank + 1), requires_grad=True)
    gathered = gather_with_grad(ctx, x)
    weights = torch.arange(10, dtype=torch.float32).view(5, 2)
    (gathered * weights).sum().backward()
    labels = gather_tensor(ctx, torch.full((rows,), ctx.rank))
    p = torch.nn.Parameter(torch.zeros(2))
    p.grad = torch.full((2,), float(ctx.rank))  # 0 and 1: the average is 0.5
    q = torch.nn.Parameter(torch.zeros(1))  # no gradient anywhere: stays None
    average_gradients(ctx, [p, q])
    assert q.grad is None
    assert x.grad is not None and p.grad is not None
    return {"gathered": gathered.detach(), "grad": x.grad, "labels": labels, "avg": p.grad}


def _join(rank: int, port: int) -> DistContext:
    """Join the two-process group as torchrun would (one thread per process)."""
    torch.set_num_threads(1)
    os.environ.update(
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(WORLD_SIZE),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    return init_distributed("cpu")


def _worker(rank: int, port: int, data: str, weights: str, out: str) -> None:
    ctx = _join(rank, port)
    try:
        checks = _check_collectives(ctx)
    finally:
        shutdown_distributed(ctx)
    config = tiny_config(
        Path(data), f"model.weights={weights}", schedule={"epochs": 2, "warmup_epochs": 0}
    )
    trainer = Trainer(config, out_dir=Path(out) / "run")
    trainer.run()
    assert trainer.net is not None and trainer.losses is not None
    torch.save(
        {
            "net": trainer.net.state_dict(),
            "losses": trainer.losses.state_dict(),
            "checks": checks,
        },
        Path(out) / f"rank{rank}.pt",
    )


def test_two_processes_train_identical_parameters(tmp_path: Path) -> None:
    data = tmp_path / "data"
    generate_synthetic(data, config=SynthConfig(identities=6, size_px=32), workers=1)
    weights = save_state_dict(random_state_dict("test_efficientnet", seed=5), tmp_path / "w.pt")
    mp.spawn(
        _worker,
        args=(_free_port(), str(data), str(weights), str(tmp_path)),
        nprocs=WORLD_SIZE,
        join=True,
    )
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(WORLD_SIZE)]

    # The gather: rows of rank 0 (value 1) then rank 1 (value 2); each rank's gradient is the
    # sum over the ranks' (identical) losses of its slice: world_size * weights.
    expected = torch.tensor([[1.0, 1.0]] * 2 + [[2.0, 2.0]] * 3)
    weights_grid = torch.arange(10, dtype=torch.float32).view(5, 2)
    for rank, saved in enumerate(ranks):
        checks = saved["checks"]
        torch.testing.assert_close(checks["gathered"], expected)
        torch.testing.assert_close(checks["labels"], torch.tensor([0, 0, 1, 1, 1]))
        rows = slice(0, 2) if rank == 0 else slice(2, 5)
        torch.testing.assert_close(checks["grad"], WORLD_SIZE * weights_grid[rows])
        torch.testing.assert_close(checks["avg"], torch.full((2,), 0.5))

    # Training: both ranks end with the same network and loss parameters ...
    torch.testing.assert_close(ranks[0]["net"], ranks[1]["net"], rtol=0, atol=0)
    torch.testing.assert_close(ranks[0]["losses"], ranks[1]["losses"], rtol=0, atol=0)
    # ... which moved away from the base weights; only rank 0 wrote the run folder.
    base = random_state_dict("test_efficientnet", seed=5)
    trained = ranks[0]["net"]
    key = "backbone.conv_stem.weight"
    with pytest.raises(AssertionError):
        torch.testing.assert_close(trained[key], base["conv_stem.weight"])
    run = tmp_path / "run"
    assert (run / "model.pt").is_file() and (run / "last.pt").is_file()
    state = torch.load(run / "last.pt", weights_only=True)
    assert len(state["rng"]) == WORLD_SIZE
    torch.testing.assert_close(state["net"], {k: v.contiguous() for k, v in trained.items()})


def _global_batch(recipe: str) -> tuple[torch.Tensor, torch.Tensor, torch.nn.Module, LossPair]:
    """8 inputs of 4 identities (2 each), a small network and the recipe's losses, all seeded."""
    torch.manual_seed(0)
    inputs = torch.randn(8, 12)
    labels = torch.tensor([0, 1, 2, 3, 0, 1, 2, 3])  # every identity on both ranks
    net = torch.nn.Sequential(torch.nn.Linear(12, 16), torch.nn.Tanh(), torch.nn.Linear(16, 16))
    config = load_config(
        {
            "data": {"metadata": "unused.csv", "split": "unused.csv"},
            "model": {"base": "test_efficientnet", "embedding_dim": 16},
            "losses": LOSS_RECIPES[recipe],
        },
        TrainConfig,
    )
    losses = LossPair(config, num_classes=4, embedding_dim=16, class_counts=[2, 2, 2, 2])
    return inputs, labels, net, losses


def _gradients(
    ctx: DistContext,
    net: torch.nn.Module,
    losses: LossPair,
    inputs: torch.Tensor,
    labels: torch.Tensor,
) -> dict[str, torch.Tensor]:
    """One training step's gradients as the trainer takes them (LossPair.compute, DDP's
    average for the network, average_gradients for the loss parameters)."""
    model = net
    if ctx.world_size > 1:
        model = torch.nn.parallel.DistributedDataParallel(net)
    features = model(inputs)
    out = losses.compute(ctx, features, features, labels)
    out.total.backward()
    average_gradients(ctx, losses.parameters())
    named = [*(("net." + k, p) for k, p in net.named_parameters())]
    named += [("losses." + k, p) for k, p in losses.named_parameters()]
    return {k: p.grad.clone() for k, p in named if p.grad is not None}


def _step_worker(rank: int, port: int, out: str) -> None:
    ctx = _join(rank, port)
    rows = slice(4 * rank, 4 * rank + 4)  # rank 0 the first half, rank 1 the second
    try:
        for recipe in LOSS_RECIPES:
            inputs, labels, net, losses = _global_batch(recipe)
            grads = _gradients(ctx, net, losses, inputs[rows], labels[rows])
            torch.save(grads, Path(out) / f"{recipe}-{rank}.pt")
    finally:
        shutdown_distributed(ctx)


def test_a_ddp_step_has_the_gradient_of_one_process_on_the_global_batch(tmp_path: Path) -> None:
    mp.spawn(_step_worker, args=(_free_port(), str(tmp_path)), nprocs=WORLD_SIZE, join=True)
    single = DistContext(rank=0, world_size=1, device=torch.device("cpu"))
    for recipe in LOSS_RECIPES:
        inputs, labels, net, losses = _global_batch(recipe)
        expected = _gradients(single, net, losses, inputs, labels)
        assert any(name.startswith("losses.") for name in expected)  # class weights, centres
        for rank in range(WORLD_SIZE):
            got = torch.load(tmp_path / f"{recipe}-{rank}.pt", weights_only=True)
            assert sorted(got) == sorted(expected)
            for name, grad in expected.items():
                assert grad.abs().sum() > 0, name  # every loss term reaches every parameter
                torch.testing.assert_close(
                    got[name], grad, rtol=1e-5, atol=1e-6, msg=f"{recipe}: {name}"
                )
