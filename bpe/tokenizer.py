"""Byte-level BPE tokenizer (minbpe's API, tiktoken's semantics): train, encode, decode, save/load, OpenAI's GPT-2
files, and exports to tiktoken and Hugging Face that give the same ids.

Encoding merges the adjacent pair of lowest rank first (leftmost on ties). Ids are ranks: byte b is id b, merges 256,
257, ... in creation order, then the special tokens. User input is checked where it enters (train.py, ``load``).
``gpt2_encoding`` is the reference: tiktoken's own ``gpt2`` built from the data directory's GPT-2 files.
"""
import functools
import heapq
import json
import os
import unicodedata
from collections import Counter
from pathlib import Path
from unittest import mock

import regex

import fileio
from trainer import train_merges

FORMAT_NAME, FORMAT_VERSION = "llmhw-bpe", 1
EOT = "<|endoftext|>"
# GPT-2's pre-split regex as tiktoken_ext/openai_public.py gives it for `gpt2`/`r50k_base` (tiktoken 0.7; later
# versions write an equivalent possessive form). It splits text exactly as openai/gpt-2 src/encoder.py's pattern.
GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
# GPT-4's split pattern: cl100k_base's as tiktoken 0.14 has it (minbpe's copy lacks `\s++$`), except `\p{N}{1,3}`
# for `\p{N}{1,3}+`: the same pieces, and HF's Oniguruma reads `{n,m}+` as "one or more", not possessive.
GPT4_PATTERN = (r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$"""
                r"""|\s*[\r\n]|\s+(?!\S)|\s""")
PATTERNS = {"none": None, "gpt2": GPT2_PATTERN, "gpt4": GPT4_PATTERN}  # none: raw bytes, no pre-splitting
_CACHE_MAX = 1 << 20


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character map (openai/gpt-2 src/encoder.py), as byte-level tokenizer.json
    files store tokens: the 188 printable Latin-1 bytes as themselves, the other 68 as chr(256 + k) in byte order."""
    printable = [b for b in range(256) if chr(b).isprintable() and b != ord(" ")]
    others = [b for b in range(256) if b not in printable]
    return {**{b: chr(b) for b in printable}, **{b: chr(256 + k) for k, b in enumerate(others)}}


def gpt2_encoding(data_dir: str | os.PathLike | None = None, files: dict[str, Path] | None = None):
    """tiktoken's ``gpt2`` Encoding (the ids of ``tiktoken.get_encoding("gpt2")``, which would download) from the data
    directory's gpt2/encoder.json + gpt2/vocab.bpe (or ``files``); damaged or foreign files: one ValueError line."""
    import tiktoken
    from tiktoken.load import data_gym_to_mergeable_bpe_ranks

    files = files or {name: fileio.find(f"gpt2/{name}", data_dir) for name in ("encoder.json", "vocab.bpe")}
    try:
        # caching off: tiktoken caches what it reads under /tmp/data-gym-cache keyed by the path, not the content,
        # so a file changed at the same path would give stale ranks
        with mock.patch.dict(os.environ, TIKTOKEN_CACHE_DIR=""):
            ranks = data_gym_to_mergeable_bpe_ranks(str(files["vocab.bpe"]), str(files["encoder.json"]))
    except (ValueError, UnicodeDecodeError, KeyError, AttributeError, TypeError, AssertionError, OSError) as e:
        # tiktoken reads both files and asserts they agree: a damaged or foreign file surfaces as any of these
        why = "the two files disagree" if isinstance(e, AssertionError) else f"{type(e).__name__}: {e}"
        raise ValueError(f"{files['encoder.json']} + {files['vocab.bpe']}: not GPT-2's encoder.json + vocab.bpe "
                         f"pair ({str(why).splitlines()[0][:160]})") from None
    return tiktoken.Encoding("gpt2", pat_str=GPT2_PATTERN, mergeable_ranks=ranks, special_tokens={EOT: len(ranks)})


def render_token(b: bytes) -> str:
    """A one-line readable form of a token: UTF-8 text where valid, \\xNN for other bytes, control chars escaped."""
    return "".join(ch if unicodedata.category(ch)[0] != "C" else ch.encode("unicode_escape").decode("ascii")
                   for ch in b.decode("utf-8", errors="backslashreplace"))


@functools.lru_cache(maxsize=64)
def _splitter(specials: frozenset) -> regex.Pattern:
    """A regex with one group matching any of ``specials`` (longest first): ``split`` puts them at odd indices."""
    return regex.compile("(" + "|".join(regex.escape(s) for s in sorted(specials, key=len, reverse=True)) + ")")


def model_fields(d: dict) -> tuple[dict[int, bytes], dict[str, int], list[tuple[int, int, int]]]:
    """vocab, special tokens and merges of a saved model, checked: each merge joins earlier ids into its token."""
    vocab, specials = {}, d["special_tokens"]
    is_id = lambda x: type(x) is int and x >= 0  # noqa: E731  (bool is an int subclass: True is not an id)
    for entry in d["vocab"]:
        if not (isinstance(entry, list) and len(entry) == 2 and is_id(entry[0]) and isinstance(entry[1], str)):
            raise ValueError(f"vocab entry {entry!r} is not [id, hex bytes]")
        vocab[entry[0]] = bytes.fromhex(entry[1])
    if not isinstance(specials, dict) or not all(isinstance(s, str) and s and is_id(i) for s, i in specials.items()):
        raise ValueError(f"special_tokens must map strings to ids, got {str(specials)[:80]}")
    known = {i for i, b in vocab.items() if len(b) == 1}
    merges = []
    for k, m in enumerate(d["merges"]):
        if not (isinstance(m, list) and len(m) == 3 and all(map(is_id, m))):
            raise ValueError(f"merge {k} {m!r} is not [left id, right id, new id]")
        a, b, new = m
        if a not in known or b not in known or new not in vocab:
            raise ValueError(f"merge {k} {m!r} uses an id that no byte or earlier merge made")
        if vocab[new] != vocab[a] + vocab[b]:
            raise ValueError(f"merge {k} {m!r}: token {new}'s bytes are not token {a}'s + token {b}'s")
        known.add(new)
        merges.append((a, b, new))
    if unmade := sorted(set(vocab) - known):
        raise ValueError(f"token {unmade[0]} ({len(unmade)} in all) is longer than one byte but no merge makes it")
    return vocab, specials, merges


class Tokenizer:
    """Byte-level BPE with tiktoken's encoding semantics (see the module docstring)."""

    def __init__(self, pattern: str = "none", vocab: dict[int, bytes] | None = None,
                 special_tokens: dict[str, int] | None = None, merges: list[tuple[int, int, int]] | None = None):
        self.pattern_name = pattern if pattern in PATTERNS else "custom"
        self.pattern = PATTERNS.get(pattern, pattern)  # a name, or a regex of one's own
        try:
            self._split = regex.compile(self.pattern) if self.pattern else None
        except regex.error as e:
            raise ValueError(f"pattern {pattern!r} is neither one of {sorted(PATTERNS)} nor a valid regex: {e}")
        self._set_vocab(vocab or {i: bytes([i]) for i in range(256)}, special_tokens or {}, merges or [])

    def _set_vocab(self, vocab: dict[int, bytes], special_tokens: dict[str, int], merges) -> None:
        self.vocab = dict(vocab)                    # id -> bytes (the mergeable tokens)
        self.ranks = {b: i for i, b in vocab.items()}  # bytes -> id (rank)
        self.special_tokens = dict(special_tokens)  # str -> id
        self.merges = [tuple(m) for m in merges]    # training history (left, right, result); encoding uses ranks
        if len(self.ranks) < len(vocab):
            raise ValueError("vocab holds a byte string twice; a token has one rank")
        if any(bytes([x]) not in self.ranks for x in range(256)):
            raise ValueError("vocab lacks single-byte tokens; a byte-level BPE needs all 256")
        if len(set(vocab) | set(special_tokens.values())) < len(vocab) + len(special_tokens):
            raise ValueError(f"special token ids {sorted(special_tokens.values())} clash with other ids")
        self._id_to_bytes = {**self.vocab, **{i: s.encode("utf-8") for s, i in self.special_tokens.items()}}
        self._cache: dict[str, list[int]] = {}  # chunk -> ids

    @property
    def vocab_size(self) -> int:
        """Number of ids (max id + 1), special tokens included."""
        return max(self._id_to_bytes) + 1

    def __repr__(self) -> str:
        return f"Tokenizer({self.pattern_name!r}, vocab_size={self.vocab_size}, special_tokens={self.special_tokens})"

    # -- training ----------------------------------------------------------------------------------------------------
    def train(self, text: str | bytes, vocab_size: int, special_tokens=(), verbose: bool = False) -> "Tokenizer":
        """Learn ``vocab_size - 256 - len(special_tokens)`` merges; special tokens (ids after) cut the text."""
        specials = list(dict.fromkeys(special_tokens))
        if isinstance(text, bytes) and (self._split or specials):
            try:
                text = text.decode("utf-8")
            except UnicodeDecodeError as e:
                raise ValueError(f"training bytes are not valid UTF-8 ({e}); pattern {self.pattern_name!r} and "
                                 "special tokens need text (use pattern 'none' for raw bytes)") from None
        vocab = [bytes([i]) for i in range(256)]
        n_new = vocab_size - 256 - len(specials)
        from tqdm import tqdm
        with tqdm(total=n_new, desc="bpe merges", unit="tok", disable=not verbose) as bar:
            merges = train_merges(self._count_chunks(text, specials), vocab, n_new, progress=bar)
        self._set_vocab(dict(enumerate(vocab)), {s: len(vocab) + k for k, s in enumerate(specials)}, merges)
        return self

    def _count_chunks(self, text: str | bytes, specials: list[str]) -> dict[bytes, int]:
        """Unique pre-split chunks (UTF-8 bytes) with their counts; special tokens cut the text."""
        if isinstance(text, bytes):  # pattern none, no specials: the whole input is one chunk
            return {text: 1}
        pieces = _splitter(frozenset(specials)).split(text)[::2] if specials else [text]
        counts = Counter()
        for piece in filter(None, pieces):
            counts.update(self._split.findall(piece) if self._split else [piece])
        return {s.encode("utf-8"): c for s, c in counts.items()}

    # -- encoding ----------------------------------------------------------------------------------------------------
    def encode_piece(self, piece: bytes) -> list[int]:
        """One byte string as a single piece (no pre-split, no special tokens), merged as tiktoken does, in O(n log n):
        a heap of (rank, start), parts linked by their starts, stale entries skipped."""
        get, n = self.ranks.get, len(piece)
        if (whole := get(piece)) is not None:  # tiktoken returns a piece that is itself a token whole
            return [whole]
        nxt, prv, alive = list(range(1, n + 1)), list(range(-1, n - 1)), [True] * n
        heap = [(r, i) for i in range(n - 1) if (r := get(piece[i:i + 2])) is not None]
        heapq.heapify(heap)
        while heap:
            r, i = heapq.heappop(heap)
            if not alive[i] or nxt[i] >= n or get(piece[i:nxt[nxt[i]]]) != r:
                continue
            j = nxt[i]
            alive[j], nxt[i] = False, nxt[j]
            k = nxt[i]
            if k < n:
                prv[k] = i
                if (rk := get(piece[i:nxt[k]])) is not None:
                    heapq.heappush(heap, (rk, i))
            if prv[i] >= 0 and (rp := get(piece[prv[i]:k])) is not None:
                heapq.heappush(heap, (rp, prv[i]))
        return [self.ranks[piece[i:nxt[i]]] for i in range(n) if alive[i]]   # the parts that start a token

    def encode_ordinary(self, text: str) -> list[int]:
        """Encode text, special-token strings as ordinary text (tiktoken's encode_ordinary)."""
        if self._split is None:
            return self.encode_piece(text.encode("utf-8"))
        out, cache = [], self._cache
        for chunk in self._split.findall(text):
            ids = cache.get(chunk)
            if ids is None:
                ids = self.encode_piece(chunk.encode("utf-8"))
                if len(cache) < _CACHE_MAX:
                    cache[chunk] = ids
            out += ids
        return out

    def encode(self, text: str, allowed_special="none_raise", disallowed_special="all") -> list[int]:
        """Encode with tiktoken's special-token policy (allowed_special / disallowed_special, same defaults)."""
        specials = set(self.special_tokens)
        allowed = specials if allowed_special == "all" else \
            set() if allowed_special in ("none_raise", None) else set(allowed_special)
        if allowed - specials:
            raise ValueError(f"allowed_special names unknown special tokens {sorted(allowed - specials)}; "
                             f"this tokenizer has {sorted(specials)}")
        disallowed = specials - allowed if disallowed_special == "all" else set(disallowed_special)
        if s := next((s for s in disallowed if s in text), None):
            raise ValueError(f"text contains the special token {s!r}; pass allowed_special={{{s!r}}} to encode it "
                             "as a special token, or disallowed_special=() to encode it as text")
        if not allowed:
            return self.encode_ordinary(text)
        # split at the allowed specials only: one that is not allowed is text and may merge with its neighbours (as
        # in tiktoken; splitting at it too would change the ids around it)
        out = []
        for k, part in enumerate(_splitter(frozenset(allowed)).split(text)):
            out += [self.special_tokens[part]] if k % 2 else self.encode_ordinary(part)
        return out

    def decode_bytes(self, ids) -> bytes:
        """The exact bytes of ``ids`` (ints, a numpy array or a torch tensor); an unknown id -> ValueError."""
        try:
            return b"".join(map(self._id_to_bytes.__getitem__, ids.tolist() if hasattr(ids, "tolist") else ids))
        except KeyError as e:  # ids come from models and files: say which one is out of range
            raise ValueError(f"token id {e.args[0]!r} is not in the vocabulary (0..{self.vocab_size - 1})") from None

    def decode(self, ids) -> str:
        """Decode to text; invalid UTF-8 (e.g. a cut multi-byte character) becomes U+FFFD."""
        return self.decode_bytes(ids).decode("utf-8", errors="replace")

    # -- save / load ---------------------------------------------------------------------------------------------------
    def save(self, path, vocab_path=None) -> None:
        """Write the model (versioned JSON) atomically, and the readable vocab listing if ``vocab_path`` is given."""
        d = {"format": FORMAT_NAME, "version": FORMAT_VERSION, "pattern_name": self.pattern_name,
             "pattern": self.pattern, "vocab": [[i, b.hex()] for i, b in sorted(self.vocab.items())],
             "special_tokens": self.special_tokens, "merges": [list(m) for m in self.merges]}
        fileio.atomic_write_text(path, json.dumps(d, ensure_ascii=False) + "\n")
        if vocab_path is None:
            return
        # the readable listing: ``id <TAB> token <TAB> [left][right] <TAB> hex`` per line (the merge that made it)
        made_by = {new: (a, b) for a, b, new in self.merges}
        lines = [f"# {FORMAT_NAME} v{FORMAT_VERSION} vocab; pattern={self.pattern_name}; "
                 f"{len(self.vocab)} tokens + {len(self.special_tokens)} special; columns: id, token, merge, hex"]
        for i, b in sorted(self.vocab.items()):
            how = "".join(f"[{render_token(self.vocab[x])}]" for x in made_by.get(i, ()))
            lines.append(f"{i}\t{render_token(b)}\t{how}\t{b.hex()}")
        lines += [f"{i}\t{s}\t(special)\t" for s, i in sorted(self.special_tokens.items(), key=lambda kv: kv[1])]
        fileio.atomic_write_text(vocab_path, "\n".join(lines) + "\n")

    @classmethod
    def load(cls, path) -> "Tokenizer":
        """Load a file written by ``save``; a corrupt, foreign or other-version file: one ValueError line naming it."""
        path = Path(path)
        try:
            d = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ValueError(f"tokenizer file {path} is corrupt (not valid JSON: {e})") from None
        if not isinstance(d, dict) or d.get("format") != FORMAT_NAME:
            raise ValueError(f"tokenizer file {path} is not a {FORMAT_NAME} model (format field: "
                             f"{d.get('format') if isinstance(d, dict) else None!r})")
        if d.get("version") != FORMAT_VERSION:
            raise ValueError(f"tokenizer file {path} has format version {d.get('version')!r}; "
                             f"this code reads version {FORMAT_VERSION}")
        try:
            tok = cls(d["pattern_name"] if d["pattern_name"] in PATTERNS else d["pattern"], *model_fields(d))
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"tokenizer file {path} is corrupt ({type(e).__name__}: {e})") from None
        if tok.pattern != d.get("pattern"):
            raise ValueError(f"tokenizer file {path}: pattern {d['pattern_name']!r} does not match its stored regex")
        return tok

    @classmethod
    def from_gpt2_files(cls, encoder_json, vocab_bpe) -> "Tokenizer":
        """OpenAI's GPT-2 ``encoder.json`` + ``vocab.bpe``; bad files: one ValueError line naming them."""
        enc = gpt2_encoding(files={"encoder.json": Path(encoder_json), "vocab.bpe": Path(vocab_bpe)})
        vocab = {i: enc.decode_single_token_bytes(i) for i in range(enc.eot_token)}
        ranks, byte_of = {b: i for i, b in vocab.items()}, {c: b for b, c in bytes_to_unicode().items()}
        merges = []
        for line in filter(None, Path(vocab_bpe).read_text(encoding="utf-8").split("\n")[1:]):  # checked by tiktoken
            left, right = (bytes(byte_of[c] for c in s) for s in line.split(" "))
            merges.append((ranks[left], ranks[right], ranks[left + right]))
        return cls("gpt2", vocab, {EOT: enc.eot_token}, merges)

    # -- exports -------------------------------------------------------------------------------------------------------
    def to_tiktoken(self, name: str = "llmhw_bpe"):
        """A ``tiktoken.Encoding`` with the same ranks, split pattern and special tokens (so the same ids)."""
        import tiktoken

        # tiktoken needs a pattern: for none, each text between special tokens is one piece
        return tiktoken.Encoding(name=name, pat_str=self.pattern or r"[\s\S]+", mergeable_ranks=dict(self.ranks),
                                 special_tokens=dict(self.special_tokens))

    def to_hf(self):
        """A ``tokenizers.Tokenizer`` (byte-level BPE) giving the same ids; special tokens are recognised in text."""
        from tokenizers import AddedToken, Regex, decoders, models, pre_tokenizers
        from tokenizers import Tokenizer as HFTokenizer

        b2u = bytes_to_unicode()
        spell = lambda b: "".join(b2u[x] for x in b)  # noqa: E731  a token's byte-level characters
        vocab = {spell(b): i for i, b in self.vocab.items()}
        for s, i in self.special_tokens.items():
            if s in vocab:
                raise ValueError(f"special token {s!r} has the same byte-level spelling as token {vocab[s]}")
            vocab[s] = i
        # every pair (x, y) of tokens whose concatenation is a token, by that token's rank: tiktoken merges any
        # adjacent pair that makes a token, so HF's BPE (with ``ignore_merges``) applies the same merges
        ranks, pairs = self.ranks, []
        for t in sorted(ranks, key=ranks.get):
            pairs += sorted((ranks[t[:k]], ranks[t[k:]]) for k in range(1, len(t)) if t[:k] in ranks and t[k:] in ranks)
        merges = [(spell(self.vocab[x]), spell(self.vocab[y])) for x, y in pairs]
        hf = HFTokenizer(models.BPE(vocab=vocab, merges=merges, ignore_merges=True, fuse_unk=False,
                                    byte_fallback=False))
        byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
        hf.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(self.pattern), behavior="isolated"),
                                                    byte_level]) if self.pattern else byte_level
        hf.decoder = decoders.ByteLevel()
        hf.add_special_tokens([AddedToken(s, special=True, normalized=False)
                               for s in sorted(self.special_tokens, key=self.special_tokens.get)])
        return hf

    def hf_config(self, model_max_length: int = 1024) -> dict:
        """tokenizer_config.json with GPT-2's roles: bos = eos = unk = <|endoftext|>; pad a special named pad."""
        names = sorted(self.special_tokens, key=self.special_tokens.get)
        eos = "<|endoftext|>" if "<|endoftext|>" in names else names[0] if names else None
        pad = next((s for s in names if "pad" in s.lower()), eos)
        roles = {"bos_token": eos, "eos_token": eos, "unk_token": eos, "pad_token": pad} if names else {}
        extra = [s for s in names if s not in roles.values()]
        return {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": model_max_length,
                "clean_up_tokenization_spaces": False,  # decode gives back the exact text, as ours does
                "add_prefix_space": False, **roles, **({"additional_special_tokens": extra} if extra else {})}

    def save_hf(self, folder, model_max_length: int = 1024) -> None:
        """A transformers tokenizer folder (``AutoTokenizer.from_pretrained``), each file written atomically."""
        config, folder = self.hf_config(model_max_length), Path(folder)
        fileio.atomic_write_text(folder / "tokenizer.json", self.to_hf().to_str(pretty=False))
        fileio.atomic_write_json(folder / "tokenizer_config.json", config)
        fileio.atomic_write_json(folder / "special_tokens_map.json", {k: v for k, v in config.items() if "_token" in k})
