"""The values of report/template.md's slots, one function per section, each computed from the run's files.

Numbers are decided in report/findings.py (verdicts) and in the small helpers here (tables, corpus sizes, sample
statistics); the functions ending in ``_values`` only gather them into ``{slot: text}``.
"""
from __future__ import annotations

import json
import math
import re
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import findings as fd

WORD = re.compile(r"[A-Za-z]+")


class ReportInputError(RuntimeError):
    """A run file that is missing or unreadable: one line naming it and the stage that writes it."""


def read_json(path: Path, stage: str):
    if not path.is_file():
        raise ReportInputError(f"missing {path} (written by pipeline stage '{stage}'; run "
                               f"`python report/pipeline.py --only {stage}`)")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ReportInputError(f"{path}: not valid JSON ({e})") from None


def read_jsonl(path: Path, stage: str) -> list[dict]:
    if not path.is_file():
        raise ReportInputError(f"missing {path} (written by pipeline stage '{stage}')")
    rows = []
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise ReportInputError(f"{path}:{i}: not valid JSON ({e})") from None
    return rows


# ---------------------------------------------------------------------------------------------------- formatting

def md_table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def fmt(x, nd: int = 4) -> str:
    if x is None:
        return "–"
    if isinstance(x, bool):
        return str(x)
    if isinstance(x, float):
        return f"{x:.{nd}f}" if math.isfinite(x) else str(x)
    return f"{x:,}" if isinstance(x, int) else str(x)


def verdict_word(ok: bool) -> str:
    return "**Reproduced**" if ok else "**Not reproduced at this scale**"


def commands_of(pipeline: list[dict]) -> dict[str, dict]:
    """Latest successful record of each stage."""
    return {r["stage"]: r for r in pipeline if r.get("returncode") == 0}


def cmd_note(cmds: dict, stage: str) -> str:
    r = cmds.get(stage)
    return f"`{r['command']}` ({r['seconds']:.0f} s)" if r else f"(stage '{stage}' not recorded)"


# ---------------------------------------------------------------------------------------------------- header

PIPELINE_STORY = """`bash report/run_pipeline.sh` sets up the environment, then runs the stages below in order, each one a
folder's own script; they meet only through the files they write under the run folder. **bpe** trains the homework's
tokenizer (manual.txt, vocabulary 1024) and compares it on the homework's paragraphs. **corpus** partitions Alpaca
(`finetune/partition.py`): one fixed finetuning subset (train/eval), held-out instructions for the generations, and
the responses of every other record as pretraining text. **tokenizer** trains a GPT-2-pattern BPE on the pretraining
corpus (WikiText-2 + those responses), **data** shards that corpus with it, **pretrain** trains a small GPT on it and
exports it, **baselines** scores the export and unigram / bigram count tables on every validation token, **sweep**
finetunes the export (LoRA ranks 1-32 and full finetuning, one rank again with a second seed), **generate** answers
the held-out instructions with the base, full and LoRA models, and **report** writes this file. A stage whose output
exists is skipped on a re-run (`--redo STAGE` reruns it)."""


def stage_rows(cmds: dict, report_seconds: float | None) -> list[list]:
    rows = [[name, f"`{r['command']}`", f"{r['seconds']:.0f}",
             " / ".join(f"{x:.1f}" for x in r.get("load_avg", [])[:1]) or "–"] for name, r in cmds.items()]
    if report_seconds is not None:
        rows.append(["report", "`python report/build_report.py` (this build)", f"{report_seconds:.0f}", "–"])
    return rows


def header_values(run: Path, cmds: dict, t0: float | None, root: Path) -> dict[str, str]:
    report_s = time.time() - t0 if t0 is not None else None
    total = sum(r["seconds"] for r in cmds.values()) + (report_s or 0)
    loads = [r["load_avg"][0] for r in cmds.values() if r.get("load_avg")]
    preset = next((r["preset"] for r in cmds.values() if r.get("preset")), "cpu")
    scale = "GPU" if preset == "gpu" else "CPU"
    return {
        "scale": scale, "run_dir": str(run.relative_to(root)) if run.is_relative_to(root) else str(run),
        "how": ("`bash report/run_pipeline.sh` (2-core CPU scale)" if preset == "cpu"
                else f"`python report/pipeline.py --preset {preset}` ({preset} preset, {scale} scale)"),
        "pipeline_story": PIPELINE_STORY, "total_s": f"{total:.0f}", "total_min": f"{total / 60:.1f}",
        "load_note": (f"(1-minute, at each stage's end) {min(loads):.1f}–{max(loads):.1f} on this machine"
                      if loads else "not recorded"),
        "stage_table": md_table(["stage", "command", "wall s", "load"], stage_rows(cmds, report_s)),
    }


