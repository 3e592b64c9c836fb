"""Build report/README.md (and the PNG figures beside it) from the files a pipeline run wrote.

Reads only files (report/ imports nothing from bpe/, pretrain/ or finetune/):
  RUN/bpe/summary.json, RUN/bpe/tokenizer.json      the BPE tokenizer trained on manual.txt
  RUN/pretrain/log.jsonl, RUN/pretrain/summary.json  pretraining on Tiny Shakespeare
  RUN/sweep/r*/log.jsonl, RUN/sweep/r*/summary.json  LoRA ranks and full finetuning (rank 0)
  RUN/generations.json                               responses of base, fully finetuned and LoRA models
  RUN/pipeline.jsonl                                 the command and wall time of every stage
Every example in the tokenizer questions is computed here, at build time, with tiktoken's GPT-2 encoding (built from
the local gpt2/encoder.json + vocab.bpe) and our tokenizer (its tokenizer.json, read by the `tokenizers` library).
A missing input is one clear error naming the file and the pipeline stage that writes it.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

import datadir  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
# Figures the homework reported (its bpe/output.log), quoted for comparison with ours.
HOMEWORK_COUNTS = {"english": {"ours": 938, "gpt2": 185}, "chinese": {"ours": 113, "gpt2": 306}}
# Anchors for the GPU presets: GPT-2 124M (OpenAI) and build-nanogpt's 10B-token run, full HellaSwag val.
ANCHORS = {"gpt2_124m_hellaswag_acc_norm": 0.2955, "build_nanogpt_10b_hellaswag_acc_norm": 0.30}


class ReportInputError(RuntimeError):
    pass


def read_json(path: Path, stage: str):
    if not path.is_file():
        raise ReportInputError(f"missing {path} (written by pipeline stage '{stage}'; run "
                               f"`python report/pipeline.py --only {stage}`)")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ReportInputError(f"{path}: not valid JSON ({e})") from e


def read_jsonl(path: Path, stage: str) -> list[dict]:
    if not path.is_file():
        raise ReportInputError(f"missing {path} (written by pipeline stage '{stage}')")
    rows = []
    for i, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise ReportInputError(f"{path}:{i}: not valid JSON ({e})") from e
    return rows


def series(rows: list[dict], key: str) -> tuple[list, list]:
    pts = [(r["step"], r[key]) for r in rows if key in r and r.get(key) is not None and "step" in r]
    return [s for s, _ in pts], [v for _, v in pts]


# ----------------------------------------------------------------------------------------------------------------
# Tokenizers, as files


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable-character map (openai/gpt-2 encoder.py), used by byte-level tokenizer.json."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


class TiktokenGPT2:
    """GPT-2's encoding (tiktoken) built from the local OpenAI files."""
    name = "GPT-2"

    def __init__(self, data_dir=None):
        import tiktoken
        from tiktoken.load import data_gym_to_mergeable_bpe_ranks

        ranks = data_gym_to_mergeable_bpe_ranks(vocab_bpe_file=str(datadir.find("gpt2/vocab.bpe", data_dir)),
                                                encoder_json_file=str(datadir.find("gpt2/encoder.json", data_dir)))
        self.enc = tiktoken.Encoding("gpt2", pat_str=GPT2_PATTERN, mergeable_ranks=ranks,
                                     special_tokens={"<|endoftext|>": 50256})
        self.vocab_size = self.enc.n_vocab

    def encode(self, text: str) -> list[int]:
        return self.enc.encode_ordinary(text)

    def piece(self, i: int) -> bytes:
        return self.enc.decode_single_token_bytes(i)


class FileTokenizer:
    """A tokenizer.json written by bpe/train.py, read by Hugging Face `tokenizers` (no bpe code imported)."""
    name = "ours"

    def __init__(self, path: Path):
        from tokenizers import Tokenizer

        if not path.is_file():
            raise ReportInputError(f"missing {path} (written by pipeline stage 'bpe')")
        self.tok = Tokenizer.from_file(str(path))
        self.vocab_size = self.tok.get_vocab_size()
        self.byte_of = {c: b for b, c in bytes_to_unicode().items()}

    def encode(self, text: str) -> list[int]:
        return self.tok.encode(text, add_special_tokens=False).ids

    def piece(self, i: int) -> bytes:
        s = self.tok.id_to_token(i)
        if all(c in self.byte_of for c in s):
            return bytes(self.byte_of[c] for c in s)
        return s.encode()  # a special token


