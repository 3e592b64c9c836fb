"""The values of report/template.md's slots ({slot: text}), one function per section, from the run's files."""
import json
import math
import re
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import findings as fd

WORD = re.compile(r"[A-Za-z]+")
VERDICT = {True: "**Reproduced**", False: "**Not reproduced at this scale**"}   # a finding's verdict, in words


class ReportInputError(RuntimeError):
    """A run file that is missing, unreadable or of the wrong shape: one line naming it and the stage that writes it."""


def read_json(path: Path, stage: str, rows_with: str | None = None):
    """A run file's JSON object (not empty), or with ``rows_with`` a log's rows: UTF-8 text, one JSON object a line,
    at least one holding the key ``rows_with`` (else the figure it feeds would be empty)."""
    if not path.is_file():
        raise ReportInputError(f"missing {path} (written by pipeline stage '{stage}'; run "
                               f"`python report/pipeline.py --only {stage}`)")
    rerun = f"rerun pipeline stage '{stage}' (python report/pipeline.py --redo {stage})"
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        what = "a text log" if rows_with else "a JSON file"
        raise ReportInputError(f"{path}: not {what} (binary at byte {e.start}); {rerun}") from None
    rows = []
    for i, line in enumerate(text.splitlines() if rows_with else [text], 1):
        try:
            rows += [json.loads(line)] if line.strip() or not rows_with else []
        except json.JSONDecodeError as e:
            where = f"{path}:{i}" if rows_with else path
            raise ReportInputError(f"{where}: not valid JSON ({e})") from None
    bad = next((i for i, r in enumerate(rows, 1) if not isinstance(r, dict)), None)
    if not rows_with:
        if bad or not rows[0]:
            what = "an empty object" if rows[0] == {} else f"a JSON {type(rows[0]).__name__}"
            raise ReportInputError(f"{path}: holds {what}, not the object pipeline stage '{stage}' writes; {rerun}")
        return rows[0]
    if bad or not any(rows_with in r for r in rows):
        why = f"record {bad} is not an object" if bad else ("is empty" if not rows else f"has no {rows_with} row")
        raise ReportInputError(f"{path}: {why}, so there is nothing to report; {rerun}")
    return rows


def md_table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows])


def fmt(x, nd: int = 4) -> str:
    if isinstance(x, float):
        return f"{x:.{nd}f}"   # inf and nan print as themselves
    return "–" if x is None else f"{x:,}" if isinstance(x, int) and not isinstance(x, bool) else str(x)


def cmd_note(cmds: dict, stage: str) -> str:
    r = cmds.get(stage)
    return f"`{r['command']}` ({r['seconds']:.0f} s)" if r else f"(stage '{stage}' not recorded)"


# -- 0. the pipeline --------------------------------------------------------------------------------------------------

def header_values(run: Path, cmds: dict, t0: float | None, root: Path) -> dict[str, str]:
    """Where the run came from and what each stage cost (``cmds``: the latest successful record of each stage)."""
    report_s = time.time() - t0 if t0 is not None else 0.0
    cmds = {name: r for name, r in cmds.items() if name != "report"}   # the earlier build: this one is shown instead
    rows = [[name, f"`{r['command']}`", f"{r['seconds']:.0f}", f"{r['load_avg'][0]:.1f}" if "load_avg" in r else "–"]
            for name, r in cmds.items()]
    rows.append(["report", "`python report/build_report.py` (this build)", f"{report_s:.0f}", "–"])
    total = sum(r["seconds"] for r in cmds.values()) + report_s
    loads = [r["load_avg"][0] for r in cmds.values() if r.get("load_avg")]
    preset = next((r["preset"] for r in cmds.values() if r.get("preset")), "cpu")
    return {
        "scale": "GPU" if preset == "gpu" else "CPU", "preset": preset,
        "run_dir": str(run.relative_to(root)) if run.is_relative_to(root) else str(run),
        "total_s": f"{total:.0f}", "total_min": f"{total / 60:.1f}",
        "load_note": (f"(1-minute, at each stage's end) {min(loads):.1f}–{max(loads):.1f} on this machine"
                      if loads else "not recorded"),
        "machine": next((r["machine"] for r in cmds.values() if r.get("machine")), "not recorded"),
        "stage_table": md_table(["stage", "command", "wall s", "load"], rows),
    }