# ---------------------------------------------------------------------------------------------------- bpe

def bpe_table(s: dict) -> str:
    comp = s["comparison"]
    published = s.get("homework", {}).get("published", {})
    rows = [[lang.capitalize(), comp[lang]["chars"], comp[lang]["ours"], comp[lang]["gpt2"],
             fmt(published.get("ours", {}).get(lang, comp[lang].get("homework"))),
             fmt(published.get("gpt2", {}).get(lang))] for lang in ("english", "chinese")]
    return md_table(["paragraph", "chars", "ours", "GPT-2 (tiktoken)", "homework: its tokenizer",
                     "homework: GPT-2"], rows)


def bpe_why(s: dict) -> str:
    """The measured reasons, from bpe's re-run of the homework's tokenizer (summary.json "homework")."""
    h = s.get("homework")
    if not h:
        return "Not measured (bpe/summary.json has no homework re-run)."
    a, m, eff = h["alphabet"], h["merges"], h["effects"]
    missing = h["missing_bytes"]["english"]
    chars = ", ".join(f"`{c}` ×{n}" for c, n in missing["chars"].items()) or "none"
    effects = "; ".join(f"{name.replace('_', ' ')} {v['english']:+d} English / {v['chinese']:+d} Chinese"
                        for name, v in eff.items())
    return (f"Its vocabulary started from the {a['size']} byte values present in manual.txt, not all 256, so its first "
            f"tokens are {', '.join(f'`{t}`' for t in a['first_tokens'])} (as published: "
            f"{a['first_tokens_match_published']}), and its 1024 ids held {m['homework']} merges where ours hold "
            f"{m['ours']} (first {m['same_leading_merges']} merges identical, {m['shared_tokens']} tokens shared). "
            f"The English paragraph has {missing['bytes']} bytes outside that alphabet ({chars}), which its encoder "
            f"dropped. Re-running it reproduces its published counts: **{h['reproduces_published']}**. Effect of each "
            f"difference on the token counts: {effects}.")


def bpe_values(run: Path, cmds: dict) -> dict[str, str]:
    s = read_json(run / "bpe/summary.json", "bpe")
    show = lambda pairs: ", ".join(f"{i}:`{str(t).replace('|', '/').replace(' ', '␣')}`" for i, t in pairs)  # noqa
    variants = s.get("homework", {}).get("variants", [])
    return {
        "bpe_cmd": cmd_note(cmds, "bpe"), "bpe_vocab": fmt(s["vocab_size"]), "bpe_pattern": s["pattern"],
        "bpe_bytes": fmt(s["corpus_bytes"]), "bpe_train_s": f"{s['train_seconds']:.2f}",
        "bpe_roundtrip": "exact" if s["roundtrip_ok"] else "FAILED", "bpe_tokens": fmt(s["n_tokens"]),
        "bpe_bpt": f"{s['bytes_per_token']:.2f}", "bpe_first": show(s["first_tokens"]),
        "bpe_last": show(s["last_tokens"]), "bpe_table": bpe_table(s), "bpe_why": bpe_why(s),
        "bpe_variants": md_table(["variant", "English", "Chinese", "what"],
                                 [[f"`{v['name']}`", v["english"], v["chinese"], v["what"]] for v in variants])
        if variants else "",
    }


# ---------------------------------------------------------------------------------------------------- corpus

def source_rows(meta: dict, split: dict | None) -> list[list]:
    """One row per pretraining source file: name, bytes, records (Alpaca responses, or WikiText articles/lines)."""
    rows = []
    for src in meta.get("sources", []):
        path = Path(src)
        if not path.is_file():
            rows.append([f"`{src}`", "–", "–"])
            continue
        if split and path.name == split["pretrain"]["file"]:
            what = f"{split['pretrain']['records']:,} Alpaca responses"
        else:
            lines = path.read_text(encoding="utf-8").splitlines()
            articles = sum(1 for ln in lines if re.fullmatch(r" = [^=].* = ", ln))
            what = f"{articles:,} articles, {len(lines):,} lines"
        rows.append([f"`{path.name}`", f"{path.stat().st_size:,}", what])
    return rows