def show_piece(b: bytes) -> str:
    """A token readable inside a markdown table or code span: escapes for control and partial UTF-8 bytes, and
    spaces shown as '␣' (markdown would eat a leading space)."""
    return show_readable(repr(b.decode("utf-8", errors="backslashreplace"))[1:-1])


def tokens_md(tok, text: str, limit: int = 40) -> str:
    ids = tok.encode(text)
    shown = " · ".join(f"`{show_piece(tok.piece(i))}`" for i in ids[:limit])
    more = f" … (+{len(ids) - limit})" if len(ids) > limit else ""
    return f"{len(ids)} token{'s' if len(ids) != 1 else ''}: {shown}{more}"


# ----------------------------------------------------------------------------------------------------------------
# Figures


def save_fig(fig, path: Path) -> str:
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=110, bbox_inches="tight")
    plt.close(fig)
    os.replace(tmp, path)
    return path.name


def plot_pretrain(rows: list[dict], out: Path) -> str:
    fig, ax = plt.subplots(figsize=(7, 4))
    s, v = series(rows, "loss")
    ax.plot(s, v, lw=0.8, alpha=0.6, label="train")
    s, v = series(rows, "val_loss")
    ax.plot(s, v, "o-", label="val")
    ax.set(xlabel="step", ylabel="cross-entropy loss", title="Pretraining on Tiny Shakespeare")
    ax.legend()
    ax.grid(alpha=0.3)
    return save_fig(fig, out)


def plot_sweep(runs: dict[int, list[dict]], out: Path) -> str:
    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 4.2), sharey=True)
    cmap = plt.get_cmap("viridis")
    ranks = sorted(runs)
    for k, r in enumerate(ranks):
        label = "full finetuning" if r == 0 else f"LoRA r={r}"
        style = dict(color="crimson", lw=2) if r == 0 else dict(color=cmap(k / max(1, len(ranks) - 1)))
        s, v = series(runs[r], "train_loss")
        a.plot(s, v, label=label, alpha=0.8, **style)
        s, v = series(runs[r], "eval_loss")
        b.plot(s, v, "o-", ms=3, label=label, **style)
    a.set(title="train loss", xlabel="step", ylabel="loss")
    b.set(title="eval loss", xlabel="step")
    for ax in (a, b):
        ax.grid(alpha=0.3)
    b.legend(fontsize=8)
    fig.suptitle("LoRA rank sweep vs full finetuning (Alpaca)")
    return save_fig(fig, out)


# ----------------------------------------------------------------------------------------------------------------
# Sections


def md_table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def fmt(x, nd=4):
    if x is None:
        return "–"
    if isinstance(x, float):
        return f"{x:.{nd}f}" if math.isfinite(x) else str(x)
    return f"{x:,}" if isinstance(x, int) else str(x)


def commands_of(pipeline: list[dict]) -> dict[str, dict]:
    """Latest successful record of each stage."""
    out = {}
    for r in pipeline:
        if r.get("returncode") == 0:
            out[r["stage"]] = r
    return out


def scale_of(cmds: dict) -> str:
    """'CPU' or 'GPU': the pipeline preset the recorded stages ran with."""
    presets = {r.get("preset", "cpu") for r in cmds.values()}
    return "GPU" if "gpu" in presets else "CPU"


def data_name(run: Path) -> str:
    """What the pretraining data was, from the shards' meta.json (file names or the HF dataset)."""
    meta = run / "shards/meta.json"
    if not meta.is_file():
        return "its data"
    sources = json.loads(meta.read_text()).get("sources") or []
    return ", ".join(src if ":" in src and not Path(src).exists() else Path(src).name for src in sources) or "its data"


def cmd_note(cmds: dict, stage: str) -> str:
    r = cmds.get(stage)
    return f"`{r['command']}` ({r['seconds']:.0f} s)" if r else "(stage command not recorded)"


