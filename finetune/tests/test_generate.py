"""generate.py on tiny random GPT-2 models: held-out instructions from a partition, every response kept with its
length and stop reason, greedy output equal to a naive argmax loop, seeded sampling, and one-line refusals."""
import json
import lzma

import pytest
import torch
from conftest import tiny_gpt2, user_error

import partition
import generate
import lora


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models run ~50x slower with 2 threads than 1 on a loaded 2-core machine (thread contention)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def save(model, folder, tok):
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def models(tmp_path_factory, tiny_model_dir, gpt2_tok):
    """base (conftest's), a 'full finetune' (other random weights), a random rank-2 adapter on base, a model that
    always says EOS at once, and a 40-position model (its context ends before --max_new_tokens)."""
    d = tmp_path_factory.mktemp("gen")
    full = save(tiny_gpt2(seed=1), d / "full", gpt2_tok)
    model = tiny_gpt2()
    lora.convert_linear_layer_to_lora(model, "h.", lora_dim=2, lora_scaling=4)
    torch.manual_seed(2)
    for m in lora.lora_modules(model).values():
        torch.nn.init.normal_(m.lora_left_weight, std=0.5)  # a new adapter is zero: make it change the output
    lora.save_adapter(model, d / "adapter", base_model_name_or_path=str(tiny_model_dir))
    eos = tiny_gpt2()
    with torch.no_grad():  # final hidden state = b whatever the input; EOS's embedding row aligned with b
        b = torch.randn(16)
        eos.transformer.ln_f.weight.zero_()
        eos.transformer.ln_f.bias.copy_(b)
        eos.transformer.wte.weight[50256] = 50 * b / b.norm()
    short = tiny_gpt2()
    short.config.n_positions = 40
    short.transformer.wpe = torch.nn.Embedding(40, 16)
    return {"base": tiny_model_dir, "full": full, "adapter": d / "adapter",
            "eos": save(eos, d / "eos", gpt2_tok), "short": save(short, d / "short", gpt2_tok)}


@pytest.fixture(scope="module")
def partition_dir(tmp_path_factory):
    """A partition of 60 hand-made records: 20 held-out instructions in no training split."""
    d = tmp_path_factory.mktemp("part")
    src = d / "records.jsonl"
    src.write_text("".join(json.dumps({"instruction": f"Describe item number {i}.", "input": "" if i % 3 else "x",
                                       "output": f"Item {i} is fine."}) + "\n" for i in range(60)))
    partition.main(["--out_dir", str(d / "p"), "--data_path", str(src), "--max_examples", "30", "--eval_ratio", "0.2",
               "--data_seed", "5", "--heldout", "20"])
    return d / "p"


def naive_greedy(model, tok, prompt, n):
    """Reference: n steps of argmax over the full forward pass, stopping at EOS (no generate(), no cache)."""
    ids = tok(prompt, add_special_tokens=False)["input_ids"]
    new = []
    with torch.no_grad():
        for _ in range(n):
            nxt = int(model(torch.tensor([ids + new])).logits[0, -1].argmax())
            if nxt == tok.eos_token_id:
                break
            new.append(nxt)
    return new


def test_builtin_instructions_are_twenty_and_no_alpaca_instruction(alpaca_path):
    alpaca = {r["instruction"].strip() for r in json.load(lzma.open(alpaca_path, "rt", encoding="utf-8"))}
    builtin = [it["instruction"] for it in generate.read_instructions(None)]
    assert len(set(builtin)) == len(builtin) == 20 and not alpaca & set(builtin)


