"""One process of the expert-parallel check (run by torchrun, or alone for the reference).

Every row of every batch is the same real sample, so each process's loss equals the one-process
loss over all rows; the capacity factor is high enough that no token is dropped, so routing does
not depend on how tokens are split over processes. Writes the per-step losses of rank 0 as JSON.

With MODE "mixed", SHARD is a comma-separated list and rank 0 trains on a sample with video while
rank 1 trains on one without: the processes then use different parameters, which is what real
shards do, and must still exchange gradients of the same sizes.

With MODE "uneven", rank r holds ROWS_PER_PROCESS + r rows, as packing and samples split over
rows give; the training loop's padding to the largest row count over the processes must let the
all-to-all run (MODE "uneven-unpadded" leaves the rows as they are, to show that it would not).

With RUN_DIR, the trained model is saved as ``microturn train`` saves it
(``RUN_DIR/checkpoints/step{STEPS}``), for loading outside DeepSpeed.

    python ep_worker.py SHARD OUT.json EP_SIZE ROWS_PER_PROCESS STEPS [same|mixed] [RUN_DIR]
"""

from __future__ import annotations

import json
import sys

import torch


def main() -> None:
    shard, out_path, ep_size, rows, steps = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), \
        int(sys.argv[5])
    mode = sys.argv[6] if len(sys.argv) > 6 else "same"
    run_dir = sys.argv[7] if len(sys.argv) > 7 else None
    # From its defining module: webdataset's own __init__.pyi imports it without re-exporting it.
    from webdataset.compat import WebDataset

    from microturn.schemas.sample import decode_sample
    from microturn.trainer import checkpoint
    from microturn.trainer.batch import build_sequence, collate
    from microturn.trainer.engine import build_engine, init_distributed, shutdown_distributed
    from microturn.trainer.loop import CKPT_DIR, _max_rows, pad_batch
    from microturn.trainer.model import InteractionModel
    from microturn.trainer.tokenizer import ByteTokenizer
    from microturn.trainer.train_config import as_dict, load_named

    rank, world = init_distributed()
    cfg = load_named("tiny-cpu", ["model.capacity_factor=16.0", "model.min_capacity=0", "train.grad_clip=0.0",
                                  "train.zero_stage=2", f"train.ep_size={ep_size}", f"train.micro_batch={rows}",
                                  "train.warmup_steps=1"])
    # Every process reads the same sample on purpose (no node split), or in "mixed" mode the first
    # sample with video (rank 0) or without (other ranks).
    samples = (decode_sample(raw) for raw in WebDataset(shard.split(","), shardshuffle=False,
                                                        nodesplitter=lambda urls: urls))
    if mode == "mixed":
        sample = next(s for s in samples if (s["video_KPFHWC"] is not None) == (rank == 0))
    else:
        sample = next(samples)
    seq = build_sequence(sample, ByteTokenizer())
    # Rows of exactly max_len, as the training loop gives expert parallelism (equal token counts).
    if mode.startswith("uneven"):
        batch = collate([seq] * (rows + rank), max_len=cfg.train.max_len, pack=False)
        rows_all = _max_rows(batch, torch.device("cpu")) if mode == "uneven" else None
        batch = pad_batch(batch, cfg.train.max_len, rows=rows_all)
    else:
        batch = pad_batch(collate([seq] * rows, max_len=cfg.train.max_len, pack=False), cfg.train.max_len)
    model = InteractionModel(cfg.model, ep_size=ep_size, seed=0)
    engine = build_engine(model, cfg.train, world_size=world)
    losses = []
    for step in range(steps):
        gen = torch.Generator().manual_seed(step)  # the same flow noise in every process and run
        out = engine(batch, generator=gen)
        engine.backward(out.loss)
        engine.step()
        losses.append(float(out.loss.detach()))
    if run_dir is not None:
        checkpoint.save(engine, f"{run_dir}/{CKPT_DIR}", f"step{steps}", client_state={"step": steps},
                        run_config=as_dict(cfg), rank=rank)
    if rank == 0:
        with open(out_path, "w") as f:
            json.dump({"world": world, "losses": losses, "video": sample["video_KPFHWC"] is not None,
                       "rows": int(batch["kind_BL"].shape[0])}, f)
    shutdown_distributed()


if __name__ == "__main__":
    main()
