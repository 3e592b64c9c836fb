"""Byte-level BPE tokenizer: an incremental trainer, a tiktoken-exact encoder, and exports to tiktoken and HF.

The homework asked for ``train(data, vocab_size)``, ``encode(text)`` and ``decode(ids)``. This module gives a
``Tokenizer`` that

* trains on unique pre-split chunks counted once, with trainer.py's incremental trainer (each merge touches only
  the occurrences of the merged pair), deterministically;
* encodes exactly like tiktoken (rank-ordered merging: repeatedly merge the adjacent pair whose concatenation has the
  lowest rank, leftmost on ties; a chunk that is itself a token is returned whole), with a chunk cache;
* saves/loads a versioned JSON format, writes a human-readable vocab listing, loads OpenAI's GPT-2 files
  (``encoder.json`` + ``vocab.bpe``), and exports a ``tiktoken.Encoding`` and a Hugging Face ``tokenizer.json``
  that give the same ids (this is how the other folders use a tokenizer trained here, without importing this code).

Token ids are ranks (as in tiktoken): a trained tokenizer has byte b at id b, merged tokens at 256, 257, ... in the
order they were created, then the special tokens.

The training contract (tie-break, left-to-right merging, id reuse) is stated in trainer.py. Library functions trust
their arguments; user input is checked where it enters (train.py, ``load``, ``from_gpt2_files``).
"""
from __future__ import annotations

import heapq
import json
import os
import unicodedata
from collections import Counter
from pathlib import Path

import regex

from fileio import atomic_write_text
from gpt2files import GPT2_PATTERN, bytes_to_unicode
from trainer import train_merges

FORMAT_NAME = "llmhw-bpe"
FORMAT_VERSION = 1