def section_bpe(run: Path, cmds: dict) -> str:
    s = read_json(run / "bpe/summary.json", "bpe")
    comp = s["comparison"]
    rows = [[lang.capitalize(), comp[lang]["chars"], comp[lang]["ours"], comp[lang]["gpt2"],
             HOMEWORK_COUNTS[lang]["ours"], HOMEWORK_COUNTS[lang]["gpt2"]] for lang in ("english", "chinese")]
    first = ", ".join(f"{i}:`{show_readable(t)}`" for i, t in s["first_tokens"])
    last = ", ".join(f"{i}:`{show_readable(t)}`" for i, t in s["last_tokens"])
    ratio = {lang: comp[lang]["gpt2"] / comp[lang]["ours"] for lang in comp}
    return f"""## 1. BPE tokenizer trained on manual.txt

Produced by {cmd_note(cmds, 'bpe')}: vocabulary {s['vocab_size']}, pre-split pattern `{s['pattern']}`,
{s['corpus_bytes']:,} bytes of corpus, trained in {s['train_seconds']:.2f} s.

- First 10 tokens: {first}
- Last 10 tokens: {last}
- Round trip encode → decode over the whole corpus: **{'exact' if s['roundtrip_ok'] else 'FAILED'}**
- Compression: {s['n_tokens']:,} tokens, **{s['bytes_per_token']:.2f} bytes per token**

Token counts of the same paragraphs (ours vs GPT-2; the homework's figures beside them):

{md_table(['text', 'chars', 'ours', 'GPT-2', 'homework: ours', 'homework: GPT-2'], rows)}

Our {s['vocab_size']:,}-token vocabulary, trained on a mostly Chinese handbook, needs {1 / ratio['chinese']:.2f}× GPT-2's tokens
on the Chinese paragraph and {1 / ratio['english']:.2f}× on the English one: each tokenizer compresses the language it
was trained on. The homework saw the same direction (938 vs 185 English, 113 vs 306 Chinese).
"""


def show_readable(t: str) -> str:
    """summary.json holds tokens already made readable (escapes for bytes); only make them markdown-safe."""
    return str(t).replace("|", "\\|").replace("`", "'").replace(" ", "␣")


def section_pretrain(run: Path, cmds: dict, out_dir: Path) -> str:
    rows = read_jsonl(run / "pretrain/log.jsonl", "pretrain")
    s = read_json(run / "pretrain/summary.json", "pretrain")
    fig = plot_pretrain(rows, out_dir / "pretrain_loss.png")
    samples = [r for r in rows if "sample" in r]
    first_loss = next((r["loss"] for r in rows if "loss" in r), None)
    hs = [r for r in rows if "hellaswag_acc_norm" in r]
    hs_line = (f"**{hs[-1]['hellaswag_acc_norm']:.4f}** acc_norm on {hs[-1].get('hellaswag_n', '?')} examples of the "
               f"local HellaSwag validation subset (ActivityNet part; chance = 0.25)") if hs else "not measured"
    sample_md = ""
    for r in (samples[:1] + samples[-1:]) if len(samples) > 1 else samples:
        text = r["sample"] if isinstance(r["sample"], str) else "\n---\n".join(r["sample"])
        sample_md += f"\nStep {r['step']}:\n\n```text\n{text.strip()[:800]}\n```\n"
    keys = [k for k in ("params", "steps", "tokens", "wall_time_s", "train_time_s", "tokens_per_s",
                        "final_val_loss", "mfu", "world_size", "device") if k in s]
    mc = s.get("model_config") or {}
    shape = (f"GPT-2 ({mc['n_layer']} layers, {mc['n_embd']} dims, T={mc['block_size']})"
             if {"n_layer", "n_embd", "block_size"} <= set(mc) else "GPT-2")
    return f"""## 2. Pretraining {shape} on {data_name(run)}

Produced by {cmd_note(cmds, 'pretrain')} ({scale_of(cmds)} scale), after {cmd_note(cmds, 'data')}.

![pretraining loss]({fig})

Loss fell from {fmt(first_loss)} at the first step to a final validation loss of {fmt(s.get('final_val_loss'))}.
HellaSwag: {hs_line}.

{md_table(['measure', 'value'], [[k, fmt(s[k])] for k in keys])}

Samples (prompted generation with the KV cache):
{sample_md}
{hs_verdict(hs)}
"""


def hs_verdict(hs: list[dict]) -> str:
    if not hs:
        return ""
    acc, n = hs[-1]["hellaswag_acc_norm"], hs[-1].get("hellaswag_n") or 0
    se = (0.25 * 0.75 / n) ** 0.5 if n else float("nan")
    near = abs(acc - 0.25) <= 2 * se
    return (f"HellaSwag {acc:.4f} is {'within' if near else 'outside'} two standard errors (±{2 * se:.3f}) of chance "
            f"(0.25) at n={n}" + (": a model of this size and data learns Shakespeare's form (speaker names, line "
                                  "breaks, archaic words), not common sense. " if near else ". ")
            + "The build-nanogpt-scale run (GPU preset below) is what reaches GPT-2's ≈0.2955.")


