"""Two CPU processes (gloo) train together: the gather's gradients and identical parameters."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from tests.models.helpers import random_state_dict, save_state_dict
from tests.training.test_trainer import tiny_config
from wildreid.data.synthetic import SynthConfig, generate_synthetic
from wildreid.training.distributed import (
    DistContext,
    average_gradients,
    gather_tensor,
    gather_with_grad,
    init_distributed,
    shutdown_distributed,
)
from wildreid.training.trainer import Trainer

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


def _worker(rank: int, port: int, data: str, weights: str, out: str) -> None:
    torch.set_num_threads(1)
    os.environ.update(
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(WORLD_SIZE),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    ctx = init_distributed("cpu")
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