# -- 1. the homework's BPE --------------------------------------------------------------------------------------------

def bpe_values(s: dict, cmds: dict) -> dict[str, str]:
    show = lambda pairs: ", ".join(f"{i}:`{str(t).replace('|', '/').replace(' ', '␣')}`" for i, t in pairs)  # noqa
    comp, h = s["comparison"], s["homework"]
    published, missing = h["published"], h["missing_bytes"]["english"]
    counts = [[lang.capitalize(), comp[lang]["chars"], comp[lang]["ours"], comp[lang]["gpt2"],
               published["ours"][lang], published["gpt2"][lang]] for lang in ("english", "chinese")]
    return {
        "bpe_cmd": cmd_note(cmds, "bpe"), "bpe_vocab": fmt(s["vocab_size"]), "bpe_pattern": s["pattern"],
        "bpe_bytes": fmt(s["corpus_bytes"]), "bpe_train_s": f"{s['train_seconds']:.2f}",
        "bpe_roundtrip": "exact" if s["roundtrip_ok"] else "FAILED", "bpe_tokens": fmt(s["n_tokens"]),
        "bpe_bpt": f"{s['bytes_per_token']:.2f}", "bpe_first": show(s["first_tokens"]),
        "bpe_last": show(s["last_tokens"]), "hw_alphabet": str(h["alphabet"]["size"]),
        "hw_first": ", ".join(f"`{t}`" for t in h["alphabet"]["first_tokens"]),
        "hw_first_match": str(h["alphabet"]["first_tokens_match_published"]),
        "hw_reproduces": str(h["reproduces_published"]),
        **{f"hw_{k}": str(v) for k, v in h["merges"].items()}, "hw_missing_bytes": str(missing["bytes"]),
        "hw_missing_chars": ", ".join(f"`{c}` ×{n}" for c, n in missing["chars"].items()) or "none",
        "hw_effects": "; ".join(f"{name.replace('_', ' ')} {v['english']:+d} English / {v['chinese']:+d} Chinese"
                                for name, v in h["effects"].items()),
        "bpe_table": md_table(["paragraph", "chars", "ours", "GPT-2 (tiktoken)", "homework: its tokenizer",
                               "homework: GPT-2"], counts),
        "bpe_variants": md_table(["variant", "English", "Chinese", "what"],
                                 [[f"`{v['name']}`", v["english"], v["chinese"], v["what"]] for v in h["variants"]]),
    }


# -- 2. pretraining ---------------------------------------------------------------------------------------------------

