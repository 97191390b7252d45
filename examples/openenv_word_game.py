"""An OpenEnv text env hosted batched by openenv-gym, driven by gymnasium AND by OpenEnv's client.

``WordGuessEnv`` (``openenv_gym/testing/openenv_echo.py``) is an OpenEnv ``Environment`` written
the OpenEnv way: pydantic ``GuessAction(guess: str)`` and ``GuessObservation(feedback,
in_place, guesses_left)``. Each episode hides one of five three-letter words (chosen by the
reset seed); a guess is rewarded with the fraction of letters in place, 1.0 when right, and the
episode ends when solved or after ``max_guesses`` guesses. Usage::

    python examples/openenv_word_game.py                 # 16 envs, 8 episodes each
    python examples/openenv_word_game.py --num-envs 16 --episodes-per-env 4 --max-guesses 3

One local server hosts the class by its entry point (``openenv-gym serve
openenv_gym.testing.openenv_echo:WordGuessEnv``); the spaces come from the pydantic models.

(a) ``openenv_gym.RemoteVectorEnv`` runs ``--num-envs`` copies in that server, as one batched
    session. Two policies play the same seeded episodes: *search* keeps the words consistent
    with every ``in_place`` feedback so far and guesses the one that splits the rest best;
    *random* guesses a uniformly random word from the list each time. Reported: mean return,
    solve rate, mean guesses per episode.
(b) OpenEnv's own ``GenericEnvClient`` (their client, unmodified) connects to the SAME server at
    ``http://127.0.0.1:<port>/envs/<url-quoted entry point>``, reads ``/metadata`` and
    ``/schema`` there, and plays one episode with the search policy over OpenEnv's ``/ws``
    protocol (JSON messages, native pydantic field names).

Note on the figures: every wrong guess still earns ``in_place / 3``, so with the default six
guesses a random guesser that flails for longer collects *more* return than the search policy
that solves every word in at most three guesses; the solve rate is the figure that says which
policy plays the game. With ``--max-guesses 3`` the search policy wins on both.

Needs OpenEnv (``pip install openenv``; ``openenv-core`` 0.3 works too). ``main(argv)`` returns
the figures.
"""

from __future__ import annotations

import argparse
import json
import random
import time
import urllib.parse
import urllib.request
from collections.abc import Sequence
from typing import Any

import numpy as np

import openenv_gym
from openenv_gym.providers import LocalProvider

SPEC = "openenv_gym.testing.openenv_echo:WordGuessEnv"
WORDS = ("cab", "bad", "dab", "add", "bed")  # the env's word list (openenv_echo.WORDS)


def in_place(guess: str, word: str) -> int:
    """Count the letters of ``guess`` in their place in ``word`` (the env's feedback)."""
    return sum(a == b for a, b in zip(guess, word, strict=False))


class SearchPolicy:
    """Keep the words consistent with the feedback so far; guess the most informative one.

    Among the remaining candidates it guesses the one whose worst-case feedback leaves the
    fewest candidates (ties: the smaller expected remainder, then list order), so five words
    take at most three guesses.
    """

    def __init__(self) -> None:
        self.candidates = list(WORDS)
        self.last_guess: str | None = None

    def reset(self) -> None:
        """Forget the previous episode."""
        self.candidates = list(WORDS)
        self.last_guess = None

    def act(self, feedback: int) -> str:
        """Return the next guess, given the ``in_place`` feedback on the previous one."""
        if self.last_guess is not None:
            self.candidates = [
                w for w in self.candidates if in_place(self.last_guess, w) == feedback
            ] or list(WORDS)
        self.last_guess = min(self.candidates, key=self._split_cost)
        return self.last_guess

    def _split_cost(self, guess: str) -> tuple[int, float, int]:
        groups: dict[int, int] = {}
        for word in self.candidates:
            if word != guess:
                feedback = in_place(guess, word)
                groups[feedback] = groups.get(feedback, 0) + 1
        sizes = list(groups.values()) or [0]
        return max(sizes), sum(s * s for s in sizes) / len(self.candidates), WORDS.index(guess)