def corpus_story(split: dict | None) -> str:
    if not split:
        return "The pretraining data set named in the shards' meta.json (no Alpaca partition in this run)."
    c, left = split["counts"], split["pretrain"]["left_out"]
    return (f"Pretraining reads English prose: WikiText-2's validation split (the tokenized variant, rare words as "
            f"`<unk>`) and the responses of the Alpaca records that the finetuning never sees. The corpus stage "
            f"partitions Alpaca's {split['data']['records']:,} records (data seed {split['settings']['data_seed']}): "
            f"**{c['train']} train + {c['eval']} eval** records for every finetuning run, **{c['heldout']} held-out** "
            f"instructions for the generations, and {c['unused']:,} unused records whose responses, one paragraph "
            f"each, make `pretrain_text.txt` ({split['pretrain']['records']:,} kept; left out: "
            + ", ".join(f"{n} {k.replace('_', ' ')}" for k, n in left.items()) +
            "). No eval or held-out response is in the pretraining text (tested: report/tests/test_corpus.py).")


def corpus_values(run: Path) -> dict[str, str]:
    meta = read_json(run / "shards/meta.json", "data")
    split_path = run / "corpus/split.json"
    split = read_json(split_path, "corpus") if split_path.is_file() else None
    rows = source_rows(meta, split)
    rows.append(["**tokens** (this run's tokenizer)", f"train {meta['train']['tokens']:,}",
                 f"validation {meta['val']['tokens']:,} (last {meta.get('val_fraction', 0):.0%} of each file)"])
    summary = read_json(run / "pretrain/summary.json", "pretrain")
    seen = summary.get("tokens") or 0
    share = seen / meta["train"]["tokens"]
    if meta.get("doc_boundary") == "blank_line":
        order_docs = (" Each Alpaca response is a document of its own (end-of-text before it), so the model sees where "
                      "answers end.")
    else:
        order_docs = ""
    if (summary.get("train_config") or {}).get("data_order") == "shuffle":
        order = (f" Training draws non-overlapping windows of the whole training split in a random order (a new one "
                 f"each epoch), so every step mixes the sources in proportion, as validation does: the run's "
                 f"{seen:,} tokens are {share:.2f} passes over the training tokens.")
    else:
        order = (f" The shards keep the files' order and training reads them in order: the run's {seen:,} tokens are "
                 f"{share:.0%} of the training tokens, from the first file on.")
    return {"corpus_story": corpus_story(split) + order_docs + order,
            "corpus_table": md_table(["source", "bytes", "records"], rows)}


# ---------------------------------------------------------------------------------------------------- pretraining

HELLASWAG_NAMES = {"hellaswag_acc_norm": "acc_norm per token (build-nanogpt)",
                   "hellaswag_acc_norm_per_token": "acc_norm per token (build-nanogpt)",
                   "hellaswag_acc_norm_per_char": "acc_norm per character (lm-eval)",
                   "hellaswag_acc_norm_char": "acc_norm per character (lm-eval)"}


def hellaswag_figures(rows: list[dict]) -> list[tuple[str, float, float, int]]:
    """(convention, accuracy, standard error, n) for every acc_norm convention the last HellaSwag line holds."""
    hs = [r for r in rows if r.get("hellaswag_acc_norm") is not None]
    if not hs:
        return []
    last, out = hs[-1], {}
    n = int(last.get("hellaswag_n") or 0)
    for key in sorted(k for k in last if k.startswith("hellaswag_acc_norm") and not k.endswith(("_se", "_stderr"))):
        if last[key] is None:
            continue
        name = HELLASWAG_NAMES.get(key, key.replace("hellaswag_", "").replace("_", " "))
        se = last.get(key + "_stderr") or last.get(key + "_se") or fd.binomial_se(last[key], n)
        out.setdefault(name, (name, float(last[key]), float(se), n))
    return list(out.values())


def hellaswag_line(figs: list[tuple[str, float, float, int]]) -> str:
    if not figs:
        return "not measured in this run."
    parts = [f"{name} **{acc:.4f} ± {se:.4f}** ({(acc - 0.25) / se:+.1f} standard errors from chance)"
             for name, acc, se, _ in figs]
    return "; ".join(parts) + f", on {figs[0][3]} examples."


def corpus_words(meta: dict) -> set[str]:
    """Lower-cased words of the pretraining source files (to check whether sampled words are real ones)."""
    words = set()
    for src in meta.get("sources", []):
        if Path(src).is_file():
            words.update(w.lower() for w in WORD.findall(Path(src).read_text(encoding="utf-8")))
    return words


