"""flatvol.progress: live bars on a terminal, plain periodic lines otherwise, nothing when off."""

from __future__ import annotations

import io
import time

import pytest
from typer.testing import CliRunner

from flatvol.progress import INTERVAL_ENV, ProgressBar, track


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def assert_plain(text: str) -> None:
    assert "\r" not in text and "\x1b[" not in text, repr(text[:200])


def test_plain_lines_when_not_a_terminal() -> None:
    stream = io.StringIO()
    with ProgressBar("fit", total=3, unit="epochs", stream=stream, interval=0) as bar:
        for epoch in range(1, 4):
            bar.update(epoch, status=f"loss {1 / epoch:.2f}")
    lines = stream.getvalue().splitlines()
    assert_plain(stream.getvalue())
    assert lines[0].startswith("fit: 1/3 epochs, loss 1.00, ")
    assert lines[-1].startswith("fit: 3/3 epochs, loss 0.33, ") and lines[-1].endswith(", done")
    assert len(lines) == 4  # one per update at interval 0, then the final line


def test_interval_spaces_the_lines_and_the_final_line_always_comes() -> None:
    stream = io.StringIO()
    with ProgressBar("slow", total=1000, stream=stream, interval=3600) as bar:
        for i in range(1000):
            bar.advance()
            assert i >= 0
    assert stream.getvalue().splitlines() == [stream.getvalue().strip()]
    assert stream.getvalue().startswith("slow: 1000/1000, ")


def test_lines_keep_coming_while_the_task_reports_nothing() -> None:
    # One long step (a 10-class V(f)) reports nothing for minutes: the log must not go quiet.
    stream = io.StringIO()
    with ProgressBar("V(f)", total=3, stream=stream, interval=0.05) as bar:
        bar.update(1)
        deadline = time.monotonic() + 30
        while len(stream.getvalue().splitlines()) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
    lines = stream.getvalue().splitlines()
    assert len(lines) >= 4 and all(line.startswith("V(f): 1/3, ") for line in lines[:3])
    assert lines[-1].endswith(", done")
    after = stream.getvalue()
    time.sleep(0.2)
    assert stream.getvalue() == after  # nothing after the close


def test_a_bar_dropped_without_closing_stops_its_heartbeat() -> None:
    # An exception between a library's bar and its close must not leave a thread writing lines
    # for the rest of the process (a sweep goes on after a failed run).
    import gc
    import threading

    stream = io.StringIO()
    bar = ProgressBar("dropped", total=3, stream=stream, interval=0.02)
    del bar
    gc.collect()
    deadline = time.monotonic() + 30
    while (any(t.name == "progress: dropped" for t in threading.enumerate())
           and time.monotonic() < deadline):
        time.sleep(0.01)
    assert not any(t.name == "progress: dropped" for t in threading.enumerate())
    after = stream.getvalue()
    time.sleep(0.1)
    assert stream.getvalue() == after


def test_interval_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(INTERVAL_ENV, "0.25")
    assert ProgressBar("x", stream=io.StringIO()).interval == 0.25


def test_quick_library_bar_leaves_no_line_and_disabled_writes_nothing() -> None:
    quick, off = io.StringIO(), io.StringIO()
    with ProgressBar("lanczos", total=5, stream=quick, interval=3600, leave=False) as bar:
        bar.advance(5)
    with ProgressBar("train", total=5, stream=off, enabled=False, interval=0) as bar:
        bar.advance(5)
    assert quick.getvalue() == "" and off.getvalue() == ""


def test_live_bar_on_a_terminal_and_nested_bars_share_it() -> None:
    terminal = FakeTerminal()
    with ProgressBar("outer", total=2, stream=terminal) as outer:
        assert outer.mode == "live"
        # A library bar inside a CLI bar: rich allows one live display, so they share it.
        with ProgressBar("inner", total=3, stream=terminal) as inner:
            assert inner.mode == "live" and inner._live is outer._live
            inner.advance(3)
        outer.update(2)
    assert "\x1b[" in terminal.getvalue()  # a live display draws with cursor codes
    with ProgressBar("again", total=1, stream=terminal) as bar:  # the display was released
        assert bar.mode == "live"


def test_track_yields_every_item() -> None:
    assert list(track(range(4), "items", enabled=False)) == [0, 1, 2, 3]
    assert list(track(iter("ab"), "letters")) == ["a", "b"]


def test_train_cli_redirected_prints_plain_periodic_lines(tmp_path, monkeypatch, cli) -> None:
    monkeypatch.delenv("FLATVOL_DATA", raising=False)
    monkeypatch.setenv(INTERVAL_ENV, "0")
    code, _, err = cli("train", "--out", str(tmp_path / "run"), "--train-size", "60",
                       "--test-size", "50", "--model", "fcn:16", "--lr", "0.05",
                       "--max-epochs", "300")
    assert code in (0, None), err
    assert_plain(err)
    lines = [line for line in err.splitlines() if line.startswith("train: ")]
    assert len(lines) >= 2, err
    assert "/300 epochs, loss " in lines[0] and ", acc_S " in lines[0]
    assert lines[-1].endswith(", done")


def test_flatness_cli_redirected_progress_is_plain(tmp_path, monkeypatch) -> None:
    import typer

    from flatvol.cli.flatness import flatness_command
    from flatvol.models import build_model
    from flatvol.train.checkpoint import save_run

    model = build_model("fcn:8", (1, 28, 28), seed=0)
    info = {"task": "mnist", "train_size": 40, "attack_size": 0, "test_size": 10,
            "model": "fcn:8", "prior": {"sigma_w2": 2.0, "sigma_b2": 1.0}, "seed": 0}
    save_run(tmp_path / "run", model, info)
    app = typer.Typer()
    app.command("flatness")(flatness_command)
    app.command("noop")(lambda: None)
    monkeypatch.setenv(INTERVAL_ENV, "0")
    result = CliRunner().invoke(app, ["flatness", str(tmp_path / "run"), "--measures",
                                      "sharpness,hessian_top_eig", "--progress"])
    assert result.exit_code == 0, result.output
    assert_plain(result.stderr)
    assert "flatness: 2/2 measures" in result.stderr
    assert "lanczos: " in result.stderr  # the library's own bar, as plain lines too


def test_a_failed_task_ends_without_a_final_line() -> None:
    stream = io.StringIO()
    with pytest.raises(RuntimeError), ProgressBar("train", total=5, stream=stream, interval=3600):
        raise RuntimeError("boom")
    assert stream.getvalue() == ""
