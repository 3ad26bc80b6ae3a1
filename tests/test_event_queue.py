"""The core's event heap pops in (time, insertion order)."""

from __future__ import annotations

import random

import pytest

from tokenmill._core import EventQueue


def test_pops_in_time_order() -> None:
    q = EventQueue()
    for t in (5.0, 1.0, 3.0, 2.0, 4.0):
        q.push(t)
    assert [q.pop()[0] for _ in range(5)] == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert len(q) == 0


def test_equal_times_pop_in_insertion_order() -> None:
    q = EventQueue()
    for target in range(10):
        q.push(7.0, kind=1, target=target)
    q.push(6.0, target=99)
    popped = [q.pop() for _ in range(11)]
    assert popped[0][3] == 99
    assert [ev[3] for ev in popped[1:]] == list(range(10))
    assert [ev[1] for ev in popped[1:]] == sorted(ev[1] for ev in popped[1:])


def test_random_interleaving_matches_a_sorted_model() -> None:
    rng = random.Random(3)
    q = EventQueue()
    model: list[tuple[float, int]] = []  # (time, target) in insertion order
    for i in range(5000):
        if model and rng.random() < 0.4:
            expected = min(model, key=lambda e: (e[0], e[1]))  # target == insertion index
            model.remove(expected)
            time, _, _, target = q.pop()
            assert (time, target) == expected
        else:
            t = float(rng.randint(0, 50))  # many ties
            q.push(t, target=i)
            model.append((t, i))
    assert len(q) == len(model)


def test_ties_keep_fifo_across_growth() -> None:
    q = EventQueue()
    rng = random.Random(11)
    items = [(float(rng.randint(0, 20)), i) for i in range(3000)]  # forces several reallocations
    for t, i in items:
        q.push(t, target=i)
    out = [q.pop() for _ in range(len(items))]
    assert [(ev[0], ev[3]) for ev in out] == sorted(items)


def test_pop_empty_raises() -> None:
    with pytest.raises(IndexError):
        EventQueue().pop()