def sample_stats(samples: list[str], vocabulary: set[str]) -> dict:
    """Share of sampled words found in the corpus and share of distinct word pairs (1.0 = no repetition)."""
    words = [w.lower() for s in samples for w in WORD.findall(s)]
    pairs = list(zip(words, words[1:]))
    return {"words": len(words),
            "known": sum(w in vocabulary for w in words) / len(words) if words and vocabulary else math.nan,
            "distinct_pairs": len(set(pairs)) / len(pairs) if pairs else math.nan}


def can_do(final_val: float, vocab: int, figs: list, stats: dict, base: dict | None = None) -> str:
    """What the model can and cannot do, each line decided by a number (the count baselines when measured)."""
    ppl = math.exp(final_val)
    lines = [f"- Next-token prediction: validation perplexity **{ppl:.0f}** (loss {final_val:.3f} nats) where a "
             f"uniform guess over its {vocab:,} tokens scores {vocab:,}."]
    if base:
        b, m = base["baselines"], base["baselines"]["model"]
        gain = b["bigram"]["nats_per_token"] - m["nats_per_token"]
        lines[0] = lines[0][:-1] + (
            f"; on every validation token it scores **{m['nats_per_token']:.3f} nats ({m['bits_per_byte']:.3f} bits "
            f"per byte)** against {b['bigram']['nats_per_token']:.3f} for a table of which token follows which "
            f"(Kneser-Ney bigram) and {b['unigram']['nats_per_token']:.3f} for token frequencies alone: "
            + (f"**{gain:.2f} nats per token better than counting pairs**, so it uses more context than the previous "
               "token." if gain > 0.1 else
               f"**no better than counting pairs** ({gain:+.2f} nats): what it learned, a bigram table holds too."))
    if figs:
        _, acc, se, n = figs[0]
        at_chance = abs(acc - 0.25) <= 2 * se
        lines.append(f"- Commonsense completion (HellaSwag): {acc:.3f} ± {se:.3f} on {n} items is "
                     + ("**within two standard errors of chance**: it cannot pick the plausible ending."
                        if at_chance else f"**{(acc - 0.25) / se:.1f} standard errors above chance**."))
    if stats["words"]:
        lines.append(f"- Spelling: {stats['known']:.0%} of the {stats['words']} words in its samples occur in its "
                     "corpus" + (" (it writes real words)" if stats["known"] >= 0.9 else " (it often invents words)")
                     + f"; {stats['distinct_pairs']:.0%} of adjacent word pairs are distinct"
                     + (" (little repetition)." if stats["distinct_pairs"] >= 0.8 else " (it repeats itself)."))
    lines.append("- Instructions: before finetuning it has never seen the instruction template; section 4 shows its "
                 "answers beside the finetuned models'.")
    return "\n".join(lines)


def pretrain_table(s: dict, rows: list[dict]) -> str:
    first = next((r["loss"] for r in rows if "loss" in r), None)
    tc = s.get("train_config") or {}
    optimizer = {"muon": "Muon (blocks' matrices) + AdamW (the rest)"}.get(tc.get("optimizer"), "AdamW")
    recipe = (f"{optimizer}, peak lr {tc.get('max_lr')} after {tc.get('warmup_steps')} warm-up "
              f"steps, cosine to {tc.get('min_lr_ratio', 0.1):.0%}; {fmt(tc.get('total_batch_size'))} tokens a step"
              if "max_lr" in tc else "-")
    items = [("parameters", fmt(s.get("params"))), ("optimizer and schedule", recipe), ("steps", fmt(s.get("steps"))),
             ("tokens seen", fmt(s.get("tokens"))), ("tokens per second (steady state)", fmt(s.get("tokens_per_s"), 0)),
             ("train time s", fmt(s.get("train_time_s"), 1)), ("wall time s", fmt(s.get("wall_time_s"), 1)),
             ("first train loss", fmt(first)), ("final train loss", fmt(s.get("final_train_loss"))),
             ("final validation loss", fmt(s.get("final_val_loss"))), ("device", fmt(s.get("device"))),
             ("processes", fmt(s.get("world_size")))]
    return md_table(["measure", "value"], [[k, v] for k, v in items])