def corpus_values(f: dict) -> dict[str, str]:
    """The pretraining corpus: where its text comes from, how it is split, and how training reads it."""
    split, meta, summary = f["split"], f["meta"], f["pretrain"]
    seen, c = summary["tokens"], split["counts"]
    values = {"alpaca_records": f"{split['data']['records']:,}", "data_seed": str(split["settings"]["data_seed"]),
              "n_train": str(c["train"]), "n_eval": str(c["eval"]), "n_heldout": str(c["heldout"]),
              "n_unused": f"{c['unused']:,}", "pretrain_records": f"{split['pretrain']['records']:,}",
              "left_out": ", ".join(f"{n} {k.replace('_', ' ')}" for k, n in split["pretrain"]["left_out"].items())}
    story = ""
    if meta.get("doc_boundary") == "blank_line":
        story += (" Each Alpaca response is a document of its own (end-of-text before it), so the model sees where "
                  "answers end.")
    if summary["train_config"].get("data_order") == "shuffle":
        story += (f" Training draws non-overlapping windows of the whole training split in a random order (a new one "
                  f"each epoch), so every step mixes the sources in proportion, as validation does: the run's "
                  f"{seen:,} tokens are {seen / meta['train']['tokens']:.2f} passes over the training tokens.")
    else:
        story += (f" The shards keep the files' order and training reads them in order: the run's {seen:,} tokens "
                  f"are {seen / meta['train']['tokens']:.0%} of the training tokens, from the first file on.")
    rows = []   # one per source file: name, bytes, records (Alpaca responses, or WikiText articles/lines)
    for path in map(Path, meta["sources"]):
        if not path.is_file():   # a streamed data set (GPU preset), or a file since moved
            rows.append([f"`{path}`", "–", "–"])
            continue
        if path.name == split["pretrain"]["file"]:
            what = f"{split['pretrain']['records']:,} Alpaca responses"
        else:
            lines = path.read_text(encoding="utf-8").splitlines()
            articles = sum(1 for ln in lines if re.fullmatch(r" = [^=].* = ", ln))
            what = f"{articles:,} articles, {len(lines):,} lines"
        rows.append([f"`{path.name}`", f"{path.stat().st_size:,}", what])
    rows.append(["**tokens** (this run's tokenizer)", f"train {meta['train']['tokens']:,}",
                 f"validation {meta['val']['tokens']:,} (last {meta['val_fraction']:.0%} of each file)"])
    return {**values, "corpus_story": story.strip(), "corpus_table": md_table(["source", "bytes", "records"], rows)}


HELLASWAG = {"hellaswag_acc_norm": "acc_norm per token (build-nanogpt)",
             "hellaswag_acc_norm_char": "acc_norm per character (lm-eval)"}


def hellaswag_figures(rows: list[dict]) -> list[tuple[str, float, float, int]]:
    """(convention, accuracy, standard error, n) of each acc_norm convention on the last HellaSwag line."""
    hs = [r for r in rows if r.get("hellaswag_acc_norm") is not None]
    n = int(hs[-1]["hellaswag_n"]) if hs else 0
    return [(name, hs[-1][k], fd.binomial_se(hs[-1][k], n), n) for k, name in HELLASWAG.items()
            if hs and hs[-1].get(k) is not None]


def best_count_model(base: dict) -> tuple[str, dict[str, float]]:
    """(name of the count model with the lowest val loss, {count model: nats per token})."""
    counts = {k: v["nats_per_token"] for k, v in base["baselines"].items() if k != "model"}
    return min(counts, key=counts.get), counts


def against_counts(base: dict) -> str:
    """Where the model stands among the count models (1- to 5-gram), said plainly."""
    m = base["baselines"]["model"]["nats_per_token"]
    best, counts = best_count_model(base)
    worse = [k for k in counts if counts[k] > m]   # count models the GPT beats
    if not worse:
        return f"**worse than every count model** ({m - counts[best]:.2f} nats per token above the {best})"
    if len(worse) == len(counts):
        return (f"**better than every count model: {counts[best] - m:.2f} nats per token below the best, the "
                f"{best}**, so it uses what n-gram counts of the same text cannot")
    below, above = min(worse, key=counts.get), max((k for k in counts if k not in worse), key=counts.get)
    return (f"**between the {below} and the {above}: {m - counts[best]:.2f} nats per token worse than the best count "
            f"model, the {best}**")


def can_do(figs: list, samples: list[str], meta: dict) -> str:
    """The lines of what the model can and cannot do that depend on a number: HellaSwag, spelling (share of the
    samples' words found in the corpus), repetition (share of distinct adjacent word pairs)."""
    lines = []
    if figs:
        _, acc, se, n = figs[0]
        lines.append(f"- Commonsense completion (HellaSwag): {acc:.3f} ± {se:.3f} on {n} items is "
                     + ("**within two standard errors of chance**: it cannot pick the plausible ending."
                        if abs(acc - 0.25) <= 2 * se else f"**{(acc - 0.25) / se:.1f} standard errors above chance**."))
    if words := [w.lower() for s in samples for w in WORD.findall(s)]:
        files = [Path(src) for src in meta["sources"] if Path(src).is_file()]
        vocabulary = {w.lower() for path in files for w in WORD.findall(path.read_text(encoding="utf-8"))}
        known, pairs = sum(w in vocabulary for w in words) / len(words), list(zip(words, words[1:]))
        distinct = len(set(pairs)) / len(pairs) if pairs else math.nan
        lines.append(f"- Spelling: {known:.0%} of the {len(words)} words in its samples occur in its corpus"
                     + (" (it writes real words)" if known >= 0.9 else " (it often invents words)")
                     + f"; {distinct:.0%} of adjacent word pairs are distinct"
                     + (" (little repetition)." if distinct >= 0.8 else " (it repeats itself)."))
    return "\n".join(lines)


