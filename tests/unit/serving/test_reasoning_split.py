from r1platform.serving.reasoning import ReasoningSplitter, ThinkTags, split_full

TAGS = ThinkTags(start_id=10, end_id=11)


def stream(text: str, step: int) -> tuple[str, str]:
    s = ReasoningSplitter(TAGS)
    r, c = "", ""
    for i in range(0, len(text), step):
        dr, dc, _ = s.feed(text[i : i + step])
        r, c = r + dr, c + dc
    fr, fc = s.flush()
    return r + fr, c + fc


def test_prefilled_think_means_reasoning_until_close_tag():
    assert split_full("a+b: 3</think><answer>3</answer>") == ("a+b: 3", "<answer>3</answer>")


def test_leading_think_tag_is_dropped_and_no_close_means_all_reasoning():
    assert split_full("<think>still thinking") == ("still thinking", None)


def test_tags_split_across_any_delta_boundaries_never_leak():
    text = "reason here</think>The answer is 4 < 5, not </think>6<think>."
    for step in range(1, len(text) + 1):
        r, c = stream(text, step)
        assert r == "reason here"
        assert c == "The answer is 4 < 5, not 6."
        assert "<think>" not in c and "</think>" not in c


def test_reasoning_token_count_stops_at_close_tag():
    s = ReasoningSplitter(TAGS)
    assert s.feed("ab", [1, 2])[2] == 2
    assert s.feed("c</think>d", [3, 11, 4])[2] == 1
    assert s.feed("e", [5])[2] == 0


def test_from_vllm_parser_uses_tokenizer_ids():
    from r1platform.models.tokenizer import build_tokenizer

    tok = build_tokenizer()
    tags = ThinkTags.from_tokenizer(tok)
    assert (tags.start, tags.end) == ("<think>", "</think>")
    assert tags.end_id == tok.convert_tokens_to_ids("</think>")