def baseline_table(base: dict, vocab: int, cmds: dict) -> str:
    """The model beside what counting gives on the same val tokens, in nats per token and bits per byte."""
    per_byte = base["val_tokens"] / base["val_bytes"] / math.log(2)  # nats per token -> bits per byte
    b = base["baselines"]
    bigram = b["bigram"]["nats_per_token"]
    named = [(f"uniform over the {vocab:,} tokens", {"nats_per_token": math.log(vocab),
                                                     "bits_per_byte": math.log(vocab) * per_byte}),
             ("unigram counts (add-one)", b["unigram"]), ("bigram counts (Kneser-Ney, D = "
                                                         f"{base.get('bigram_discount', 0.75)})", b["bigram"])]
    if "model" in b:
        named.append(("**this GPT** (exported, scored by transformers)", b["model"]))
    rows = [[name, f"{v['nats_per_token']:.3f}", f"{v['bits_per_byte']:.3f}", f"{v['nats_per_token'] - bigram:+.3f}"]
            for name, v in named]
    return (md_table(["model", "val nats / token", "val bits / byte", "vs bigram (nats)"], rows)
            + f"\n\nEvery one of the {base['val_tokens']:,} validation tokens ({base['val_bytes']:,} bytes of text) "
            f"scored once; the counts are fitted on the {base['train_tokens']:,} training tokens of the same shards, "
            f"by {cmd_note(cmds, 'baselines')}.")


def pretrain_values(run: Path, cmds: dict) -> dict[str, str]:
    rows = read_jsonl(run / "pretrain/log.jsonl", "pretrain")
    s = read_json(run / "pretrain/summary.json", "pretrain")
    meta = read_json(run / "shards/meta.json", "data")
    mc = s.get("model_config") or {}
    samples = [r for r in rows if "sample" in r]
    last = [r["sample"] for r in samples if r["step"] == samples[-1]["step"]] if samples else []
    last = [x for s_ in last for x in ([s_] if isinstance(s_, str) else s_)]
    figs = hellaswag_figures(rows)
    tok = run / "tokenizer/summary.json"
    tok_s = read_json(tok, "tokenizer") if tok.is_file() else {"vocab_size": meta["vocab_size"]}
    base = read_json(run / "baselines.json", "baselines")
    return {
        "pretrain_shape": (f"A GPT-2-architecture model with {mc.get('n_layer')} layers, {mc.get('n_head')} heads, "
                           f"width {mc.get('n_embd')}, context {mc.get('block_size')} and vocabulary "
                           f"{fmt(mc.get('vocab_size'))} ({fmt(s.get('params'))} parameters)"),
        "pretrain_cmd": cmd_note(cmds, "pretrain"), "data_cmd": cmd_note(cmds, "data"),
        "tokenizer_cmd": cmd_note(cmds, "tokenizer") if tok.is_file() else "GPT-2's (tiktoken)",
        "tok_vocab": fmt(tok_s["vocab_size"]), "tok_bpt": fmt(tok_s.get("bytes_per_token"), 2),
        "pretrain_table": pretrain_table(s, rows), "hellaswag_line": hellaswag_line(figs),
        "can_do": can_do(s["final_val_loss"], meta["vocab_size"], figs, sample_stats(last, corpus_words(meta)), base),
        "baseline_table": baseline_table(base, meta["vocab_size"], cmds),
        "samples": "\n\n".join(f"```text\n{x.strip()[:600]}\n```" for x in last) or "(no samples logged)",
    }


# ---------------------------------------------------------------------------------------------------- finetuning

@dataclass
class Run:
    """One finetuning run folder: its label, LoRA rank (0 = full), seed, log rows, summary and config."""
    label: str
    rank: int
    seed: int
    rows: list[dict]
    summary: dict
    config: dict


def label_of(rank: int, seed: int, main_seed: int) -> str:
    name = "full finetuning" if rank == 0 else f"LoRA r={rank}"
    return name if seed == main_seed else f"{name}, seed {seed}"


def load_sweep(run: Path) -> dict[str, Run]:
    """Every run folder under RUN/sweep (one holding summary.json), ordered: full, ranks ascending, second seeds."""
    sweep = run / "sweep"
    folders = sorted(d for d in sweep.glob("*") if (d / "summary.json").is_file()) if sweep.is_dir() else []
    if not folders:
        raise ReportInputError(f"{sweep} holds no finished run (written by pipeline stage 'sweep')")
    raw = []
    for d in folders:
        s = read_json(d / "summary.json", "sweep")
        cfg = read_json(d / "config.json", "sweep") if (d / "config.json").is_file() else {}
        raw.append((int(s["lora_dim"]), int(s.get("seed", cfg.get("seed", 0))), d, s, cfg))
    main_seed = statistics.mode(seed for _, seed, *_ in raw)   # the sweep's seed; any other is a second-seed run
    raw.sort(key=lambda t: (t[1] != main_seed, t[0], t[1]))
    return {label_of(r, seed, main_seed): Run(label_of(r, seed, main_seed), r, seed,
                                              read_jsonl(d / "log.jsonl", "sweep"), s, cfg)
            for r, seed, d, s, cfg in raw}


