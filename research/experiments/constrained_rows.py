"""Evaluate a finished run's models through the constrained decoder again (after a decoder
change), into the run's own eval folders; training is untouched. Then publish with
`benchmarks/efficacy.py --run RUN --run-evals --models sft+constrained,grpo+constrained --publish NAME`.

    python research/experiments/constrained_rows.py runs/demo-v2
"""
import sys
import time

from haiku_kit import stages

run = stages.open_run("auto", [], sys.argv[1], None, False)
for name, adapter in (("sft", run.paths.sft_adapter), ("grpo", run.paths.artifact("grpo_adapter"))):
    began = time.time()
    result = stages.evaluate_model(run, name, run.paths.data, adapter, constrained=True)
    print(f"{name} + constrained: good {result.metrics['good']:.3f} ({time.time() - began:.0f} s)",
          flush=True)
