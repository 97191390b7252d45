"""The fuzz campaign of :mod:`openenv_gym.testing.compliance` against local servers.

One server (``FUZZ_SERVER_ARGS``) hosts CartPole and the composite-space ``DictTupleEnv`` for
the whole module; a second one with a 64 KiB message limit takes the oversized frames cheaply.
Each test draws inputs of one kind (hypothesis' ``randoms()`` through the campaign's own
generators, so a failing draw is replayed and shrunk) and runs the campaign's check, which
raises ``FuzzFailure`` (an ``AssertionError``) on a bad outcome. A bystander session opened
before the campaign must still step afterwards, and exactly the server's capacity limits of
sessions and envs must be admitted again, with its descriptors back where they were.
``pytest -s`` prints how many inputs each check tried and what the server answered.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from openenv_gym.providers.local import LocalProvider
from openenv_gym.testing.compliance import fuzz_inputs as inputs
from openenv_gym.testing.compliance import fuzz_regressions as regressions
from openenv_gym.testing.compliance._support import wait_for
from openenv_gym.testing.compliance.fuzz import (
    ANSWER_TIMEOUT,
    FUZZ_SERVER_ARGS,
    MAX_SESSIONS,
    SMALL_SERVER_ARGS,
    Fuzzer,
    Tally,
)
from openenv_gym.testing.compliance.fuzz_campaign import Bystander
from openenv_gym.testing.compliance.fuzz_frames import FrameChecks
from openenv_gym.testing.compliance.leaks import probe_capacity
from openenv_gym.testing.rawws import healthz, open_fds, rss_mib

SPECS = list(inputs.SPECS)
MAX_ENVS = inputs.MAX_ENVS
TALLY = Tally()

FUZZ = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
QUICK = settings(FUZZ, max_examples=30)
RANDOMS = st.randoms(use_true_random=False)


@pytest.fixture(scope="module")
def server() -> Iterator[LocalProvider]:
    with LocalProvider(SPECS, extra_args=list(FUZZ_SERVER_ARGS)) as provider:
        yield provider


@pytest.fixture(scope="module")
def small_server() -> Iterator[LocalProvider]:
    with LocalProvider(SPECS, extra_args=list(SMALL_SERVER_ARGS)) as provider:
        yield provider


@pytest.fixture(scope="module")
def fuzzer(server: LocalProvider, small_server: LocalProvider) -> Fuzzer:
    return Fuzzer(server.urls[0], small_url=small_server.urls[0], pid=server.pids[0], tally=TALLY)


@pytest.fixture(scope="module")
def frames(fuzzer: Fuzzer) -> FrameChecks:
    return FrameChecks(fuzzer)


@pytest.fixture(scope="module", autouse=True)
def bystander(server: LocalProvider) -> Iterator[tuple[Bystander, int]]:
    """A session opened before the campaign, and the server's fds then; prints the tallies."""
    started = time.monotonic()
    env = Bystander(server.urls[0], "CartPole-v1", reward=1.0)
    assert env.served(1) == 1
    yield env, open_fds(server.pids[0])
    env.close()
    inputs_tried = sum(TALLY.tried.values())
    print(f"\n\nfuzz campaign: {inputs_tried} inputs in {time.monotonic() - started:.1f} s")
    for name, count in sorted(TALLY.tried.items()):
        print(f"  {name:<44} {count:>6}")
    print("server answers:")
    for name, count in sorted(TALLY.outcomes.items()):
        print(f"  {name:<44} {count:>6}")


@FUZZ
@given(rng=RANDOMS)
def test_fuzz_random_bytes_are_answered(fuzzer: Fuzzer, rng: random.Random) -> None:
    fuzzer.check_bytes(*inputs.gen_bytes(rng))


@FUZZ
@given(rng=RANDOMS)
def test_fuzz_random_msgpack_values_are_answered(fuzzer: Fuzzer, rng: random.Random) -> None:
    fuzzer.check_msgpack(*inputs.gen_msgpack(rng))


@FUZZ
@given(rng=RANDOMS)
def test_fuzz_random_envelopes_answered_in_every_state(fuzzer: Fuzzer, rng: random.Random) -> None:
    fuzzer.check_envelope(*inputs.gen_envelope(rng))


@FUZZ
@given(rng=RANDOMS)
def test_fuzz_invalid_hello_fields_are_refused(fuzzer: Fuzzer, rng: random.Random) -> None:
    fuzzer.check_hello(*inputs.gen_hello(rng))


@FUZZ
@given(rng=RANDOMS)
def test_fuzz_invalid_make_fields_are_refused(fuzzer: Fuzzer, rng: random.Random) -> None:
    fuzzer.check_make(*inputs.gen_make(rng))


@pytest.mark.parametrize("num_envs", [100_000, 10**9, 2**63 - 1, 2**64 - 1])
@pytest.mark.parametrize("env_id", SPECS)
def test_fuzz_huge_num_envs_refused_without_building_them(
    fuzzer: Fuzzer, num_envs: int, env_id: str
) -> None:
    fuzzer.check_huge_make(env_id, num_envs)


@FUZZ
@given(rng=RANDOMS)
def test_fuzz_bad_actions_are_answered(fuzzer: Fuzzer, rng: random.Random) -> None:
    fuzzer.check_actions(*inputs.gen_actions(rng))