def load_sweep(run: Path) -> tuple[dict[int, list[dict]], dict[int, dict]]:
    sweep = run / "sweep"
    if not sweep.is_dir():
        raise ReportInputError(f"missing {sweep} (written by pipeline stage 'sweep')")
    logs, sums = {}, {}
    for d in sorted(sweep.glob("r*")):
        if d.is_dir() and d.name[1:].isdigit():
            r = int(d.name[1:])
            logs[r] = read_jsonl(d / "log.jsonl", "sweep")
            sums[r] = read_json(d / "summary.json", "sweep")
    if not logs:
        raise ReportInputError(f"{sweep} holds no r<rank>/ runs (written by pipeline stage 'sweep')")
    return logs, sums


def section_sweep(run: Path, cmds: dict, out_dir: Path) -> str:
    logs, sums = load_sweep(run)
    fig = plot_sweep(logs, out_dir / "sweep_curves.png")
    rows = []
    for r in sorted(sums):
        s = sums[r]
        _, ev = series(logs[r], "eval_loss")
        rows.append(["full" if r == 0 else r, fmt(s.get("final_eval_loss")), fmt(min(ev) if ev else None),
                     fmt(s.get("trainable_params")),
                     f"{100 * s['trainable_params'] / s['total_params']:.2f}%" if s.get("total_params") else "–",
                     fmt(s.get("wall_seconds"), 1), fmt(s.get("peak_memory_mb"), 0)])
    verdict = sweep_verdict(logs)
    return f"""## 3. LoRA rank sweep against full finetuning

Produced by {cmd_note(cmds, 'sweep')}.

![LoRA sweep]({fig})

{md_table(['rank', 'final eval loss', 'best eval loss', 'trainable params', 'trainable %', 'wall s', 'peak MB'], rows)}

{verdict}
"""


def sweep_verdict(logs: dict[int, list[dict]]) -> str:
    """Say, from the numbers, whether this run shows the homework's conclusions."""
    out = []
    if 0 in logs:
        _, ev = series(logs[0], "eval_loss")
        if ev:
            best = min(ev)
            rise = ev[-1] - best
            out.append(f"- Full finetuning: best eval loss {best:.4f}, final {ev[-1]:.4f} "
                       + ("(**rises after its minimum: it overfits**, as in the homework)." if rise > 1e-3 else
                          "(no rise after its minimum: in this run's steps and data full finetuning does **not** reach "
                          "the overfitting the homework saw)."))
    lora = {r: series(v, "eval_loss")[1] for r, v in logs.items() if r > 0}
    lora = {r: v for r, v in lora.items() if v}
    if lora:
        falling = [r for r, v in lora.items() if v[-1] <= min(v) + 1e-6]
        finals = [v[-1] for v in lora.values()]
        spread = max(finals) - min(finals)
        out.append(f"- LoRA: eval loss still at its minimum at the last evaluation for ranks {sorted(falling)} "
                   f"of {sorted(lora)}" + (" (keeps falling, as in the homework)." if len(falling) == len(lora)
                                           else "."))
        out.append(f"- Ranks look {'alike' if spread < 0.05 * min(finals) else 'different'}: final eval losses span "
                   f"{min(finals):.4f}–{max(finals):.4f} (spread {spread:.4f}).")
        if 0 in logs:
            _, ev0 = series(logs[0], "eval_loss")
            if ev0:
                better = [r for r, v in lora.items() if v[-1] < ev0[-1]]
                out.append(f"- LoRA ranks with a lower final eval loss than full finetuning: {sorted(better) or 'none'}.")
    return "\n".join(out)


def section_generations(run: Path, cmds: dict) -> str:
    g = read_json(run / "generations.json", "generate")
    items = g["results"] if isinstance(g, dict) and "results" in g else g
    parts = [f"## 4. Generations: original vs fully finetuned vs LoRA\n\nProduced by {cmd_note(cmds, 'generate')}.\n"]
    for it in items[:4]:
        parts.append(f"**Instruction:** {it['instruction']}\n")
        for model, text in it["responses"].items():
            t = " ".join(str(text).split())[:400]
            parts.append(f"- *{model}*: {t}")
        parts.append("")
    return "\n".join(parts)


