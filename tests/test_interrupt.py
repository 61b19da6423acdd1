"""Ctrl-C: the step that was interrupted names itself, and no press is lost or noisy."""

from __future__ import annotations

import gc
import signal
import time

import pytest

from clipeval.interrupt import calm_sigint, during


def test_the_innermost_step_names_the_interrupt():
    encoding = during(lambda: "encoding the image features of digits; 8 of 42 images are cached")
    with pytest.raises(KeyboardInterrupt) as caught, during("evaluating task 'digits'"), encoding:
        raise KeyboardInterrupt
    assert str(caught.value) == "encoding the image features of digits; 8 of 42 images are cached"


def test_other_exceptions_pass_unlabelled():
    with pytest.raises(ValueError, match="^bad$"), during("anything"):
        raise ValueError("bad")


def test_the_previous_handler_comes_back_when_nothing_was_pressed():
    before = signal.getsignal(signal.SIGINT)
    with calm_sigint():
        assert signal.getsignal(signal.SIGINT) is not before
    assert signal.getsignal(signal.SIGINT) is before


def test_a_press_swallowed_by_a_finaliser_is_delivered_again(capsys):
    """Python ignores an exception raised inside ``__del__`` (printing ``Exception ignored in``); the first
    Ctrl-C landing there would be lost and the run would go on."""

    class PressedDuringCleanUp:
        def __del__(self):
            signal.raise_signal(signal.SIGINT)  # the handler raises here, inside the finaliser

    before = signal.getsignal(signal.SIGINT)
    try:
        with pytest.raises(KeyboardInterrupt):
            deadline = time.monotonic() + 10
            with calm_sigint():
                PressedDuringCleanUp()
                gc.collect()
                while time.monotonic() < deadline:  # the run going on
                    time.sleep(0.01)
        assert time.monotonic() < deadline
        assert "Exception ignored" not in capsys.readouterr().err
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN  # later presses cannot kill the exit
    finally:
        signal.signal(signal.SIGINT, before)