class RandomPolicy:
    """Guess a uniformly random word from the list, ignoring the feedback."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def reset(self) -> None:
        """Nothing to forget."""

    def act(self, feedback: int) -> str:
        """Return a random word."""
        return self.rng.choice(WORDS)


def evaluate(
    envs: openenv_gym.RemoteVectorEnv, policies: Sequence[Any], rounds: int, seed: int
) -> dict[str, float]:
    """Play ``rounds`` rounds of one seeded episode per env; return the policy's figures.

    Round ``r`` resets env ``i`` with seed ``seed + r * num_envs + i`` (so every policy meets the
    same words) and steps until every env's episode has ended. Envs that finish early are
    autoreset by the vector env (next-step mode); their later steps are ignored.
    """
    n = envs.num_envs
    returns: list[float] = []
    guesses: list[int] = []
    solved: list[bool] = []
    for r in range(rounds):
        obs, _ = envs.reset(seed=seed + r * n)
        for policy in policies:
            policy.reset()
        live = np.ones(n, dtype=bool)
        total = np.zeros(n)
        count = np.zeros(n, dtype=int)
        while live.any():
            feedback = obs["in_place"]
            actions = tuple(
                policy.act(int(feedback[i])) if live[i] else WORDS[0]
                for i, policy in enumerate(policies)
            )
            obs, reward, terminated, truncated, _ = envs.step({"guess": actions})
            total[live] += reward[live]
            count[live] += 1
            for i in np.flatnonzero(live & (terminated | truncated)):
                returns.append(float(total[i]))
                guesses.append(int(count[i]))
                solved.append(bool(reward[i] == 1.0))
            live &= ~(terminated | truncated)
    return {
        "episodes": len(returns),
        "mean_return": float(np.mean(returns)),
        "solve_rate": float(np.mean(solved)),
        "mean_guesses": float(np.mean(guesses)),
    }


def _get_json(url: str) -> dict[str, Any]:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: no proxy
    with opener.open(url, timeout=10) as response:
        return dict(json.loads(response.read()))


def play_with_openenv_client(server_url: str, seed: int) -> dict[str, Any]:
    """Play one episode of the hosted env with OpenEnv's ``GenericEnvClient``."""
    from openenv.core.generic_client import GenericEnvClient  # OpenEnv's own client

    host = server_url.replace("ws://", "http://", 1).replace("wss://", "https://", 1)
    base_url = f"{host}/envs/{urllib.parse.quote(SPEC, safe='')}"
    metadata = _get_json(f"{base_url}/metadata")
    schema = _get_json(f"{base_url}/schema")
    policy = SearchPolicy()
    transcript: list[dict[str, Any]] = []
    with GenericEnvClient(base_url=base_url).sync() as client:
        result = client.reset(seed=seed)
        total = 0.0
        while not result.done:
            guess = policy.act(int(result.observation.get("in_place", 0)))
            result = client.step({"guess": guess})
            total += result.reward or 0.0
            transcript.append(
                {
                    "guess": guess,
                    "feedback": result.observation["feedback"],
                    "reward": result.reward,
                }
            )
        state = client.state()
    return {
        "base_url": base_url,
        "metadata": metadata,
        "action_fields": sorted(schema["action"].get("properties", {})),
        "observation_fields": sorted(schema["observation"].get("properties", {})),
        "transcript": transcript,
        "done": bool(result.done),
        "solved": result.observation.get("feedback") == "solved",
        "return": total,
        "state": state,
    }


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--num-envs", type=int, default=16)
    p.add_argument("--episodes-per-env", type=int, default=8, help="rounds of one episode each")
    p.add_argument("--max-guesses", type=int, default=None, help="env default: 6")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run (a) and (b); return their figures."""
    args = parse_args(argv)
    say = (lambda *_: None) if args.quiet else print
    started = time.perf_counter()
    env_kwargs = {} if args.max_guesses is None else {"max_guesses": args.max_guesses}
    # The operator allows clients to choose max_guesses; every other kwarg is refused.
    with LocalProvider([SPEC], extra_args=["--env-kwargs-allow", "max_guesses"]) as provider:
        server_url = provider.urls[0]
        say(f"server {server_url} hosts {SPEC}")

        # (a) batched through RemoteVectorEnv: one session holding num_envs envs.
        envs = openenv_gym.RemoteVectorEnv(SPEC, args.num_envs, urls=[server_url], **env_kwargs)
        try:
            say(f"action space {envs.single_action_space}")
            rng = random.Random(args.seed)
            figures = {
                "search": evaluate(
                    envs,
                    [SearchPolicy() for _ in range(args.num_envs)],
                    args.episodes_per_env,
                    args.seed,
                ),
                "random": evaluate(
                    envs,
                    [RandomPolicy(rng) for _ in range(args.num_envs)],
                    args.episodes_per_env,
                    args.seed,
                ),
            }
        finally:
            envs.close()
        for name, f in figures.items():
            say(
                f"{name:>6}: {f['episodes']} episodes  mean return {f['mean_return']:.3f}  "
                f"solve rate {f['solve_rate']:.3f}  mean guesses {f['mean_guesses']:.2f}"
            )

        # (b) the same hosted env, through OpenEnv's own client and protocol.
        episode = play_with_openenv_client(server_url, args.seed)
        say(f"OpenEnv GenericEnvClient at {episode['base_url']}")
        say(f"  /metadata name {episode['metadata'].get('name')!r}")
        for move in episode["transcript"]:
            say(f"  guess {move['guess']!r}: {move['feedback']} (reward {move['reward']:.3f})")
        say(f"  done={episode['done']} return {episode['return']:.3f} state {episode['state']}")
    seconds = time.perf_counter() - started
    say(f"{seconds:.1f} s")
    return {
        "spec": SPEC,
        "server_url": server_url,
        "num_envs": args.num_envs,
        **{f"{name}_{key}": value for name, f in figures.items() for key, value in f.items()},
        "openenv_client": episode,
        "seconds": seconds,
    }


if __name__ == "__main__":
    main()