def test_generates_heldout_instructions_for_base_full_and_lora(models, partition_dir, tmp_path, gpt2_tok):
    from transformers import AutoModelForCausalLM

    out = tmp_path / "g.json"
    res = generate.main(["--base", str(models["base"]), "--full", str(models["full"]), "--lora",
                         str(models["adapter"]), "--instructions", str(partition_dir), "--greedy",
                         "--max_new_tokens", "6", "--out", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(res)) and out.with_suffix(".md").is_file()
    # no absolute path of this machine in the file: local paths are relative to the output's folder
    assert str(tmp_path) not in out.read_text() and "/tmp" not in out.read_text()
    assert (out.parent / res["config"]["base"]).resolve() == models["base"].resolve()
    assert (out.parent / res["config"]["lora"][0]).resolve() == models["adapter"].resolve()
    assert res["models"]["LoRA r=2"] == f"{res['config']['base']} + adapter {res['config']['lora'][0]} (merged)"
    heldout = [json.loads(line) for line in (partition_dir / "instructions.jsonl").read_text().splitlines()]
    split = partition.read_split(partition_dir)
    assert [r["index"] for r in res["results"]] == split["indices"]["heldout"] and len(res["results"]) == 20
    assert [r["reference"] for r in res["results"]] == [h["output"] for h in heldout]
    assert res["format"] == "llmhw-generations" and res["version"] == 2
    assert list(res["models"]) == list(res["stats"]) == ["original", "full finetune", "LoRA r=2"]
    for name in res["models"]:
        details = [r["details"][name] for r in res["results"]]
        assert all(d["stop"] == "max_new_tokens" and d["tokens"] == 6 for d in details)  # random: no EOS
        s = res["stats"][name]
        assert s["responses"] == 20 and s["mean_tokens"] == 6 and s["hit_max_new_tokens"] == 1
        assert s["mean_words"] == pytest.approx(sum(len(r["responses"][name].split()) for r in res["results"]) / 20)
    # greedy responses equal a naive argmax loop: on the base, and on base + adapter unmerged (tests the merge)
    base = AutoModelForCausalLM.from_pretrained(models["base"]).eval()
    with_adapter, _ = lora.load_adapter(AutoModelForCausalLM.from_pretrained(models["base"]).eval(), models["adapter"])
    assert len({len(gpt2_tok(r["prompt"])["input_ids"]) for r in res["results"]}) > 1  # batches hold padding
    for r in res["results"][:10]:
        for name, model in (("original", base), ("LoRA r=2", with_adapter)):
            ref = gpt2_tok.decode(naive_greedy(model, gpt2_tok, r["prompt"], 6), skip_special_tokens=True).strip()
            assert r["responses"][name] == ref
        assert r["responses"]["LoRA r=2"] != r["responses"]["original"]


def test_sampling_is_seeded_and_stop_reasons(models, tmp_path, gpt2_tok):
    leftovers = [tmp_path / ".d.json.llmhw-k1ll3d.tmp", tmp_path / ".d.md.llmhw-x.tmp"]  # of a killed write
    for p in leftovers + [tmp_path / ".d.json.mine.tmp"]:
        p.write_text("half a file")
    default = generate.main(["--base", str(models["base"]), "--max_new_tokens", "1", "--out",
                             str(tmp_path / "d.json")])
    assert not any(p.exists() for p in leftovers) and (tmp_path / ".d.json.mine.tmp").is_file()  # ours only
    builtin = generate.read_instructions(None)
    assert [r["instruction"] for r in default["results"]] == [i["instruction"] for i in builtin]
    short_prompts = tmp_path / "short.txt"
    short_prompts.write_text("Say hi.\nName a colour.\nCount to three.\nWhy?\n")
    argv = ["--base", str(models["base"]), "--instructions", str(short_prompts), "--max_new_tokens", "5", "--out"]
    a = generate.main(argv + [str(tmp_path / "a.json")])
    b = generate.main(argv + [str(tmp_path / "b.json")])
    c = generate.main(argv + [str(tmp_path / "c.json"), "--seed", "7"])
    assert a["results"] == b["results"] and a["results"] != c["results"]
    eos = generate.main(["--base", str(models["eos"]), "--instructions", str(short_prompts), "--max_new_tokens", "5",
                         "--out", str(tmp_path / "e.json")])
    assert all(r["details"]["original"] == {"tokens": 0, "words": 0, "stop": "eos"} for r in eos["results"])
    assert eos["stats"]["original"]["ended_with_eos"] == 1 and eos["stats"]["original"]["mean_tokens"] == 0
    short = generate.main(["--base", str(models["short"]), "--instructions", str(short_prompts), "--max_new_tokens",
                           "64", "--greedy", "--batch_size", "1", "--out", str(tmp_path / "s.json")])
    for r in short["results"]:  # the 40-position context ends first: prompt + response fill it exactly
        n_prompt = len(gpt2_tok(r["prompt"])["input_ids"])
        assert r["details"]["original"]["stop"] == "context" and r["details"]["original"]["tokens"] == 40 - n_prompt
    assert short["stats"]["original"]["hit_context"] == 1
    batched = generate.main(["--base", str(models["short"]), "--instructions", str(short_prompts), "--max_new_tokens",
                             "64", "--greedy", "--batch_size", "3", "--out", str(tmp_path / "s3.json")])
    for one, three in zip(short["results"], batched["results"]):  # a batch stops where its longest prompt must
        assert three["details"]["original"]["stop"] == "context"
        assert one["responses"]["original"].startswith(three["responses"]["original"])


def test_greedy_batches_equal_one_at_a_time(models, partition_dir, tmp_path):
    argv = ["--base", str(models["base"]), "--lora", str(models["adapter"]), "--instructions", str(partition_dir),
            "--greedy", "--max_new_tokens", "4", "--out"]
    one = generate.main(argv + [str(tmp_path / "1.json"), "--batch_size", "1"])
    many = generate.main(argv + [str(tmp_path / "8.json"), "--batch_size", "8"])
    assert one["results"] == many["results"]


def test_bad_inputs_are_one_line_before_any_model_loads(models, tmp_path, monkeypatch):
    def no_loading(*a, **k):
        raise AssertionError("a model was loaded before the inputs were checked")
    monkeypatch.setattr(generate, "load_model", no_loading)
    (tmp_path / "empty.jsonl").write_text("")
    (tmp_path / "broken.jsonl").write_text('{"instruction": "x"}\n{oops\n')
    (tmp_path / "blank.txt").write_text("\n\n")
    (tmp_path / "latin1.txt").write_bytes("caf\xe9\n".encode("latin-1"))
    (tmp_path / "bad.json").write_text(json.dumps([{"instruction": ""}]))
    (tmp_path / "blank.md").write_text("Say hi.\n")
    (tmp_path / "folder").mkdir()
    base = ["--base", str(models["base"])]
    out = ["--out", str(tmp_path / "g.json")]
    cases = [
        (["--base", str(tmp_path / "missing")] + out, "cannot load model"),
        (base + ["--full", str(tmp_path / "missing")] + out, "no such model folder"),
        (base + ["--lora", str(tmp_path / "folder")] + out, "not an adapter folder"),
        (base + ["--instructions", str(tmp_path / "folder")] + out, "holds no instructions.jsonl"),
        (base + ["--instructions", str(tmp_path / "nope.jsonl")] + out, "does not exist"),
        (base + ["--instructions", str(tmp_path / "empty.jsonl")] + out, "no instructions"),
        (base + ["--instructions", str(tmp_path / "blank.txt")] + out, "no instructions"),
        (base + ["--instructions", str(tmp_path / "broken.jsonl")] + out, "line 2 is not valid JSON"),
        (base + ["--instructions", str(tmp_path / "latin1.txt")] + out, "not UTF-8 text"),
        (base + ["--instructions", str(tmp_path / "bad.json")] + out, "record 0 field 'instruction' is empty"),
        (base + ["--instructions", str(tmp_path / "blank.txt"), "--out", str(tmp_path / "blank.txt")],
         "must end in .json"),
        (base + ["--out", str(tmp_path / "file.json" / "x.json")], "cannot write in"),
        (base + ["--out", str(tmp_path / "dir.json")], "is a folder, but an output file is needed"),
        (base + ["--device", "gpu7"] + out, "use auto, cpu, cuda or cuda:N"),
        (base + ["--device", "cuda:99"] + out, "cuda:99: "),  # no CUDA here, or not that many devices
        (base + ["--dtype", "float16"] + out, "--dtype must be one of"),
        (["--base", str(models["full"]), "--lora", str(models["adapter"])] + out,
         f"was trained on {models['base']}, but --base is {models['full']}; pass --allow_other_base"),
        (base + ["--lora", f"{models['full']}+{models['adapter']}"] + out, "was trained on"),
        (base + ["--out", str(models["base"] / "config.json")], "the input"),
        (base + ["--lora", str(models["adapter"]), "--out", str(models["adapter"] / "x.json")],
         "the input"),
        (base + ["--instructions", str(tmp_path / "blank.md"), "--out", str(tmp_path / "blank.json")],
         "would write over the instructions file"),
        (base + ["--max_new_tokens", "0"] + out, "--max_new_tokens must be > 0"),
        (base + ["--batch_size", "0"] + out, "--batch_size must be > 0"),
        (out, "--base is required"),
    ]
    (tmp_path / "file.json").write_text("a file where a folder is needed")
    (tmp_path / "dir.json").mkdir()
    for argv, message in cases:
        assert message in user_error(generate.main, argv), argv
    assert not (tmp_path / "g.json").exists()