def full_run(sweep: dict[str, Run]) -> Run:
    full = [r for r in sweep.values() if r.rank == 0]
    if not full:
        raise ReportInputError("the sweep has no full-finetuning run (rank 0)")
    return full[0]


def primary_lora(sweep: dict[str, Run]) -> dict[int, Run]:
    """{rank: run} of the LoRA runs with the sweep's seed (the first listed per rank)."""
    out = {}
    for r in sweep.values():
        if r.rank > 0 and r.rank not in out:
            out[r.rank] = r
    return out


def seed_pair(sweep: dict[str, Run]) -> tuple[int, tuple[float, float]] | None:
    """(rank, (final eval loss, seed A), (seed B)) for the rank that was run with two seeds."""
    by_rank: dict[int, list[Run]] = {}
    for r in sweep.values():
        if r.rank > 0:
            by_rank.setdefault(r.rank, []).append(r)
    for rank, runs in by_rank.items():
        if len(runs) >= 2:
            return rank, (fd.eval_shape(runs[0].rows)["final_eval"], fd.eval_shape(runs[1].rows)["final_eval"])
    return None


def protocol(sweep: dict[str, Run]) -> dict:
    """The settings every run shares, and whether they really are the same in all runs."""
    keys = ("max_examples", "eval_ratio", "data_seed", "epochs", "lr", "lr_warmup_ratio", "train_batch_size",
            "gradient_accumulation_steps", "max_length", "template", "lora_scaling", "weight_decay",
            "group_by_length")
    sums = ("train_examples", "eval_examples", "steps", "steps_per_epoch", "epochs")
    first = next(iter(sweep.values()))
    same = all(all(r.config.get(k) == first.config.get(k) for k in keys) and
               all(r.summary.get(k) == first.summary.get(k) for k in sums) for r in sweep.values())
    eval_steps = [tuple(fd.series(r.rows, "eval_loss")[0]) for r in sweep.values()]
    steps = eval_steps[0]
    return {**{k: first.config.get(k) for k in keys}, **{k: first.summary.get(k) for k in sums},
            "eval_every": steps[1] - steps[0] if len(steps) > 1 else None, "n_evals": len(steps),
            "same": same and len(set(eval_steps)) == 1}


def protocol_story(p: dict, n_runs: int) -> str:
    return (f"The homework's protocol at CPU scale. All {n_runs} runs train on the same **{p['train_examples']} "
            f"records** and evaluate on the same **{p['eval_examples']}** (Alpaca subset of {p['max_examples']}, eval "
            f"ratio {p['eval_ratio']}, data seed {p['data_seed']}) for **{p['epochs']:g} whole epochs** "
            f"({p['steps_per_epoch']} steps of {p['train_batch_size']} × {p['gradient_accumulation_steps']} "
            f"examples per epoch, {p['steps']} steps), AdamW at peak lr {p['lr']} with {p['lr_warmup_ratio']:.0%} "
            f"linear warm-up then cosine decay to 0, weight decay {p['weight_decay']}, examples cut at "
            f"{p['max_length']} tokens{' (batches grouped by length)' if p['group_by_length'] else ''}, "
            f"`{p['template']}` template, LoRA alpha {p['lora_scaling']} (scaling = alpha / rank); eval loss on the "
            f"whole eval split at step 0 and every {p['eval_every']} steps ({p['n_evals']} evaluations). Settings and "
            f"evaluation steps identical in every run (checked from each run's config.json, summary.json and "
            f"log.jsonl): **{'yes' if p['same'] else 'NO'}**.")


def sweep_table(sweep: dict[str, Run]) -> str:
    rows = []
    for r in sweep.values():
        shape, s = fd.eval_shape(r.rows), r.summary
        pct = 100 * s["trainable_params"] / s["total_params"] if s.get("total_params") else math.nan
        rows.append([r.label, fmt(s.get("trainable_params")), f"{pct:.2f}%", fmt(shape["eval_first"]),
                     f"{shape['min_eval']:.4f} (step {shape['min_step']})", fmt(shape["final_eval"]),
                     fmt(s.get("final_train_loss")), fmt(s.get("wall_seconds"), 1)])
    return md_table(["run", "trainable params", "trainable", "eval loss at step 0", "min eval loss",
                     "final eval loss", "final train loss", "wall s"], rows)


