import pytest
from r1platform.config import ModelSettings
from r1platform.serving.auth import ConcurrencyLimiter, KeyChecker
from r1platform.serving.placement import detect_mode, engine_options, replica_bundles
from r1platform.serving.protocol import ChatRequest, ClientError, CompletionRequest, parse_request

MSG = [{"role": "user", "content": "hi"}]


def test_valid_chat_request_keeps_only_set_sampling_fields():
    req = parse_request(ChatRequest, {"model": "m", "messages": MSG, "top_p": 0.5, "stop": "x"}, 16)
    assert req.sampling(10) == {"n": 1, "max_tokens": 10, "top_p": 0.5, "stop": ["x"]}


@pytest.mark.parametrize(
    ("payload", "param"),
    [
        ({"model": "m", "messages": []}, "messages"),
        ({"model": "m", "messages": MSG, "max_tokens": 0}, "max_tokens"),
        ({"model": "m", "messages": MSG, "temperature": 3}, "temperature"),
        ({"model": "m", "messages": MSG, "stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({"model": "m", "messages": MSG, "n": 17}, "n"),
    ],
)
def test_invalid_requests_name_the_parameter(payload, param):
    with pytest.raises(ClientError) as e:
        parse_request(ChatRequest, payload, 16)
    assert e.value.status == 400 and e.value.param == param and param in e.value.message


def test_non_object_body_is_a_client_error():
    with pytest.raises(ClientError):
        parse_request(CompletionRequest, [1, 2], 16)


def test_max_completion_tokens_wins_over_max_tokens():
    req = ChatRequest.model_validate(
        {"model": "m", "messages": MSG, "max_tokens": 9, "max_completion_tokens": 4}
    )
    assert req.requested_max_tokens == 4


def test_keys_identify_without_revealing_the_key():
    kc = KeyChecker(["sk-a", "sk-b"])
    assert kc.identify("Bearer sk-b") == "key-1"
    for header in (None, "", "Bearer ", "Bearer sk-c", "Basic sk-a"):
        with pytest.raises(ClientError) as e:
            kc.identify(header)
        assert e.value.status == 401 and "sk-a" not in e.value.message
    assert KeyChecker([]).identify(None) == "anonymous"


def test_limiter_counts_per_key():
    lim = ConcurrencyLimiter(2)
    lim.acquire("a")
    lim.acquire("a")
    lim.acquire("b")
    with pytest.raises(ClientError) as e:
        lim.acquire("a")
    assert e.value.status == 429
    lim.release("a")
    lim.acquire("a")
    assert lim.inflight("a") == 2
    # The refused acquire never counted: the peak is the limit, not one past it.
    assert lim.peak == {"a": 2, "b": 1}


def test_bundles_have_one_gpu_unit_per_tp_rank_in_both_modes():
    ms = ModelSettings(accelerator_type="H100", tensor_parallel_size=4)
    gpu = replica_bundles(ms, "gpu")
    assert len(gpu) == 4 and all(b["GPU"] == 1 for b in gpu)
    assert all(b["accelerator_type:H100"] == 0.001 for b in gpu)
    sim = replica_bundles(ms, "simulated")
    assert len(sim) == 4 and all(b["accelerator_type:H100"] == 1 for b in sim)
    assert sim[0]["CPU"] == 1 and "CPU" not in sim[1]


def test_pool_pin_and_autoscaling_reach_serve_options():
    ms = ModelSettings(pool="l4", autoscaling={"min_replicas": 0, "max_replicas": 3})
    opts = engine_options("m", ms, "simulated")
    assert opts["placement_group_bundles"] == [{"CPU": 1.0, "pool:l4": 1.0}]
    assert opts["placement_group_strategy"] == "STRICT_PACK"
    assert opts["autoscaling_config"]["max_replicas"] == 3
    assert opts["autoscaling_config"]["initial_replicas"] == 1
    assert opts["name"] == "m@l4"
    fixed = engine_options("m", ModelSettings(accelerator_type="L4"), "simulated")
    assert fixed["num_replicas"] == 1 and "autoscaling_config" not in fixed
    assert fixed["name"] == "m@L4"
    assert detect_mode({"GPU": 8.0}) == "gpu" and detect_mode({"CPU": 2.0}) == "simulated"


def test_stream_interval_is_one_token_when_idle_and_bounded_under_load():
    from r1platform.serving.engine import adaptive_stream_interval

    assert [adaptive_stream_interval(n) for n in (0, 1, 2, 3, 7, 15, 1000)] == [1, 1, 1, 2, 4, 8, 8]