def baseline_table(base: dict, vocab: int) -> str:
    """The model beside what counting gives on the same val tokens (orders 1-5), in nats per token and bits per byte."""
    per_byte = base["val_tokens"] / base["val_bytes"] / math.log(2)  # nats per token -> bits per byte
    best, _ = best_count_model(base)
    b = base["baselines"]
    named = [(f"uniform over the {vocab:,} tokens", {"nats_per_token": math.log(vocab),
                                                     "bits_per_byte": math.log(vocab) * per_byte})]
    named += [(f"{k} counts", v) for k, v in b.items() if k != "model"]
    named.append(("**this GPT** (exported, scored by transformers)", b["model"]))
    rows = [[name, f"{v['nats_per_token']:.3f}", f"{v['bits_per_byte']:.3f}",
             f"{v['nats_per_token'] - b[best]['nats_per_token']:+.3f}"] for name, v in named]
    return md_table(["model", "val nats / token", "val bits / byte", f"vs the {best} (nats)"], rows)


def pretrain_values(f: dict, cmds: dict) -> dict[str, str]:
    rows, s, meta, tok = f["log"], f["pretrain"], f["meta"], f.get("tokenizer")
    mc, tc = s["model_config"], s["train_config"]
    samples = [r for r in rows if "sample" in r]
    last = [r["sample"] for r in samples if r["step"] == samples[-1]["step"]] if samples else []
    figs = hellaswag_figures(rows)
    optimizer = {"muon": "Muon (blocks' matrices) + AdamW (the rest)"}.get(tc.get("optimizer"), "AdamW")
    table = ("params", "steps", "tokens", "tokens_per_s", "train_time_s", "wall_time_s", "final_train_loss",
             "final_val_loss", "device", "world_size")   # the run's pt_* table
    decimals = {"tokens_per_s": 0, "train_time_s": 1, "wall_time_s": 1}   # 4 for the losses
    return {
        "pretrain_shape": (f"A GPT-2-architecture model with {mc['n_layer']} layers, {mc['n_head']} heads, width "
                           f"{mc['n_embd']}, context {mc['block_size']} and vocabulary {fmt(mc['vocab_size'])} "
                           f"({fmt(s['params'])} parameters)"),
        "pretrain_cmd": cmd_note(cmds, "pretrain"), "data_cmd": cmd_note(cmds, "data"),
        "tokenizer_cmd": cmd_note(cmds, "tokenizer") if tok else "GPT-2's (tiktoken)",
        "tok_vocab": fmt((tok or meta)["vocab_size"]), "tok_bpt": fmt((tok or {}).get("bytes_per_token"), 2),
        "pt_recipe": (f"{optimizer}, peak lr {tc.get('lr')} after {tc.get('warmup_steps')} warm-up steps, cosine to "
                      f"{tc.get('min_lr_ratio', 0.1):.0%}; {fmt(tc.get('total_batch_size'))} tokens a step"),
        "pt_first_loss": fmt(next((r["loss"] for r in rows if "loss" in r), None)),
        **{f"pt_{k}": fmt(s.get(k), decimals.get(k, 4)) for k in table},
        "hellaswag_line": ("; ".join(f"{name} **{acc:.4f} ± {se:.4f}** ({(acc - 0.25) / se:+.1f} standard errors "
                                     f"from chance)" for name, acc, se, _ in figs) + f", on {figs[0][3]} examples."
                           if figs else "not measured in this run."),
        "can_do": can_do(figs, last, meta), "against_counts": against_counts(f["baselines"]),
        "ppl": f"{math.exp(s['final_val_loss']):.0f}", "final_val": f"{s['final_val_loss']:.3f}",
        **{f"model_{k}": f"{v:.3f}" for k, v in f["baselines"]["baselines"]["model"].items()},
        "baseline_table": baseline_table(f["baselines"], meta["vocab_size"]),
        "baselines_cmd": cmd_note(cmds, "baselines"),
        **{k: f"{f['baselines'][k]:,}" for k in ("val_tokens", "val_bytes", "train_tokens", "discount")},
        "samples": "\n\n".join(f"```text\n{x.strip()[:600]}\n```" for x in last) or "(no samples logged)",
    }