def full_finding(v: dict) -> str:
    trend = "kept falling" if v["train_falling"] else "did not keep falling"
    return (f"- **Full finetuning overfits**: {verdict_word(v['reproduced'])}. Eval loss fell from "
            f"{v['eval_first']:.4f} to its minimum **{v['min_eval']:.4f} at step {v['min_step']}** of "
            f"{v['final_step']}, then ended at **{v['final_eval']:.4f}** (rise {v['rise']:+.4f}; a turn needs more "
            f"than {fd.RISE_TOL}), while train loss {trend} after the minimum ({v['train_at_min']:.4f} around step "
            f"{v['min_step']} → {v['train_final']:.4f} over the last {fd.TREND_WINDOW:.0%} of steps).")


def lora_finding(v: dict) -> str:
    worst = max(v["runs"].items(), key=lambda kv: kv[1]["rise"])
    falls = ", ".join(f"{name.replace('LoRA ', '')} {x['eval_first']:.3f}→{x['final_eval']:.3f}"
                      for name, x in v["runs"].items())
    return (f"- **LoRA's eval loss falls along with its train loss**: {verdict_word(v['reproduced'])}. Eval loss "
            f"at step 0 → at the end: {falls}. Largest end-above-minimum rise: {worst[1]['rise']:.4f} "
            f"({worst[0]}); runs whose eval loss turned up (rise > {fd.RISE_TOL}), or whose train or eval loss did "
            f"not fall: {', '.join(v['failing']) or 'none'}.")


def alike_finding(v: dict | None, rank: int | None) -> str:
    if v is None:
        return "- **Ranks look alike**: not decided (no rank was run with a second seed)."
    return (f"- **Ranks look alike**: {verdict_word(v['reproduced'])}. Final eval losses of ranks "
            f"{', '.join(map(str, v['ranks']))} span "
            f"**{v['spread']:.4f}** (best r={v['best_rank']}, worst r={v['worst_rank']}); the same rank {rank} with "
            f"two seeds ends {v['seed_spread']:.4f} apart, so the rank spread is {v['ratio']:.1f}× the seed spread "
            f"(alike means at most {fd.ALIKE_FACTOR:g}× it: bound {v['bound']:.4f}). For scale, the rank spread is "
            f"{v['relative_spread']:.2%} of the mean final eval loss {v['mean']:.3f}.")


def longer_finding(v: dict, unit: str) -> str:
    m, n_all = v["mean"], v["n_all"]
    text = f"- **LoRA answers are longer**: {verdict_word(v['reproduced'])}. "
    if v["ended"] is not None:  # cut answers' lengths are the limit's: compare the answers that ended
        text += ("Answers that ended with end-of-text before the generation limit: "
                 + ", ".join(f"{name} **{v['ended'][name]}/{n_all}**" for name in (v["base"], v["full"], v["lora"]))
                 + f". On the {v['n']} instructions that both {v['lora']} and {v['full']} answered to the end, ")
    else:
        text += f"Over {n_all} held-out instructions, "
    if not v["n"]:
        return text + "there is nothing to compare (no such instruction): not decided."
    means = v["mean_ended"] or m
    text += (f"mean length {v['lora']} **{means[v['lora']]:.1f}** vs {v['full']} **{means[v['full']]:.1f}** {unit}; "
             f"paired difference {v['diff']:+.1f} ± {v['diff_se']:.1f} (longer means more than two standard errors "
             "above 0)")
    if not v["decided"]:
        text += f"; fewer than {fd.MIN_PAIRS} such pairs decide nothing"
    return text + f". All answers, cut ones included: {', '.join(f'{k} {x:.1f}' for k, x in m.items())} {unit}."


def ended_answers(gens: dict) -> dict[str, list[bool]] | None:
    """Per model, whether each answer ended by itself (generate.py's details 'stop' is 'eos'), or None if not
    recorded."""
    results = gens["results"]
    if not all("stop" in d for r in results for d in r.get("details", {None: {}}).values()):
        return None
    return {n: [r["details"][n]["stop"] == "eos" for r in results] for n in results[0]["responses"]}