def section_questions(ours, gpt2) -> str:
    """The homework's ten tokenizer questions, each example computed now."""
    both = lambda text: f"- GPT-2: {tokens_md(gpt2, text)}\n- ours: {tokens_md(ours, text)}"  # noqa: E731
    q = []
    s = "大模型"
    q.append(f"""**1. Unicode: `ord` and `chr`.** `ord("北")` = {ord("北")}, `ord("大")` = {ord("大")};
`chr(22823) + chr(27169) + chr(22411)` = "{chr(22823) + chr(27169) + chr(22411)}". In UTF-8, "{s}" is
{len(s.encode())} bytes (`{s.encode().hex(' ')}`), which is what a byte-level BPE starts from.""")
    para = ("The tokenizer is a necessary and pervasive component of Large Language Models (LLMs), where it "
            "translates between strings and tokens (text chunks).")
    emb = {v: v * 768 for v in (ours.vocab_size, gpt2.vocab_size)}
    q.append(f"""**2. Vocabulary size.** A larger vocabulary shortens sequences (more text fits the context, fewer
steps per token of text) but costs embedding and output-layer parameters ({ours.vocab_size:,} × 768 =
{emb[ours.vocab_size]:,} vs {gpt2.vocab_size:,} × 768 = {emb[gpt2.vocab_size]:,} each, at GPT-2 small's width),
softmax compute, and rarer tokens that are each seen less in training. The same English sentence:
{both(para)}""")
    word = ".DefaultCellStyle"
    q.append(f"""**3. Why can't an LLM reverse a string?** It never sees letters, only tokens: `{word}` is
{tokens_md(gpt2, word)} under GPT-2. Reversing needs the letters inside each token, which the model must have
memorised per token; splitting the word into characters first (one token each) makes the task easy.""")
    en, zh = "Peking University is a university in Beijing.", "北京大学是位于北京的一所大学。"
    q.append(f"""**4. Why are LLMs worse at non-English languages?** Less training text, and a tokenizer trained
mostly on English spends more tokens on the same meaning, so less fits the context:
- English `{en}`: GPT-2 {len(gpt2.encode(en))} tokens, ours {len(ours.encode(en))}
- Chinese `{zh}`: GPT-2 {len(gpt2.encode(zh))} tokens, ours {len(ours.encode(zh))}""")
    q.append(f"""**5. Why is arithmetic hard?** Numbers are cut into arbitrary multi-digit chunks, so digits do not
line up by place value:
- `127 + 677 = 804`: {tokens_md(gpt2, '127 + 677 = 804')}
- `1275 + 6773 = 8048`: {tokens_md(gpt2, '1275 + 6773 = 8048')}
- `12345678`: {tokens_md(gpt2, '12345678')}""")
    code = "def f(x):\n        if x:\n            return x\n"
    q.append(f"""**6. Why was GPT-2 bad at Python?** Its tokenizer spends one token per space of indentation
(GPT-4's merges runs of spaces):
```python
{code}```
{both(code)}""")
    try:
        import tiktoken  # noqa: F401
        gpt2.enc.encode("<|endoftext|>")
        eot = "encoded without complaint (unexpected)"
    except ValueError as e:
        eot = f"refused: tiktoken raises `{str(e).splitlines()[0][:90]}…`"
    q.append(f"""**7. Why does `<|endoftext|>` break things?** It is a special token (GPT-2 id
{gpt2.enc.encode('<|endoftext|>', allowed_special='all')}): if user text containing it were encoded as the special
token, a user could end documents or inject control. With tiktoken's default policy the text is {eot}; as ordinary
text it is {tokens_md(gpt2, '<|endoftext|>')}.""")
    q.append(f"""**8. SolidGoldMagikarp.** ` SolidGoldMagikarp` is {tokens_md(gpt2, ' SolidGoldMagikarp')} in GPT-2's
vocabulary: the tokenizer's training data (Reddit usernames) held it often, the model's training data almost never, so
its embedding stayed untrained and prompts with it produce erratic outputs.""")
    js = '{"name": "GPT-2", "layers": 12, "heads": 12, "tokens": [1, 2, 3]}'
    ya = "name: GPT-2\nlayers: 12\nheads: 12\ntokens:\n  - 1\n  - 2\n  - 3\n"
    q.append(f"""**9. YAML vs JSON.** The same data costs different numbers of tokens:
- JSON: GPT-2 {len(gpt2.encode(js))}, ours {len(ours.encode(js))}
- YAML: GPT-2 {len(gpt2.encode(ya))}, ours {len(ours.encode(ya))}
Under GPT-2 {'YAML is denser' if len(gpt2.encode(ya)) < len(gpt2.encode(js)) else 'JSON is denser'} for this record;
fewer tokens means cheaper, longer-context structured output.""")
    variants = ["egg", " egg", "Egg", " EGG"]
    rows = "; ".join(f"`{v!r}` → {gpt2.encode(v)}" for v in variants)
    q.append(f"""**10. Why is an LLM not end-to-end?** Tokenization is a separate, frozen stage trained with its own
algorithm on its own data, before and outside the network; its quirks are inherited by the model. The same word gets
unrelated ids by case and leading space ({rows}), so the model must learn their relation from data.""")
    return "## 5. The ten tokenizer questions (examples computed at build time)\n\n" + "\n\n".join(q) + "\n"