@FUZZ
@given(rng=RANDOMS)
def test_fuzz_invalid_seeds_and_options_are_answered(fuzzer: Fuzzer, rng: random.Random) -> None:
    fuzzer.check_reset(*inputs.gen_reset(rng))


@QUICK
@given(rng=RANDOMS)
def test_fuzz_text_frames_are_refused(fuzzer: Fuzzer, rng: random.Random) -> None:
    fuzzer.check_text(*inputs.gen_text(rng))


def test_fuzz_invalid_utf8_text_frames_are_refused(fuzzer: Fuzzer) -> None:
    fuzzer.check_invalid_utf8_text()


@QUICK
@given(rng=RANDOMS)
def test_fuzz_fragmented_messages_are_reassembled(fuzzer: Fuzzer, rng: random.Random) -> None:
    fuzzer.check_fragments(*inputs.gen_fragments(rng))


@QUICK
@given(rng=RANDOMS)
def test_fuzz_frames_split_across_tcp_segments_are_reassembled(
    frames: FrameChecks, rng: random.Random
) -> None:
    frames.check_segments(*inputs.gen_segments(rng))


@FUZZ
@given(rng=RANDOMS)
def test_fuzz_invalid_frame_sequences_close_cleanly(
    frames: FrameChecks, rng: random.Random
) -> None:
    frames.check_raw_frames(*inputs.gen_raw_frames(rng))


@FUZZ
@given(rng=RANDOMS)
def test_fuzz_http_garbage_gets_http_or_eof(frames: FrameChecks, rng: random.Random) -> None:
    frames.check_http(*inputs.gen_http(rng))


@FUZZ
@given(rng=RANDOMS)
def test_fuzz_abrupt_disconnects_are_survived(frames: FrameChecks, rng: random.Random) -> None:
    frames.check_abrupt(*inputs.gen_abrupt(rng))


@QUICK
@given(rng=RANDOMS)
def test_fuzz_oversized_messages_close_with_1009(frames: FrameChecks, rng: random.Random) -> None:
    frames.check_oversize(*inputs.gen_oversize(rng))


def test_fuzz_replies_over_the_limit_are_refused(frames: FrameChecks) -> None:
    frames.check_reply_over_limit()


def test_fuzz_generators_cover_every_check(fuzzer: Fuzzer, frames: FrameChecks) -> None:
    for kind in inputs.GENERATORS:
        assert hasattr(fuzzer, f"check_{kind}") or hasattr(frames, f"check_{kind}"), kind


# --------------------------------------------------------------------------- known bugs


def test_fuzz_tiny_frames_that_decode_to_huge_arrays_are_refused(fuzzer: Fuzzer) -> None:
    regressions.check_tiny_frame_huge_array(fuzzer)


def test_fuzz_frame_hidden_in_another_frames_payload_is_not_served(fuzzer: Fuzzer) -> None:
    regressions.check_hidden_frame_not_served(fuzzer)


def test_fuzz_memory_bounded_for_replies_a_client_does_not_read(fuzzer: Fuzzer) -> None:
    regressions.check_unread_replies_bounded(fuzzer)


def test_fuzz_threaded_server_releases_envs_of_a_client_gone_during_make() -> None:
    with LocalProvider(
        ["CartPole-v1"], extra_args=list(regressions.THREADED_MAKE_ARGS)
    ) as provider:
        regressions.check_envs_released_after_disconnect_during_make(provider.urls[0])


# --------------------------------------------------------------------------- afterwards


def test_fuzz_server_keeps_serving_after_the_campaign(
    server: LocalProvider, small_server: LocalProvider, bystander: tuple[Bystander, int]
) -> None:
    url, pid = server.urls[0], server.pids[0]
    env, fds = bystander
    assert env.served(30) == 30  # opened before the campaign, it still steps correctly
    assert healthz(url, ANSWER_TIMEOUT) == 200
    assert healthz(small_server.urls[0], ANSWER_TIMEOUT) == 200
    # Exactly MAX_SESSIONS - 1 more sessions fit next to the bystander (and MAX_ENVS - 1 more
    # envs): none leaked. Teardown is asynchronous: wait, with a deadline, for the last closes.
    probes = []

    def none_leaked() -> bool:
        probes.append(
            probe_capacity(url, max_sessions=MAX_SESSIONS, max_envs=MAX_ENVS, held_envs=1)
        )
        return probes[-1].sessions == MAX_SESSIONS - 1 and probes[-1].envs_admitted

    wait_for(none_leaked, 5.0, poll=0.2)
    capacity = probes[-1]
    assert capacity.sessions == MAX_SESSIONS - 1, capacity
    assert capacity.session_refusal == f"at capacity: {MAX_SESSIONS}/{MAX_SESSIONS} sessions"
    assert capacity.envs_admitted, capacity
    assert capacity.envs_refusal == f"at capacity: {MAX_ENVS}/{MAX_ENVS} envs (asked for 1 more)"
    # No descriptors leaked: back to the count taken when the bystander connected.
    wait_for(lambda: open_fds(pid) <= fds, 5.0)
    assert open_fds(pid) <= fds, f"{open_fds(pid) - fds} fds leaked"
    print(f"\nserver pid {pid}: {open_fds(pid)} fds, {rss_mib(pid):.0f} MiB RSS after the campaign")
