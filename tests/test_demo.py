"""The demo as one library function over a list of steps (lossatlas.demo.run_demo)."""

from __future__ import annotations

from pathlib import Path

from lossatlas.demo import DEMO_STEPS, DemoRun, run_demo


def test_the_demo_steps_in_order():
    assert [name for name, _ in DEMO_STEPS] == ["train", "slices", "atlas", "connectivity",
                                                "table2", "dynamics", "terrain", "bn_cnn"]


def test_run_demo_runs_its_steps_in_order_times_them_and_writes_the_report(tmp_path):
    seen: list[tuple[str, object]] = []

    def first(run: DemoRun) -> None:
        seen.append(("first", run.epochs))
        (run.out_dir / "fields").mkdir(parents=True)  # a run directory the report reads
        run.summary["a"] = 1

    def second(run: DemoRun) -> None:
        seen.append(("second", run.summary["a"]))  # what the step before made
        run.summary["b"] = 2

    summary = run_demo(tmp_path / "demo", epochs=3, progress=False,
                       steps=[("first", first), ("second", second)])
    assert seen == [("first", 3), ("second", 1)]
    assert list(summary) == ["a", "b", "first_seconds", "second_seconds", "total_seconds",
                             "report"]
    assert summary["first_seconds"] >= 0 and summary["second_seconds"] >= 0
    assert summary["total_seconds"] >= summary["first_seconds"] + summary["second_seconds"] - 0.2
    assert Path(summary["report"]) == tmp_path / "demo" / "report.html"
    assert Path(summary["report"]).is_file()
