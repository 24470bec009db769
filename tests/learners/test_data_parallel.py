"""Data parallelism over torch.distributed (gloo): N ranks learn one model."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from ranks import learn_as_rank, learned_tensors, positions_of
from safetensors.torch import load_file

from learners.checks import small_stream
from learners.llm import LLMLearner
from schemas.learner_config import LLMConfig


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
def test_two_ranks_learn_what_one_process_learns_on_the_global_batches(
    tiny_decoder: Path, tmp_path: Path
) -> None:
    config = LLMConfig(model=str(tiny_decoder), seed=3, max_grad_items=24)
    events = small_stream(200, 30, 120, 5)
    # three steps: uneven shares, then one rank with nothing to learn (it joins anyway)
    shares = [
        [events[0:40], events[40:64]],
        [events[64:90], events[90:150]],
        [events[150:200], []],
    ]
    port = free_port()
    ctx = mp.get_context("spawn")
    ranks = [
        ctx.Process(
            target=learn_as_rank,
            args=(r, 2, port, config, [step[r] for step in shares], tmp_path),
        )
        for r in range(2)
    ]
    for p in ranks:
        p.start()
    for p in ranks:
        p.join(timeout=300)
    assert [p.exitcode for p in ranks] == [0, 0]

    single = LLMLearner(config)
    for k, step in enumerate(shares):
        single.learn_many(
            step[0] + step[1], positions_of(k, 0, len(step[0])) + positions_of(k, 1, len(step[1]))
        )
    expected = learned_tensors(single)
    initial = learned_tensors(LLMLearner(config))
    assert not torch.equal(expected["adapter.1"], initial["adapter.1"])  # the steps moved it
    for r in range(2):
        got = load_file(str(tmp_path / f"rank{r}.safetensors"))
        assert got.pop("checks").tolist() == [True, False]  # in step; then one rank parted
        if r == 1:
            got["adapter.0"] -= 1e-3
        assert got.keys() == expected.keys()
        for name, tensor in expected.items():
            torch.testing.assert_close(got[name], tensor, atol=1e-5, rtol=1e-5, msg=name)