# -- 3. finetuning ----------------------------------------------------------------------------------------------------

@dataclass
class Run:
    """One finetuning run folder."""
    label: str
    rank: int            # LoRA rank, 0 = full finetuning
    rows: list[dict]     # its log.jsonl
    summary: dict
    config: dict


def load_sweep(run: Path) -> dict[str, Run]:
    """Every run folder under RUN/sweep (one holding summary.json), ordered: full, ranks ascending, second seeds."""
    folders = sorted(d for d in (run / "sweep").glob("*") if (d / "summary.json").is_file())
    if not folders:
        raise ReportInputError(f"{run / 'sweep'} holds no finished run (written by pipeline stage 'sweep')")
    raw = [(read_json(d / "summary.json", "sweep"), read_json(d / "config.json", "sweep"), d) for d in folders]
    main_seed = statistics.mode(c["seed"] for _, c, _ in raw)   # the sweep's seed; any other is a second-seed run
    runs = []
    for s, c, d in sorted(raw, key=lambda t: (t[1]["seed"] != main_seed, t[0]["lora_dim"], t[1]["seed"])):
        label = "full finetuning" if s["lora_dim"] == 0 else f"LoRA r={s['lora_dim']}"
        label += "" if c["seed"] == main_seed else f", seed {c['seed']}"
        runs.append(Run(label, s["lora_dim"], read_json(d / "log.jsonl", "sweep", "eval_loss"), s, c))
    if "full finetuning" not in (r.label for r in runs):
        raise ReportInputError(f"{run / 'sweep'} holds no full-finetuning run (rank 0, the sweep's seed)")
    return {r.label: r for r in runs}


PROTOCOL = ("max_examples", "eval_ratio", "data_seed", "epochs", "lr", "lr_warmup_ratio", "batch_size",
            "gradient_accumulation_steps", "max_length", "template", "lora_alpha", "weight_decay", "group_by_length")
SUMMED = ("train_examples", "eval_examples", "steps", "steps_per_epoch", "epochs")


def protocol_values(sweep: dict[str, Run]) -> dict[str, str]:
    """The ``ft_*`` slots: the settings every run shares, and whether they really are the same in all runs."""
    def settings(r: Run) -> list:
        return [r.config[k] for k in PROTOCOL] + [r.summary[k] for k in SUMMED] + fd.series(r.rows, "eval_loss")[0]

    first = next(iter(sweep.values()))
    steps = fd.series(first.rows, "eval_loss")[0]
    p = {**{k: first.config[k] for k in PROTOCOL}, **{k: first.summary[k] for k in SUMMED}}
    p.update(epochs=f"{p['epochs']:g}", lr_warmup_ratio=f"{p['lr_warmup_ratio']:.0%}", n_runs=len(sweep),
             group_by_length=" (batches grouped by length)" if p["group_by_length"] else "",
             eval_every=steps[1] - steps[0] if len(steps) > 1 else "–", n_evals=len(steps),
             same="yes" if all(settings(r) == settings(first) for r in sweep.values()) else "NO")
    return {f"ft_{k}": str(v) for k, v in p.items()}


