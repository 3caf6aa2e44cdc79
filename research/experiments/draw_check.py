"""E14: is a change in the demo's constrained row the candidate draw or the seed? The good share of one
run's SFT adapter through the constrained decoder, on its own eval split, with the candidate draw on and
off, for eval seeds 1 and 2 (research/log.md E14).

    python research/experiments/draw_check.py RUN      # e.g. runs/demo-v2
"""
import dataclasses
import sys
import time

from haiku_kit import stages
from haiku_kit.data.splits import load_eval_data
from haiku_kit.generate import sampling

run = stages.open_run("auto", [], sys.argv[1] if len(sys.argv) > 1 else "runs/demo", None, False)
rows, train = load_eval_data(str(run.paths.data))
rows = rows[: run.cfg.eval.n_prompts]
for seed in (1, 2):
    for draw in (True, False):
        sampling.uninstall_fast_topk_topp()
        sampling.install_fast_topk_topp(candidate_draw=draw)
        cfg = dataclasses.replace(run.cfg, eval=dataclasses.replace(run.cfg.eval, seed=seed))
        t = time.time()
        r = stages.evaluate_rows(cfg, "sft+c", rows, train, run.paths.sft_adapter, constrained=True,
                                 candidates=cfg.eval.candidates)
        print(f"seed {seed} candidate_draw={draw}: good {r.metrics['good']:.3f} fluent {r.metrics['fluent']:.3f} "
              f"({time.time()-t:.0f} s)", flush=True)