def model_names(gens: dict) -> tuple[str, str, str]:
    """(base, full, LoRA) names of the models in generations.json, by what each is."""
    names = list(gens["results"][0]["responses"])
    lora = next(n for n in names if "lora" in n.lower())
    full = next(n for n in names if "full" in n.lower())
    base = next(n for n in names if n not in (lora, full))
    return base, full, lora


def response_lengths(gens: dict) -> tuple[dict[str, list[int]], str]:
    """Generated length per model and instruction: generate.py's token counts if recorded, else words."""
    results = gens["results"]
    if all("details" in r for r in results):
        return {n: [r["details"][n]["tokens"] for r in results] for n in results[0]["responses"]}, "tokens"
    return {n: [len(r["responses"][n].split()) for r in results] for n in results[0]["responses"]}, "words"


def finetune_values(run: Path, cmds: dict, sweep: dict[str, Run], gens: dict) -> tuple[dict[str, str], dict]:
    full, lora = full_run(sweep), primary_lora(sweep)
    v_full = fd.full_overfits_verdict(full.rows)
    v_lora = fd.lora_follows_verdict({r.label: r.rows for r in lora.values()})
    pair = seed_pair(sweep)
    finals = {rank: fd.eval_shape(r.rows)["final_eval"] for rank, r in lora.items()}
    v_alike = fd.ranks_alike_verdict(finals, pair[1]) if pair else None
    lengths, unit = response_lengths(gens)
    base, full_name, lora_name = model_names(gens)
    v_long = fd.lora_longer_verdict(lengths, lora=lora_name, full=full_name, base=base, ended=ended_answers(gens))
    verdicts = {"full_overfits": v_full, "lora_follows": v_lora, "ranks_alike": v_alike, "lora_longer": v_long,
                "length_unit": unit}
    text = "\n".join([full_finding(v_full), lora_finding(v_lora), alike_finding(v_alike, pair and pair[0]),
                      longer_finding(v_long, unit)])
    return {"protocol_story": protocol_story(protocol(sweep), len(sweep)), "sweep_cmd": cmd_note(cmds, "sweep"),
            "sweep_table": sweep_table(sweep), "findings": text}, verdicts


# ---------------------------------------------------------------------------------------------------- generations

def shown_generations(gens: dict, k: int = 4) -> str:
    parts = []
    for it in gens["results"][:k]:
        inp = f" *Input:* {it['input']}" if it.get("input") else ""
        parts.append(f"**Instruction:** {it['instruction']}{inp}\n")
        parts += [f"- *{name}*: {' '.join(str(text).split())[:500] or '(empty)'}"
                  for name, text in it["responses"].items()]
        parts.append("")
    return "\n".join(parts)


def generation_values(gens: dict, cmds: dict) -> dict[str, str]:
    lengths, unit = response_lengths(gens)
    line = "; ".join(f"{name} {m:.1f} ± {se:.1f}" for name, (m, se) in
                     ((n, fd.mean_se(v)) for n, v in lengths.items()))
    ended = ended_answers(gens)
    ends = ("; ".join(f"{name} {sum(v)}/{len(v)}" for name, v in ended.items()) if ended else "not recorded")
    return {"gen_cmd": cmd_note(cmds, "generate"), "gen_n": str(len(gens["results"])), "length_unit": unit,
            "length_line": line, "generations": shown_generations(gens), "gen_settings": generation_settings(gens),
            "ended_line": ends}


def generation_settings(gens: dict) -> str:
    """How the answers were decoded, from generations.json's config."""
    c = gens.get("config", {})
    if c.get("greedy"):
        how = "greedy decoding"
    else:
        how = (f"sampling at temperature {c.get('temperature')}, top-k {c.get('top_k') or 'off'}, top-p "
               f"{c.get('top_p')}, seed {c.get('seed')}")
    return (f"{how}; at most {c.get('max_new_tokens')} new tokens per answer; an answer ends at the model's "
            f"end-of-text token; the prompt is the `{c.get('template')}` template (as in finetuning)")


# ---------------------------------------------------------------------------------------------------- GPU preset

def gpu_values(scale: str, commands: list[str]) -> dict[str, str]:
    note = ("Not run at CPU scale. The GPU preset keeps build-nanogpt's setup: GPT-2 124M pretrained on FineWeb-Edu "
            "(sample-10BT) with GPT-2's tokenizer on 8 GPUs, then the sweep on hub `gpt2` in bf16; its stages:"
            if scale == "CPU" else "This report is from the GPU preset; its stages:")
    return {"gpu_note": note, "gpu_commands": "\n".join(commands)}
