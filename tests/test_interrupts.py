"""flatvol.interrupts in this process: SIGINT / SIGTERM become Interrupted once, a held section
delays a signal to its end, and a child started deaf to Ctrl-C survives one."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest

from flatvol import interrupts
from flatvol.interrupts import (
    Interrupted,
    holding_signals,
    raising_interrupted,
    received_signal,
    starting_children,
)


@pytest.fixture(autouse=True)
def _fresh_signal_state(monkeypatch):
    """Each test starts with no signal received and leaves the handlers as it found them."""
    monkeypatch.setattr(interrupts, "_received", [])
    before = {stop: signal.getsignal(stop) for stop in interrupts.STOP_SIGNALS}
    yield
    for stop, handler in before.items():
        signal.signal(stop, handler)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_stop_signal_raises_interrupted_once(signum):
    with pytest.raises(Interrupted) as caught, raising_interrupted():
        signal.raise_signal(signum)
    assert caught.value.signum == signum and received_signal() == signum
    assert isinstance(caught.value, KeyboardInterrupt)  # what Ray's waits expect
    try:  # a second signal while the caller stops is ignored, not a second exception
        signal.raise_signal(signal.SIGINT)
        signal.raise_signal(signal.SIGTERM)
    except KeyboardInterrupt:
        pytest.fail("a second signal interrupted the clean-up")


def test_a_held_section_delivers_its_signal_at_its_end():
    finished = False
    with pytest.raises(Interrupted) as caught, raising_interrupted():
        with holding_signals():
            signal.raise_signal(signal.SIGTERM)
            finished = True  # the section runs to its end
    assert finished and caught.value.signum == signal.SIGTERM


def test_no_signal_leaves_the_handlers_as_they_were():
    before = signal.getsignal(signal.SIGINT)
    with raising_interrupted(), holding_signals():
        pass
    assert signal.getsignal(signal.SIGINT) is before and received_signal() is None


def test_a_child_started_deaf_to_ctrl_c_survives_one():
    """The child blocks SIGINT from its first instruction (inherited mask) until it ignores
    it: a Ctrl-C while it starts is discarded, not a KeyboardInterrupt."""
    code = ("import os, signal, sys; os.kill(os.getpid(), signal.SIGINT); "
            "from flatvol.interrupts import ignore_sigint; ignore_sigint(); "
            "os.kill(os.getpid(), signal.SIGINT); print('alive')")
    with starting_children():
        child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True)
    out, err = child.communicate(timeout=60)
    assert (child.returncode, out.strip()) == (0, "alive"), err


def test_an_interrupted_pool_drops_only_the_resource_sharers_lost_connections(capfd):
    """A worker ended mid-handshake makes the driver's fd-sharing thread report
    ConnectionResetError through sys.excepthook (seen as a traceback under the interrupt's line
    in CI): after the pool stops its workers that error is dropped, and any other error is
    still printed."""
    import sys
    import threading
    from multiprocessing import resource_sharer
    from types import SimpleNamespace

    from flatvol.experiments import backends

    class Stop:  # the connection that tells the sharer to stop serving
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def recv(self):
            return None

    class LostWorkerThenStop:
        calls = 0

        def accept(self):
            self.calls += 1
            if self.calls == 1:
                raise ConnectionResetError(104, "Connection reset by peer")
            return Stop()

    saved = sys.excepthook
    try:
        backends._silence_resource_sharer()
        backends._silence_resource_sharer()  # a second stop installs nothing more
        # The real serving loop, on a listener whose worker was just ended.
        thread = threading.Thread(target=resource_sharer._ResourceSharer._serve,
                                  args=(SimpleNamespace(_listener=LostWorkerThenStop()),))
        thread.start()
        thread.join(30)
        assert not thread.is_alive()
        try:
            raise ConnectionResetError(104, "somebody else's connection")
        except ConnectionResetError:
            sys.excepthook(*sys.exc_info())
    finally:
        sys.excepthook = saved
    err = capfd.readouterr().err
    assert "Connection reset by peer" not in err
    assert err.count("Traceback") == 1 and "somebody else's connection" in err