def sweep_table(sweep: dict[str, Run]) -> str:
    rows = []
    for r in sweep.values():
        shape, s = fd.eval_shape(r.rows), r.summary
        rows.append([r.label, fmt(s["trainable_params"]), f"{100 * s['trainable_params'] / s['total_params']:.2f}%",
                     fmt(shape["eval_first"]), f"{shape['min_eval']:.4f} (step {shape['min_step']})",
                     fmt(shape["final_eval"]), fmt(s.get("final_train_loss")), fmt(s.get("wall_seconds"), 1)])
    return md_table(["run", "trainable params", "trainable", "eval loss at step 0", "min eval loss",
                     "final eval loss", "final train loss", "wall s"], rows)


def full_finding(v: dict) -> str:
    trend = "kept falling" if v["train_falling"] else "did not keep falling"
    return (f"- **Full finetuning overfits**: {VERDICT[v['reproduced']]}. Eval loss fell from "
            f"{v['eval_first']:.4f} to its minimum **{v['min_eval']:.4f} at step {v['min_step']}** of "
            f"{v['final_step']}, then ended at **{v['final_eval']:.4f}** (rise {v['rise']:+.4f}; a turn needs more "
            f"than {fd.RISE_TOL}), while train loss {trend} after the minimum ({v['train_at_min']:.4f} around step "
            f"{v['min_step']} → {v['train_final']:.4f} over the last {fd.TREND_WINDOW:.0%} of steps).")


def lora_finding(v: dict) -> str:
    worst = max(v["runs"].items(), key=lambda kv: kv[1]["rise"])
    falls = ", ".join(f"{name.replace('LoRA ', '')} {x['eval_first']:.3f}→{x['final_eval']:.3f}"
                      for name, x in v["runs"].items())
    return (f"- **LoRA's eval loss falls along with its train loss**: {VERDICT[v['reproduced']]}. Eval loss "
            f"at step 0 → at the end: {falls}. Largest end-above-minimum rise: {worst[1]['rise']:.4f} "
            f"({worst[0]}); runs whose eval loss turned up (rise > {fd.RISE_TOL}), or whose train or eval loss did "
            f"not fall: {', '.join(v['failing']) or 'none'}.")


def alike_finding(v: dict | None, rank: int | None) -> str:
    if v is None:
        return "- **Ranks look alike**: not decided (no rank was run with a second seed)."
    return (f"- **Ranks look alike**: {VERDICT[v['reproduced']]}. Final eval losses of ranks "
            f"{', '.join(map(str, v['ranks']))} span **{v['spread']:.4f}** (best r={v['best_rank']}, worst "
            f"r={v['worst_rank']}); the same rank {rank} with two seeds ends {v['seed_spread']:.4f} apart, so the rank "
            f"spread is {v['ratio']:.1f}× the seed spread (alike means at most {fd.ALIKE_FACTOR:g}× it: bound "
            f"{v['bound']:.4f}). For scale, the rank spread is {v['relative_spread']:.2%} of the mean final eval loss "
            f"{v['mean']:.3f}.")


def longer_finding(v: dict) -> str:
    """Cut answers' lengths are the limit's: the lengths compared are those of the answers that ended."""
    ended = ", ".join(f"{name} **{v['ended'][name]}/{v['n_all']}**" for name in (v["base"], v["full"], v["lora"]))
    text = (f"- **LoRA answers are longer**: {VERDICT[v['reproduced']]}. Answers that ended with end-of-text "
            f"before the generation limit: {ended}. On the {v['n']} instructions that both {v['lora']} and "
            f"{v['full']} answered to the end, ")
    if not v["n"]:
        return text + "there is nothing to compare (no such instruction): not decided."
    means = v["mean_ended"]
    text += (f"mean length {v['lora']} **{means[v['lora']]:.1f}** vs {v['full']} **{means[v['full']]:.1f}** tokens; "
             f"paired difference {v['diff']:+.1f} ± {v['diff_se']:.1f} (longer means more than two standard errors "
             "above 0)" + ("" if v["decided"] else f"; fewer than {fd.MIN_PAIRS} such pairs decide nothing"))
    return text + f". All answers, cut ones included: {', '.join(f'{k} {x:.1f}' for k, x in v['mean'].items())} tokens."