def section_gpu(scale: str) -> str:
    return f"""## 6. GPU presets (full scale)

{"Not run at CPU scale; runnable" if scale == "CPU" else "This report is from the GPU preset; the commands are"} as documented:

```bash
# build-nanogpt-equivalent pretraining of GPT-2 124M (FineWeb-Edu sample-10BT, 524,288 tokens/step, 19,073 steps)
python pretrain/prepare.py --hf_dataset HuggingFaceFW/fineweb-edu --hf_config sample-10BT --val_fraction 0.01 --tokenizer gpt2 --out_dir runs/gpu/shards
torchrun --nproc_per_node=8 pretrain/train.py --preset gpt2-124m --data runs/gpu/shards --out_dir runs/gpu/pretrain
# or all of it, these two steps included: BPE, FineWeb-Edu shards, the 8-GPU pretraining, the LoRA sweep on hub gpt2
# over all of Alpaca (one rank per GPU at a time), generations and this report for the GPU run
python report/pipeline.py --preset gpu --report_dir report/gpu
```

Anchors to compare against: GPT-2 124M (OpenAI) HellaSwag acc_norm ≈ {ANCHORS['gpt2_124m_hellaswag_acc_norm']};
build-nanogpt's 10B-token run ≈ {ANCHORS['build_nanogpt_10b_hellaswag_acc_norm']} (full validation set; the offline
subset here is the ActivityNet part only, so its numbers are not directly comparable).
"""


def build(run: Path, out_dir: Path, data_dir=None) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    pipeline = read_jsonl(run / "pipeline.jsonl", "any") if (run / "pipeline.jsonl").is_file() else []
    cmds = commands_of(pipeline)
    ours = FileTokenizer(run / "bpe/tokenizer.json")
    gpt2 = TiktokenGPT2(data_dir)
    total = sum(r["seconds"] for r in cmds.values())
    timing = md_table(["stage", "command", "wall s"], [[k, f"`{v['command']}`", f"{v['seconds']:.0f}"]
                                                       for k, v in cmds.items()])
    scale = scale_of(cmds)
    how = ("`bash report/run_pipeline.sh` (2-core CPU scale)" if scale == "CPU"
           else "`python report/pipeline.py --preset gpu` (GPU scale)")
    parts = [f"""# Report: the homework regenerated from one {scale}-scale run

Built by `python report/build_report.py --run_dir {os.path.relpath(run, ROOT)}` from the outputs of
{how}. Recorded stage wall time: {total:.0f} s
({total / 60:.1f} min) in all.

{timing}
""", section_bpe(run, cmds), section_pretrain(run, cmds, out_dir), section_sweep(run, cmds, out_dir),
             section_generations(run, cmds), section_questions(ours, gpt2), section_gpu(scale)]
    target = out_dir / "README.md"
    tmp = target.with_name("README.md.tmp")
    tmp.write_text("\n".join(parts))
    os.replace(tmp, target)
    return target


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run_dir", type=Path, default=ROOT / "runs" / "cpu")
    p.add_argument("--out_dir", type=Path, default=ROOT / "report")
    p.add_argument("--data_dir", default=None)
    args = p.parse_args(argv)
    try:
        path = build(args.run_dir.resolve(), args.out_dir.resolve(), args.data_dir)
    except (ReportInputError, datadir.DataFileNotFound) as e:
        print(f"build_report: {e}", file=sys.stderr)
        return 2
    print(f"report written: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
