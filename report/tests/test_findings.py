"""report/findings.py on hand-made logs: each finding's verdict comes out both ways, with the deciding numbers
checked by hand."""
import math

import pytest

import findings as fd
from handmade import log


FALLING = [3.0 - 0.1 * i for i in range(20)]            # train loss 3.0 -> 1.1 over 20 steps


def test_full_finetuning_that_turns_is_overfitting():
    rows = log(FALLING, [3.0, 2.6, 2.4, 2.5, 2.7], every=5)   # minimum 2.4 at step 10, then up to 2.7
    v = fd.full_overfits_verdict(rows)
    assert (v["min_step"], v["min_eval"], v["final_eval"]) == (10, 2.4, 2.7)
    assert v["rise"] == pytest.approx(0.3) and v["turned"] and v["train_falling"] and v["reproduced"]
    # window of 20% of 20 steps = 4 around step 10 (steps 8..12: 2.3, 2.2, 2.1, 2.0, 1.9) and over steps 16..20
    assert v["train_at_min"] == pytest.approx(2.1) and v["train_final"] == pytest.approx(1.3)


def test_full_finetuning_still_falling_is_not_overfitting():
    v = fd.full_overfits_verdict(log(FALLING, [3.0, 2.6, 2.4, 2.3, 2.25], every=5))
    assert v["min_step"] == 20 and v["rise"] == 0 and not v["turned"] and not v["reproduced"]


def test_a_rise_within_tolerance_is_flat_not_a_turn():
    v = fd.full_overfits_verdict(log(FALLING, [3.0, 2.6, 2.4, 2.405, 2.409], every=5))
    assert v["min_step"] == 10 and v["rise"] < fd.RISE_TOL and not v["reproduced"]


def test_eval_rising_while_train_also_rises_is_not_overfitting():
    train = FALLING[:10] + [2.1 + 0.1 * i for i in range(10)]   # train turns up too: divergence, not overfitting
    v = fd.full_overfits_verdict(log(train, [3.0, 2.6, 2.4, 2.5, 2.7], every=5))
    assert v["turned"] and not v["train_falling"] and not v["reproduced"]


def test_lora_following_its_train_loss_and_one_that_turns():
    good = log(FALLING, [3.0, 2.8, 2.7, 2.65, 2.62], every=5)
    turned = log(FALLING, [3.0, 2.8, 2.7, 2.75, 2.8], every=5)
    v = fd.lora_follows_verdict({"LoRA r=1": good, "LoRA r=8": good})
    assert v["reproduced"] and v["failing"] == [] and v["max_rise"] == 0
    assert v["runs"]["LoRA r=1"]["eval_first"] == 3.0 and v["runs"]["LoRA r=1"]["final_eval"] == 2.62
    v = fd.lora_follows_verdict({"LoRA r=1": good, "LoRA r=8": turned})
    assert not v["reproduced"] and v["failing"] == ["LoRA r=8"] and v["max_rise"] == pytest.approx(0.1)


def test_lora_whose_eval_never_moved_does_not_follow():
    flat = log(FALLING, [3.0, 3.0, 3.0, 3.0, 3.0], every=5)
    assert fd.lora_follows_verdict({"LoRA r=2": flat})["failing"] == ["LoRA r=2"]


def test_ranks_alike_against_seed_noise():
    finals = {1: 2.50, 2: 2.51, 4: 2.49, 8: 2.505, 16: 2.50, 32: 2.495}
    v = fd.ranks_alike_verdict(finals, (2.50, 2.52))
    assert v["spread"] == pytest.approx(0.02) and v["seed_spread"] == pytest.approx(0.02)
    assert v["ratio"] == pytest.approx(1.0) and v["reproduced"] and (v["best_rank"], v["worst_rank"]) == (4, 2)


def test_ranks_that_differ_beyond_seed_noise():
    finals = {1: 2.90, 2: 2.80, 4: 2.70, 8: 2.60, 16: 2.55, 32: 2.50}
    v = fd.ranks_alike_verdict(finals, (2.60, 2.61))
    # spread 0.40 > 2 x 0.01; 0.40 is 15% of the mean 2.675
    assert v["spread"] == pytest.approx(0.40) and v["bound"] == pytest.approx(0.02) and not v["reproduced"]
    assert v["relative_spread"] == pytest.approx(0.40 / 2.675)


def test_identical_seeds_give_infinite_ratio_and_only_equal_ranks_are_alike():
    v = fd.ranks_alike_verdict({1: 2.0, 2: 2.01}, (2.0, 2.0))
    assert math.isinf(v["ratio"]) and v["bound"] == 0 and not v["reproduced"]
    assert fd.ranks_alike_verdict({1: 2.0, 2: 2.0}, (2.0, 2.0))["reproduced"]


def test_lora_answers_longer_or_not():
    lengths = {"base": [50] * 4, "full": [10, 12, 14, 16], "lora": [30, 33, 34, 39]}
    v = fd.lora_longer_verdict(lengths, lora="lora", full="full", base="base")
    # paired differences 20, 21, 20, 23: mean 21, sd sqrt(2) -> se sqrt(2)/2
    assert v["diff"] == pytest.approx(21) and v["diff_se"] == pytest.approx(math.sqrt(2) / 2)
    assert v["mean"]["lora"] == pytest.approx(34) and v["n"] == 4 and v["reproduced"]
    lengths["lora"] = [12, 10, 16, 13]                       # differences 2, -2, 2, -3: mean -0.25
    v = fd.lora_longer_verdict(lengths, lora="lora", full="full", base="base")
    assert v["diff"] == pytest.approx(-0.25) and not v["reproduced"]


def test_lora_longer_counts_only_answers_both_models_ended():
    # 7 instructions; LoRA's answers 2, 4 and 5 were cut at the limit (96), full's answer 6 too
    lengths = {"base": [96] * 7, "full": [10, 12, 14, 16, 10, 11, 96], "lora": [30, 33, 96, 39, 96, 96, 40]}
    ended = {"base": [False] * 7, "full": [True] * 6 + [False], "lora": [True, True, False, True, False, False, True]}
    v = fd.lora_longer_verdict(lengths, lora="lora", full="full", base="base", ended=ended)
    # pairs 0, 1, 3: differences 20, 21, 23 -> only 3 < MIN_PAIRS pairs: not decided, not reproduced
    assert v["n"] == 3 and v["diff"] == pytest.approx(64 / 3) and not v["decided"] and not v["reproduced"]
    assert v["ended"] == {"base": 0, "full": 6, "lora": 4} and v["mean_ended"]["lora"] == pytest.approx(34)
    lengths = {k: v_ + v_[:4] for k, v_ in lengths.items()}  # 4 more instructions, all ended
    ended = {k: v_ + [True] * 4 for k, v_ in ended.items()}
    v = fd.lora_longer_verdict(lengths, lora="lora", full="full", base="base", ended=ended)
    assert v["n"] == 7 and v["decided"] and v["reproduced"]
    # the cut answers would have made the difference larger: without `ended`, every pair counts
    assert fd.lora_longer_verdict(lengths, lora="lora", full="full", base="base")["diff"] > v["diff"]


def test_binomial_standard_error():
    assert fd.binomial_se(0.25, 300) == pytest.approx(0.025)
    assert math.isnan(fd.binomial_se(0.5, 0))