def answers(gens: dict) -> tuple[dict[str, list[int]], dict[str, list[bool]]]:
    """Per model and instruction, from generate.py's details: the answer's length in tokens, whether it ended."""
    details = {n: [r["details"][n] for r in gens["results"]] for n in gens["results"][0]["responses"]}
    return ({n: [d["tokens"] for d in ds] for n, ds in details.items()},
            {n: [d["stop"] == "eos" for d in ds] for n, ds in details.items()})


def finetune_values(sweep: dict[str, Run], gens: dict, cmds: dict) -> tuple[dict[str, str], dict]:
    """The sweep's table and the four findings ({slot: text}, {finding: its numbers} for findings.json)."""
    lora = {}   # rank -> its LoRA run with the sweep's seed (listed first)
    for r in sweep.values():
        if r.rank > 0:
            lora.setdefault(r.rank, r)
    v_full = fd.full_overfits_verdict(sweep["full finetuning"].rows)
    v_lora = fd.lora_follows_verdict({r.label: r.rows for r in lora.values()})
    pair = next((r for r in sweep.values() if r.rank and lora[r.rank] is not r), None)   # a second-seed run
    final = {rank: fd.eval_shape(r.rows)["final_eval"] for rank, r in lora.items()}
    v_alike = pair and fd.ranks_alike_verdict(final, (final[pair.rank], fd.eval_shape(pair.rows)["final_eval"]))
    lengths, ended = answers(gens)   # the models by what each is, from their names in generations.json
    lora_name, full_name = (next(n for n in lengths if what in n.lower()) for what in ("lora", "full"))
    base = next(n for n in lengths if n not in (lora_name, full_name))
    v_long = fd.lora_longer_verdict(lengths, lora=lora_name, full=full_name, base=base, ended=ended)
    verdicts = {"full_overfits": v_full, "lora_follows": v_lora, "ranks_alike": v_alike, "lora_longer": v_long}
    text = "\n".join([full_finding(v_full), lora_finding(v_lora), alike_finding(v_alike, pair and pair.rank),
                      longer_finding(v_long)])
    return {**protocol_values(sweep), "sweep_cmd": cmd_note(cmds, "sweep"), "sweep_table": sweep_table(sweep),
            "findings": text}, verdicts


# -- 4. generations ---------------------------------------------------------------------------------------------------

def generation_values(gens: dict, cmds: dict) -> dict[str, str]:
    (lengths, ended), c = answers(gens), gens.get("config", {})
    shown = []
    for it in gens["results"][:4]:
        shown.append(f"**Instruction:** {it['instruction']}" + (f" *Input:* {it['input']}" if it.get("input") else "")
                     + "\n")
        shown += [f"- *{name}*: {' '.join(str(text).split())[:500] or '(empty)'}"
                  for name, text in it["responses"].items()]
        shown.append("")
    how = ("greedy decoding" if c.get("greedy") else f"sampling at temperature {c.get('temperature')}, top-k "
           f"{c.get('top_k') or 'off'}, top-p {c.get('top_p')}, seed {c.get('seed')}")
    return {"gen_cmd": cmd_note(cmds, "generate"), "gen_n": str(len(gens["results"])),
            "length_line": "; ".join(f"{name} {m:.1f} ± {se:.1f}" for name, (m, se) in
                                     ((n, fd.mean_se(v)) for n, v in lengths.items())),
            "generations": "\n".join(shown),
            "gen_settings": f"{how}; at most {c.get('max_new_tokens')} new tokens per answer",
            "gen_template": str(c.get("template")),
            "ended_line": "; ".join(f"{name} {sum(v)}/{len(v)}" for name, v in ended.items())}