# Split patterns. GPT-2's comes from gpt2files.py (tiktoken's spelling of openai/gpt-2 src/encoder.py's pattern, the
# same pieces; it is also the faster one for tiktoken's regex engine); GPT-4's is cl100k_base's as tiktoken 0.14 has it (minbpe's copy predates its `\s++$` branch,
# which keeps trailing whitespace at the end of a text in one piece), except `\p{N}{1,3}` for `\p{N}{1,3}+`: the
# same pieces (the branch ends there), and HF's Oniguruma reads `{n,m}+` as "one or more of {n,m}", not possessive.
# Both patterns split alike in Python's `regex`, tiktoken's fancy-regex and Oniguruma (tests: exports = ours).
GPT4_PATTERN = (r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$"""
                r"""|\s*[\r\n]|\s+(?!\S)|\s""")
PATTERNS = {"none": None, "gpt2": GPT2_PATTERN, "gpt4": GPT4_PATTERN}
WHOLE_TEXT_PATTERN = r"[\s\S]+"  # tiktoken needs a pattern; for pattern 'none' each text between specials is one piece

_SMALL_PIECE = 128  # pieces up to this many bytes use the list merge; longer ones the heap merge (same result)
_CACHE_MAX = 1 << 20



def render_token(b: bytes) -> str:
    """A one-line readable form of a token: UTF-8 text where valid, \\xNN for other bytes, control chars escaped."""
    s = b.decode("utf-8", errors="backslashreplace")
    return "".join(ch if unicodedata.category(ch)[0] != "C" else ch.encode("unicode_escape").decode("ascii")
                   for ch in s)




def _is_id(x) -> bool:
    return type(x) is int and x >= 0  # bool is an int subclass: True is not an id


def model_fields(d: dict) -> tuple[dict[int, bytes], dict[str, int], list[tuple[int, int, int]]]:
    """vocab, special tokens and merges of a saved model, checked to be well typed and consistent: every merge joins
    two ids known by then (bytes or earlier merges) into the token whose bytes are theirs, and every token longer
    than one byte is made by a merge. Raises ValueError naming the first field that is not (or KeyError/TypeError)."""
    vocab, specials = {}, d["special_tokens"]
    for entry in d["vocab"]:
        if not (isinstance(entry, list) and len(entry) == 2 and _is_id(entry[0]) and isinstance(entry[1], str)):
            raise ValueError(f"vocab entry {entry!r} is not [id, hex bytes]")
        vocab[entry[0]] = bytes.fromhex(entry[1])
    if not isinstance(specials, dict) or not all(isinstance(s, str) and _is_id(i) for s, i in specials.items()):
        raise ValueError(f"special_tokens must map strings to ids, got {str(specials)[:80]}")
    known = {i for i, b in vocab.items() if len(b) == 1}
    merges = []
    for k, m in enumerate(d["merges"]):
        if not (isinstance(m, list) and len(m) == 3 and all(map(_is_id, m))):
            raise ValueError(f"merge {k} {m!r} is not [left id, right id, new id]")
        a, b, new = m
        if a not in known or b not in known or new not in vocab:
            raise ValueError(f"merge {k} {m!r} uses an id that no byte or earlier merge made")
        if vocab[new] != vocab[a] + vocab[b]:
            raise ValueError(f"merge {k} {m!r}: token {new}'s bytes are not token {a}'s + token {b}'s")
        known.add(new)
        merges.append((a, b, new))
    unmade = sorted(set(vocab) - known)
    if unmade:
        raise ValueError(f"token {unmade[0]} ({len(unmade)} in all) is longer than one byte but no merge makes it")
    return vocab, specials, merges


# ----------------------------------------------------------------------------------------------------------------
# the tokenizer


class Tokenizer:
    """Byte-level BPE with tiktoken's encoding semantics. See the module docstring."""

    def __init__(self, pattern: str = "none", vocab: dict[int, bytes] | None = None,
                 special_tokens: dict[str, int] | None = None, merges: list[tuple[int, int, int]] | None = None):
        if not isinstance(pattern, str):
            raise TypeError(f"pattern must be a name in {sorted(PATTERNS)} or a regex string, got {type(pattern).__name__}")
        if pattern in PATTERNS:
            self.pattern_name, self.pattern = pattern, PATTERNS[pattern]
        else:
            try:
                regex.compile(pattern)
            except regex.error as e:
                raise ValueError(f"pattern {pattern!r} is neither one of {sorted(PATTERNS)} nor a valid regex: {e}")
            self.pattern_name, self.pattern = "custom", pattern
        self._split = regex.compile(self.pattern) if self.pattern else None
        self._set_vocab(vocab if vocab is not None else {i: bytes([i]) for i in range(256)},
                        special_tokens or {}, merges or [])

    # -- state -----------------------------------------------------------------------------------------------------
    def _set_vocab(self, vocab: dict[int, bytes], special_tokens: dict[str, int], merges) -> None:
        ranks = {}
        for i, b in vocab.items():
            if not isinstance(i, int) or i < 0 or not isinstance(b, bytes) or not b:
                raise ValueError(f"vocab entry {i!r}: {b!r} is not (non-negative int id, non-empty bytes)")
            if b in ranks:
                raise ValueError(f"vocab has the bytes {b!r} twice (ids {ranks[b]} and {i}); ranks must be unique")
            ranks[b] = i
        missing = [x for x in range(256) if bytes([x]) not in ranks]
        if missing:
            raise ValueError(f"vocab lacks {len(missing)} single-byte tokens (e.g. byte {missing[0]}); "
                             "a byte-level BPE needs all 256")
        for s, i in special_tokens.items():
            if not isinstance(s, str) or not s:
                raise ValueError(f"special token {s!r} must be a non-empty string")
            if i in vocab or list(special_tokens.values()).count(i) > 1:
                raise ValueError(f"special token {s!r} has id {i}, which is already taken")
        self.vocab = dict(vocab)                   # id -> bytes (mergeable tokens)
        self.ranks = ranks                         # bytes -> id (rank)
        self.special_tokens = dict(special_tokens)  # str -> id
        self.merges = [tuple(m) for m in merges]   # training history (left, right, result); encoding uses ranks
        self._id_to_bytes = {**self.vocab, **{i: s.encode("utf-8") for s, i in self.special_tokens.items()}}
        self._special_splitters: dict[frozenset, regex.Pattern] = {}  # allowed specials -> splitting regex
        self._cache: dict[str, list[int]] = {}

    @property
    def vocab_size(self) -> int:
        """Number of ids (max id + 1), special tokens included."""
        return max(self._id_to_bytes) + 1

    def __repr__(self) -> str:
        return (f"Tokenizer(pattern={self.pattern_name!r}, vocab_size={self.vocab_size}, "
                f"special_tokens={self.special_tokens})")

    # -- training --------------------------------------------------------------------------------------------------
    def train(self, text_or_bytes: str | bytes, vocab_size: int, special_tokens: list[str] | tuple = (),
              verbose: bool = False) -> "Tokenizer":
        """Learn ``vocab_size - 256 - len(special_tokens)`` merges from the text, then add the special tokens.

        ``vocab_size`` counts everything (256 bytes + merges + specials). Special tokens occurring in the training
        text act as chunk boundaries and are not learned from. Bytes input must be UTF-8 unless pattern is 'none'.
        """
        data = text_or_bytes
        if isinstance(data, bytes) and (self._split is not None or special_tokens):
            try:  # a pattern and special tokens work on text
                data = data.decode("utf-8")
            except UnicodeDecodeError as e:
                raise ValueError(f"training bytes are not valid UTF-8 ({e}); pattern {self.pattern_name!r} "
                                 "and special tokens need text (use pattern 'none' for raw bytes)") from None
        specials = list(dict.fromkeys(special_tokens))
        chunks = self._count_chunks(data, specials)
        vocab = [bytes([i]) for i in range(256)]
        n_new = vocab_size - 256 - len(specials)
        bar = None
        if verbose:
            from tqdm import tqdm
            bar = tqdm(total=n_new, desc="bpe merges", unit="tok")
        try:
            merges = train_merges(chunks, vocab, n_new, progress=bar)
        finally:
            if bar is not None:
                bar.close()
        special_ids = {s: len(vocab) + k for k, s in enumerate(specials)}
        self._set_vocab(dict(enumerate(vocab)), special_ids, merges)
        return self

    def _count_chunks(self, data: str | bytes, specials: list[str]) -> dict[bytes, int]:
        """Unique pre-split chunks (as UTF-8 bytes) with their counts; specials are boundaries."""
        if isinstance(data, bytes):  # pattern 'none', no specials: the whole input is one chunk
            return {data: 1}
        pieces = [data]
        if specials:
            splitter = regex.compile("|".join(regex.escape(s) for s in sorted(specials, key=len, reverse=True)))
            pieces = splitter.split(data)
        counts: Counter = Counter()
        for piece in pieces:
            if not piece:
                continue
            if self._split is None:
                counts[piece] += 1
            else:
                counts.update(self._split.findall(piece))
        return {s.encode("utf-8"): c for s, c in counts.items()}

    # -- encoding --------------------------------------------------------------------------------------------------
    def _bpe(self, piece: bytes) -> list[int]:
        """tiktoken's rank-ordered merge of one piece: merge the adjacent pair with the lowest rank, leftmost first."""
        ranks = self.ranks
        r = ranks.get(piece)
        if r is not None:  # tiktoken returns a piece that is itself a token whole
            return [r]
        if len(piece) > _SMALL_PIECE:
            return self._bpe_long(piece)
        get = ranks.get
        inf = 1 << 62
        parts = [piece[i:i + 1] for i in range(len(piece))]
        pair_ranks = [get(parts[i] + parts[i + 1], inf) for i in range(len(parts) - 1)]
        while pair_ranks:
            m = min(pair_ranks)
            if m == inf:
                break
            i = pair_ranks.index(m)  # leftmost of the lowest rank
            parts[i] += parts[i + 1]
            del parts[i + 1], pair_ranks[i]
            if i > 0:
                pair_ranks[i - 1] = get(parts[i - 1] + parts[i], inf)
            if i < len(pair_ranks):
                pair_ranks[i] = get(parts[i] + parts[i + 1], inf)
        return [ranks[p] for p in parts]

    def _bpe_long(self, piece: bytes) -> list[int]:
        """Same result as the list merge in O(n log n): heap of (rank, start) with lazy validation, linked parts."""
        get = self.ranks.get
        n = len(piece)
        nxt = list(range(1, n + 1))  # start of the next part
        prv = list(range(-1, n - 1))
        alive = [True] * n
        heap = [(r, i) for i in range(n - 1) if (r := get(piece[i:i + 2])) is not None]
        heapq.heapify(heap)
        while heap:
            r, i = heapq.heappop(heap)
            if not alive[i]:
                continue
            j = nxt[i]
            if j >= n:
                continue
            k = nxt[j]
            if get(piece[i:k]) != r:
                continue  # stale: a neighbour changed since this entry was pushed
            alive[j] = False
            nxt[i] = k
            if k < n:
                prv[k] = i
                rk = get(piece[i:nxt[k]])
                if rk is not None:
                    heapq.heappush(heap, (rk, i))
            p = prv[i]
            if p >= 0:
                rp = get(piece[p:k])
                if rp is not None:
                    heapq.heappush(heap, (rp, p))
        out = []
        i = 0
        ranks = self.ranks
        while i < n:
            out.append(ranks[piece[i:nxt[i]]])
            i = nxt[i]
        return out

    def encode_piece(self, piece: bytes) -> list[int]:
        """Merge one byte string as a single piece (no pre-split, no special tokens): raw-byte BPE."""
        return self._bpe(piece) if piece else []

    def encode_ordinary(self, text: str) -> list[int]:
        """Encode text, treating special-token strings as ordinary text (like tiktoken's encode_ordinary)."""
        if self._split is None:
            return self._bpe(text.encode("utf-8")) if text else []
        cache = self._cache
        out: list[int] = []
        for chunk in self._split.findall(text):
            ids = cache.get(chunk)
            if ids is None:
                ids = self._bpe(chunk.encode("utf-8"))
                if len(cache) < _CACHE_MAX:
                    cache[chunk] = ids
            out += ids
        return out

    def encode(self, text: str, allowed_special="none_raise", disallowed_special="all") -> list[int]:
        """Encode text with tiktoken's special-token policy.

        ``allowed_special``: a set of special-token strings (or "all") encoded as their ids. Any other special token
        appearing in the text raises ValueError, unless ``disallowed_special`` excludes it (``()`` = treat all
        non-allowed specials as plain text). Default: no specials allowed, all disallowed.
        """
        if allowed_special == "all":
            allowed = set(self.special_tokens)
        elif allowed_special == "none_raise" or allowed_special is None:
            allowed = set()
        else:
            allowed = set(allowed_special)
            unknown = allowed - set(self.special_tokens)
            if unknown:
                raise ValueError(f"allowed_special names unknown special tokens {sorted(unknown)}; "
                                 f"this tokenizer has {sorted(self.special_tokens)}")
        disallowed = set(self.special_tokens) - allowed if disallowed_special == "all" else set(disallowed_special)
        if disallowed:
            for s in disallowed:
                if s in text:
                    raise ValueError(f"text contains the special token {s!r}; pass allowed_special={{{s!r}}} to "
                                     f"encode it as a special token, or disallowed_special=() to encode it as text")
        if not allowed:
            return self.encode_ordinary(text)
        # Split at the *allowed* specials only: a special token that is not allowed is ordinary text and may merge
        # with its neighbours (tiktoken does the same; splitting at it too would change the ids around it).
        out: list[int] = []
        for k, part in enumerate(self._special_splitter(frozenset(allowed)).split(text)):
            if k % 2:  # an allowed special token
                out.append(self.special_tokens[part])
            elif part:
                out += self.encode_ordinary(part)
        return out

    def _special_splitter(self, allowed: frozenset) -> regex.Pattern:
        """Regex with one capturing group matching any of ``allowed`` (longest first), cached per set."""
        splitter = self._special_splitters.get(allowed)
        if splitter is None:
            alternatives = "|".join(regex.escape(s) for s in sorted(allowed, key=len, reverse=True))
            splitter = self._special_splitters[allowed] = regex.compile(f"({alternatives})")
        return splitter

    def decode_bytes(self, ids) -> bytes:
        """The exact bytes of ``ids`` (ints, or a numpy array / torch tensor); an unknown id -> ValueError."""
        if hasattr(ids, "tolist"):
            ids = ids.tolist()
        try:
            return b"".join(map(self._id_to_bytes.__getitem__, ids))
        except KeyError as e:  # ids come from models and files: say which one is out of range
            raise ValueError(f"token id {e.args[0]!r} is not in the vocabulary (ids 0..{self.vocab_size - 1})") from None

    def decode(self, ids) -> str:
        """Decode to text; invalid UTF-8 (e.g. a cut multi-byte character) becomes U+FFFD."""
        return self.decode_bytes(ids).decode("utf-8", errors="replace")

    # -- save / load -----------------------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {"format": FORMAT_NAME, "version": FORMAT_VERSION, "pattern_name": self.pattern_name,
                "pattern": self.pattern,
                "vocab": [[i, b.hex()] for i, b in sorted(self.vocab.items())],
                "special_tokens": self.special_tokens, "merges": [list(m) for m in self.merges]}

    def save(self, path: str | os.PathLike, vocab_path: str | os.PathLike | None = None) -> None:
        """Write the model (versioned JSON) atomically; also the readable vocab listing if ``vocab_path`` is given."""
        atomic_write_text(path, json.dumps(self.to_dict(), ensure_ascii=False) + "\n")
        if vocab_path is not None:
            self.save_vocab(vocab_path)

    def save_vocab(self, path: str | os.PathLike) -> None:
        """Readable listing: ``id <TAB> token <TAB> [left][right] <TAB> hex`` per line (the merge that made it)."""
        made_by = {new: (a, b) for a, b, new in self.merges}
        lines = [f"# {FORMAT_NAME} v{FORMAT_VERSION} vocab; pattern={self.pattern_name}; "
                 f"{len(self.vocab)} tokens + {len(self.special_tokens)} special; columns: id, token, merge, hex"]
        for i, b in sorted(self.vocab.items()):
            src = made_by.get(i)
            how = f"[{render_token(self.vocab[src[0]])}][{render_token(self.vocab[src[1]])}]" if src else ""
            lines.append(f"{i}\t{render_token(b)}\t{how}\t{b.hex()}")
        for s, i in sorted(self.special_tokens.items(), key=lambda kv: kv[1]):
            lines.append(f"{i}\t{s}\t(special)\t")
        atomic_write_text(path, "\n".join(lines) + "\n")

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Tokenizer":
        """Load a file written by ``save``; a corrupt file or another format version raises ValueError naming it."""
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
            name = d["pattern_name"]
            vocab, specials, merges = model_fields(d)
            tok = cls(pattern=name if name in PATTERNS else d["pattern"], vocab=vocab, special_tokens=specials,
                      merges=merges)
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"tokenizer file {path} is corrupt ({type(e).__name__}: {e})") from None
        if tok.pattern != d["pattern"]:
            raise ValueError(f"tokenizer file {path}: pattern {name!r} does not match its stored regex")
        return tok

    @classmethod
    def from_gpt2_files(cls, encoder_json: str | os.PathLike, vocab_bpe: str | os.PathLike) -> "Tokenizer":
        """Load OpenAI's GPT-2 ``encoder.json`` + ``vocab.bpe`` (pattern gpt2, ``<|endoftext|>`` special)."""
        byte_decoder = {c: b for b, c in bytes_to_unicode().items()}
        try:
            encoder = json.loads(Path(encoder_json).read_text(encoding="utf-8"))
            vocab, specials = {}, {}
            for s, i in encoder.items():
                if s == "<|endoftext|>":
                    specials[s] = i
                else:
                    vocab[i] = bytes(byte_decoder[c] for c in s)
        except (KeyError, AttributeError, TypeError, ValueError) as e:  # ValueError: bad JSON or not UTF-8
            raise ValueError(f"{encoder_json} is not a GPT-2 encoder.json ({type(e).__name__}: {e})") from None
        try:
            lines = Path(vocab_bpe).read_text(encoding="utf-8").split("\n")
        except UnicodeDecodeError:
            lines = []
        if not lines or not lines[0].startswith("#version"):
            raise ValueError(f"{vocab_bpe} is not a GPT-2 vocab.bpe (first line should be '#version: ...')")
        merges = []
        for n, line in enumerate(lines[1:], 2):
            if not line:
                continue
            try:
                a, b = line.split(" ")
                merges.append((encoder[a], encoder[b], encoder[a + b]))
            except (ValueError, KeyError):
                raise ValueError(f"{vocab_bpe} line {n}: {line!r} is not a merge of two known tokens") from None
        return cls(pattern="gpt2", vocab=vocab, special_tokens=specials, merges=merges)

    # -- exports ---------------------------------------------------------------------------------------------------
    def to_tiktoken(self, name: str = "llmhw_bpe"):
        """A ``tiktoken.Encoding`` with the same ranks, split pattern and special tokens (so the same ids)."""
        import tiktoken

        return tiktoken.Encoding(name=name, pat_str=self.pattern or WHOLE_TEXT_PATTERN,
                                 mergeable_ranks=dict(self.ranks), special_tokens=dict(self.special_tokens))

    def hf_merges(self) -> list[tuple[bytes, bytes]]:
        """Every pair (x, y) of tokens whose concatenation is a token, ordered by that token's rank.

        tiktoken merges any adjacent pair whose concatenation is a token, with the token's rank as priority, so an HF
        BPE model with this merge list (plus ``ignore_merges``, tiktoken's whole-piece shortcut) applies the same
        merges in the same order. (Exception, not seen in practice: two *different* pairs giving the *same* token
        competing in one word are ordered by list position in HF but by position in text in tiktoken.)
        """
        out = []
        ranks = self.ranks
        for t, r in sorted(ranks.items(), key=lambda kv: kv[1]):
            for k in range(1, len(t)):
                x, y = t[:k], t[k:]
                if x in ranks and y in ranks:
                    out.append((r, ranks[x], ranks[y], x, y))
        out.sort()
        return [(x, y) for *_, x, y in out]

    def to_hf(self):
        """A ``tokenizers.Tokenizer`` (byte-level BPE) giving the same ids; specials are recognised in text."""
        from tokenizers import AddedToken, Regex, decoders, models, pre_tokenizers
        from tokenizers import Tokenizer as HFTokenizer

        b2u = bytes_to_unicode()

        def u(b: bytes) -> str:
            return "".join(b2u[x] for x in b)

        vocab = {u(b): i for i, b in self.vocab.items()}
        for s, i in self.special_tokens.items():
            if s in vocab:
                raise ValueError(f"special token {s!r} has the same byte-level spelling as token {vocab[s]}")
            vocab[s] = i
        merges = [(u(x), u(y)) for x, y in self.hf_merges()]
        hf = HFTokenizer(models.BPE(vocab=vocab, merges=merges, ignore_merges=True, fuse_unk=False,
                                    byte_fallback=False))
        byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
        if self.pattern:
            hf.pre_tokenizer = pre_tokenizers.Sequence(
                [pre_tokenizers.Split(Regex(self.pattern), behavior="isolated", invert=False), byte_level])
        else:
            hf.pre_tokenizer = byte_level
        hf.decoder = decoders.ByteLevel()
        if self.special_tokens:
            hf.add_special_tokens([AddedToken(s, special=True, normalized=False, lstrip=False, rstrip=False,
                                              single_word=False)
                                   for s, _ in sorted(self.special_tokens.items(), key=lambda kv: kv[1])])
        return hf

    def save_hf(self, path: str | os.PathLike) -> None:
        """Write a HF ``tokenizer.json`` atomically (load with tokenizers.Tokenizer.from_file or
        transformers.PreTrainedTokenizerFast(tokenizer_file=...))."""
        atomic_write_text(path, self.to_hf().to_str(pretty=False))
