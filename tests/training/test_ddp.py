"""DDP on CPU: 2 gloo processes on 127.0.0.1 must match a single-process run with the same global batch.

Shard k of a step's global batch has its own noise stream; rank r with accum_steps=1 holds shard r,
so 2 ranks equal one process with accum_steps=2 (same records, same noise) up to float summation order.
"""
import os
import socket
import sys

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

sys.path.insert(0, os.path.dirname(__file__))

STEPS = 6


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _setup(accum: int, ckpt_dir=None):
    from solar_data import solar_codes
    from gnsm.core import Schedule
    from gnsm.data import TabularData
    from gnsm.models import TabularResMLP
    from gnsm.training import Trainer, TrainConfig

    codes, sizes = solar_codes(120)
    num = codes[:, :2].float() * 0.5
    torch.manual_seed(0)
    model = TabularResMLP(sizes, 2, width=32, depth=2, emb_dim=16)
    cfg = TrainConfig(steps=STEPS, batch_size=32, accum_steps=accum, warmup_steps=1, val_every=3, log_every=2,
                      progress=False, seed=5, checkpoint_dir=ckpt_dir, lr=3e-3)
    trainer = Trainer(model, Schedule(n=5), cfg, sizes, num_numerical=2)
    return trainer, TabularData(codes[:100], num[:100]), TabularData(codes[100:], num[100:])


def _worker(rank, world, port, out_dir):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), GNSM_NUM_THREADS="1")
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        trainer, train, val = _setup(accum=1, ckpt_dir=os.path.join(out_dir, "ckpt"))
        res = trainer.fit(train, val)
        torch.save({"history": res.history, "val": res.val_history,
                    "model": trainer.model.state_dict()}, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_ddp_two_ranks_equal_single_process(tmp_path):
    from solar_data import SOLAR, solar_path

    if solar_path() is None:
        pytest.skip(f"data file {SOLAR} not found (set GNSM_DATA_DIR or provide shared/data)")
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    # Rank 0 alone wrote the checkpoints; both ranks hold the same reduced metrics and weights.
    assert sorted(os.listdir(tmp_path / "ckpt")) == ["best.pt", "last.pt"]
    assert r0["history"] == r1["history"] and r0["val"] == r1["val"]
    for a, b in zip(r0["model"].values(), r1["model"].values()):
        assert torch.equal(a, b)

    trainer, train, val = _setup(accum=2)
    res = trainer.fit(train, val)
    assert len(res.history) == STEPS
    torch.testing.assert_close(torch.tensor(r0["history"]), torch.tensor(res.history), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(torch.tensor([v for _, v in r0["val"]]),
                               torch.tensor([v for _, v in res.val_history]), rtol=1e-4, atol=1e-5)
    for name, p in trainer.model.state_dict().items():
        torch.testing.assert_close(r0["model"][name], p, rtol=1e-4, atol=1e-5)
