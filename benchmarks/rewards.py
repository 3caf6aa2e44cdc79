"""Time every registry reward on a GRPO batch of 64 completions, on CPU, against the reference.

The reference approach (as in axeld5/gemma_haiku, written out below): pyphen syllables and one
MiniLM call per completion, no caching, no batching. Ours: all rewards of the registry, called
one after another as TRL calls them, with the shared per-text memo, one batched embedding call
and the embedding cache. Models are loaded before timing; every timed batch has completions
never seen before (as in training), while topics repeat (G generations per prompt).

Targets: >= 10x faster than the reference; < 5% of a CPU GRPO step of the embedded model
(about 16 s, so < 0.8 s).

    python benchmarks/rewards.py [--batches 5] [--generations 4] [--threads 1] [--dtype bfloat16]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

CPU_GRPO_STEP_S = 16.0
BATCH = 64

TEMPLATES = [
    "{poem}",
    "Sure! Here's a haiku about {topic}:\n\n{poem}",
    "<think>Five, seven, five.</think>\n{poem}",
    "{poem}\nand one more line for luck",
    "Generate a haiku about the following topic: {topic}",
    "**{title}**\n\n{poem}\n\nI hope you enjoy it!",
    "{flat}",
    "",
]


def load_rows() -> list[dict]:
    try:
        from haiku_kit.data.sources import load_embedded

        rows = load_embedded()
    except Exception:  # noqa: BLE001 - the benchmark only needs some topics and poems
        rows = [
            {
                "topic": "autumn leaves",
                "haiku": "red leaves drift and fall\n"
                "the autumn wind carries them\nbare branches remain",
            }
        ]
    return rows


def make_batch(rows: list[dict], batch_index: int, generations: int) -> tuple[list, list, list]:
    """64 fresh completions: BATCH // generations prompts x `generations` each."""
    prompts, completions, topics = [], [], []
    for j in range(BATCH):
        row = rows[(batch_index * BATCH // generations + j // generations) % len(rows)]
        topic = row["topic"]
        poem = row["haiku"].replace("\n", f" {batch_index}-{j}\n", 1)  # never seen before
        text = TEMPLATES[j % len(TEMPLATES)].format(
            poem=poem, topic=topic, title=topic.title(), flat=poem.replace("\n", " / ")
        )
        prompts.append(
            [{"role": "user", "content": f"Generate a haiku about the following topic: {topic}"}]
        )
        completions.append([{"role": "assistant", "content": text}])
        topics.append(topic)
    return prompts, completions, topics


# --------------------------------------------------------------------------- the reference


class Reference:
    """pyphen + one MiniLM call per completion: the reference's dense reward, per sample."""

    def __init__(self, model):
        self.model = model

    @staticmethod
    def count_syllables(text: str, dic) -> int:
        return sum(dic.inserted(w).count("-") + 1 for w in text.strip().split())

    def is_haiku(self, text: str) -> bool:
        import pyphen

        dic = pyphen.Pyphen(lang="en")
        lines = [ln.strip() for ln in text.strip().split("\n") if ln.strip()]
        return len(lines) == 3 and [self.count_syllables(ln, dic) for ln in lines] == [5, 7, 5]

    def dense(self, prompts, completions, topics) -> list[float]:
        from sentence_transformers import util

        scores = []
        for completion, topic in zip(completions, topics):
            text = completion[0]["content"].strip()
            lines = [ln for ln in text.split("\n") if ln.strip()]
            score = (0 if len(lines) == 3 else -1) + int(self.is_haiku(text))
            emb = self.model.encode([text, topic], convert_to_tensor=True, show_progress_bar=False)
            score += float(util.pytorch_cos_sim(emb[0], emb[1])) - 0.5
            scores.append(score)
        return scores


# --------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=5)
    parser.add_argument("--generations", type=int, default=4)
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (1 is steadier on a busy machine)"
    )
    parser.add_argument("--dtype", default=None, help="encoder dtype for ours, e.g. bfloat16")
    args = parser.parse_args()

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)

    from haiku_kit.train import rewards as R
    from haiku_kit.verify.similarity import get_scorer

    rows = load_rows()
    reference = Reference(get_scorer(device="cpu").model)  # float32, as the reference
    R.configure_similarity(device="cpu", dtype=args.dtype)

    # Warm-up: first-call costs (lazy imports, syllable model load) are not per-batch costs.
    warm = make_batch(rows, 10_000, args.generations)
    reference.dense(*warm)
    for f in R.REGISTRY.values():
        f(warm[0], warm[1], topic=warm[2])

    ours, ref, ours_cpu, ref_cpu = [], [], [], []
    per_reward = {name: [] for name in R.REGISTRY}
    for b in range(args.batches):
        prompts, completions, topics = make_batch(rows, b, args.generations)
        start, cpu = time.perf_counter(), time.process_time()
        for name, f in R.REGISTRY.items():
            t0 = time.perf_counter()
            out = f(prompts, completions, topic=topics)
            per_reward[name].append(time.perf_counter() - t0)
            assert len(out) == BATCH and all(type(v) is float for v in out)
        ours.append(time.perf_counter() - start)
        ours_cpu.append(time.process_time() - cpu)

        start, cpu = time.perf_counter(), time.process_time()
        reference.dense(prompts, completions, topics)
        ref.append(time.perf_counter() - start)
        ref_cpu.append(time.process_time() - cpu)

    ours_s, ref_s = statistics.median(ours), statistics.median(ref)
    ours_c, ref_c = statistics.median(ours_cpu), statistics.median(ref_cpu)
    print(
        f"batch: {BATCH} completions ({BATCH // args.generations} prompts x "
        f"{args.generations}), {args.batches} batches, medians; torch threads "
        f"{torch.get_num_threads()}, load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
    )
    for name, times in per_reward.items():
        print(f"  {name:<22} {statistics.median(times) * 1000:8.1f} ms")
    print(
        f"ours, all {len(R.REGISTRY)} rewards ({args.dtype or 'float32'}): {ours_s * 1000:8.1f} ms"
    )
    print(f"reference (pyphen + 1 MiniLM call per completion, dense only): {ref_s * 1000:8.1f} ms")
    print(f"speed-up vs reference: {ref_s / ours_s:.1f}x wall (target >= 10x)")
    # CPU time is steadier than wall time when other processes share the cores.
    print(
        f"CPU time: ours {ours_c * 1000:.1f} ms, reference {ref_c * 1000:.1f} ms, "
        f"speed-up {ref_c / ours_c:.1f}x"
    )
    print(
        f"share of a {CPU_GRPO_STEP_S:.0f} s CPU GRPO step: "
        f"{100 * ours_s / CPU_GRPO_STEP_S:.2f}% (target < 5%, i.e. < 0.8 s)"
    )


if __name__ == "__main__":
    main()
