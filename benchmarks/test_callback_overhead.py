"""The Hugging Face ``StabilityCallback``'s cost inside ``Trainer.train()``, as a ratio to the
same Trainer without it.

The goal (issue 26): with ``every=10`` a run with the callback takes at most 1.05x the plain
run. The model is the watch benchmark's GPT-2 (hidden 128, 4 layers of 4 heads, vocabulary
2048, batch 8 x 64 tokens, dropout on), trained by a real ``Trainer`` on CPU (AdamW, no
logging, no checkpoints, no report): one timed block is one ``trainer.train()`` of
``STEPS`` optimizer steps, so the Trainer's own start-up (optimizer, dataloader) is in both
sides alike, as in a user's run. The callback writes no report page here (``report=None``):
that is a one-off cost at the end of training, not a per-step one.

Blocks alternate (plain, watched, watched, plain, ...; ``measure.interleave``) and the goal
counts as missed only when the watched rounds are significantly slower than the plain ones
scaled by the goal (one-sided Mann-Whitney, ``meets_goal``), as in the watch's benchmark.
"""

from typing import Any

import pytest
import torch

from stability.measure.interleave import RoundRunner, interleave
from stability.measure.stats import meets_goal
from stability.measure.threads import threads as intra_op_threads
from stability.measure.timer import Timer

GPT2 = {"vocab_size": 2048, "n_positions": 64, "n_embd": 128, "n_layer": 4, "n_head": 4}
BATCH, TOKENS = 8, 64
STEPS = 20  # optimizer steps per timed block: two recording steps at every=10
GOAL_EVERY = 10
OVERHEAD_GOAL = 1.05
RATIO_ROUNDS = 9
QUICK_ROUNDS = 5


class Tokens(torch.utils.data.Dataset[dict[str, torch.Tensor]]):
    """``BATCH * STEPS`` fixed rows of ``TOKENS`` ids (labels = ids)."""

    def __len__(self) -> int:
        return BATCH * STEPS

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        gen = torch.Generator().manual_seed(i)
        ids = torch.randint(0, GPT2["vocab_size"], (TOKENS,), generator=gen)
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids}


def trainer(tmp: str, every: int | None) -> Any:
    """A Trainer on the GPT-2; with the callback (attached first) when ``every`` is set."""
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("accelerate")
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(
        transformers.GPT2Config(**GPT2, bos_token_id=0, eos_token_id=0)
    )
    args = transformers.TrainingArguments(
        output_dir=tmp, max_steps=STEPS, per_device_train_batch_size=BATCH, report_to="none",
        use_cpu=True, logging_strategy="no", save_strategy="no", disable_tqdm=True, seed=0,
        dataloader_num_workers=0,
    )  # fmt: skip
    run = transformers.Trainer(model=model, args=args, train_dataset=Tokens())
    if every is not None:
        from stability.integrations.hf import StabilityCallback

        StabilityCallback(every=every, report=None).attach(run)
    return run


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_hf_callback_overhead(
    threads: int, pedantic: RoundRunner, benchmark: Any, request: pytest.FixtureRequest,
    tmp_path: Any,
) -> None:  # fmt: skip
    """The interleaved ratio Trainer-with-callback / plain Trainer at every=10."""
    rounds = QUICK_ROUNDS if request.config.getoption("quick") else RATIO_ROUNDS
    plain, watched = (
        trainer(str(tmp_path / "plain"), None),
        trainer(str(tmp_path / "w"), GOAL_EVERY),
    )
    with intra_op_threads(threads):
        a = Timer(plain.train, "cpu", warmup=1, iterations=1)
        b = Timer(watched.train, "cpu", warmup=1, iterations=1)
        base, with_cb = interleave(a, b, rounds, runner=pedantic)
    ratio = with_cb.median / base.median
    callback = watched.callback_handler.callbacks[0]
    assert callback.watch is not None and callback.watch.history  # it really recorded
    assert callback.watch.first is None
    met, p_over = meets_goal(with_cb.samples, base.samples, OVERHEAD_GOAL)
    benchmark.extra_info.update(
        {
            "kind": "hf callback overhead", "model": "gpt2", "every": GOAL_EVERY,
            "steps_per_block": STEPS, "batch_size": BATCH, "device": "cpu",
            "samples_per_s": BATCH * STEPS / base.median, "median_s": base.median,
            "dtype": "float32", "threads": threads, "overhead_ratio": ratio,
            "overhead_goal": OVERHEAD_GOAL, "goal_met": met, "overhead_p_over_goal": p_over,
            "overhead_rounds": rounds, "ratio_plain_seconds": list(base.samples),
            "ratio_watched_seconds": list(with_cb.samples),
        }
    )  # fmt: skip
    print(
        f"hf callback every {GOAL_EVERY}: {ratio:.3f}x the plain Trainer (p over goal {p_over:.2g})"
    )
    assert met, (
        f"StabilityCallback every {GOAL_EVERY}: a Trainer run takes {ratio:.3f}x the plain one, "
        f"goal <= {OVERHEAD_GOAL:.2f}x (over it with p={p_over:.2g})"
    )
