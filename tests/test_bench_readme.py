"""benchmarks/README.md's tables are generated from benchmarks/results/ (`python -m benchmarks.report`).

No model runs here: these tests read and write markdown and JSON only.
"""

import json
import os
import stat

import pytest

from benchmarks import report

FAKE_MD = "Device: a fake device.\n\n| a | b |\n|---|---|\n| 1 | 2 |\n"


def test_committed_readme_is_up_to_date_with_results():
    stale = report.update_readme(report.README, report.RESULTS, check=True)
    assert stale == [], (
        f"benchmarks/README.md regions {stale} differ from benchmarks/results/; "
        "run `python -m benchmarks.report`"
    )


def test_every_results_table_is_shown_in_the_readme():
    missing = report.unreferenced(report.README, report.RESULTS)
    assert missing == [], f"results {missing} have no <!-- results:STEM --> region in the README"


def test_readme_commands_name_a_benchmark_module():
    """Each region names a command that runs a benchmark module that exists."""
    modules = set(report._benchmark_modules())
    with open(report.README) as f:
        stems = [stem for stem, _, _ in report.regions(f.read())]
    assert stems
    for stem in stems:
        command, _ = report.command_of(stem)
        module = command.split("-m benchmarks.", 1)[-1].split()[0]
        assert module in modules, (stem, command)
        assert (f"--out {stem}" in command) == (stem != module), (stem, command)


def _tmp_results(tmp_path, stem="fake_bench", md=FAKE_MD, command="python -m benchmarks.x --y 1"):
    results = tmp_path / "results"
    results.mkdir()
    (results / f"{stem}.md").write_text(md)
    (results / f"{stem}.json").write_text(json.dumps({"command": command, "value": 1}))
    return results


def test_regeneration_replaces_exactly_the_marked_region(tmp_path):
    results = _tmp_results(tmp_path)
    before = "# Title\n\nProse with 12.5x.\n\n"
    after = "\nMore prose, `<!-- results:fake_bench -->` inline is not a marker.\n"
    readme = tmp_path / "README.md"
    text = (
        before
        + "<!-- results:fake_bench -->\nOLD TABLE | 1 |\n<!-- /results:fake_bench -->\n"
        + after
    )
    readme.write_text(text)
    os.chmod(readme, 0o644)

    assert report.update_readme(str(readme), str(results), check=True) == ["fake_bench"]
    assert readme.read_text() == text  # --check writes nothing
    assert report.update_readme(str(readme), str(results)) == ["fake_bench"]
    new = readme.read_text()

    open_m, close_m = "<!-- results:fake_bench -->\n", "<!-- /results:fake_bench -->\n"
    head, rest = new.split(open_m)
    body, tail = rest.split(close_m)
    assert head == before and tail == after  # byte-identical outside the region
    assert "OLD TABLE" not in body
    assert FAKE_MD.strip() in body
    assert "[`results/fake_bench.json`](results/fake_bench.json)" in body
    assert "`python -m benchmarks.x --y 1`" in body
    assert "reconstructed" not in body  # the json records its command
    assert stat.S_IMODE(os.stat(readme).st_mode) == 0o644  # others can still read it

    # idempotent: a second run changes nothing; a changed results file makes the region stale
    assert report.update_readme(str(readme), str(results)) == []
    (results / "fake_bench.md").write_text(FAKE_MD.replace("| 1 | 2 |", "| 3 | 4 |"))
    assert report.update_readme(str(readme), str(results), check=True) == ["fake_bench"]
    assert report.main(["--check", "--readme", str(readme), "--results-dir", str(results)]) == 1
    assert report.main(["--readme", str(readme), "--results-dir", str(results)]) == 0
    assert report.main(["--check", "--readme", str(readme), "--results-dir", str(results)]) == 0
    assert "| 3 | 4 |" in readme.read_text() and readme.read_text().endswith(after)


def test_results_headings_are_demoted_below_the_readme_sections(tmp_path):
    results = _tmp_results(tmp_path, md="# A title\n\n```\n# not a heading\n```\n" + FAKE_MD)
    text = "<!-- results:fake_bench -->\n<!-- /results:fake_bench -->\n"
    new, changed = report.regenerate(text, str(results))
    assert changed == ["fake_bench"]
    assert "\n### A title\n" in new and "\n# not a heading\n" in new


def test_missing_results_file_is_an_error_naming_the_stem(tmp_path):
    results = _tmp_results(tmp_path)
    readme = tmp_path / "README.md"
    text = "x\n<!-- results:no_such_bench -->\n<!-- /results:no_such_bench -->\n"
    readme.write_text(text)
    with pytest.raises(FileNotFoundError, match="no_such_bench"):
        report.update_readme(str(readme), str(results))
    assert readme.read_text() == text
    assert report.main(["--readme", str(readme), "--results-dir", str(results)]) == 2


@pytest.mark.parametrize(
    "text, message",
    [
        ("<!-- results:a -->\n", "results:a is never closed"),
        ("<!-- /results:a -->\n", "closes nothing"),
        ("<!-- results:a -->\n<!-- results:b -->\n", "opens inside results:a"),
        ("<!-- results:a -->\n<!-- /results:b -->\n", "/results:b closes results:a"),
        ("<!-- results:a -->\n<!-- /results:a -->\n" * 2, "appears twice"),
    ],
)
def test_malformed_markers_are_errors(text, message):
    with pytest.raises(ValueError, match=message):
        report.regions(text)


def test_region_names_the_recorded_command_and_its_note(tmp_path):
    """The region quotes the json's command and its `command_note`; a json that records no
    command is an error naming it."""
    results = _tmp_results(tmp_path)
    path = results / "fake_bench.json"
    path.write_text(json.dumps({"command": "python -m benchmarks.x --y 1", "command_note": "n"}))
    assert "written by `python -m benchmarks.x --y 1` (n):" in report.render_region(
        "fake_bench", str(results)
    )
    path.write_text(json.dumps({"value": 1}))
    with pytest.raises(ValueError, match="fake_bench.json records no command"):
        report.render_region("fake_bench", str(results))


def test_write_report_regenerates_only_the_repositorys_readme(tmp_path, monkeypatch):
    """Into the (here: monkeypatched) own results folder, write_report regenerates the README;
    into any other folder it leaves the README alone."""
    own = tmp_path / "own" / "results"
    readme = tmp_path / "own" / "README.md"
    own.parent.mkdir()
    text = "intro\n<!-- results:fake_bench -->\n<!-- /results:fake_bench -->\nend\n"
    readme.write_text(text)
    monkeypatch.setattr(report, "RESULTS", str(own))
    monkeypatch.setattr(report, "README", str(readme))

    def render(out):
        return f"| value |\n|---|\n| {out['value']} |\n"

    other = tmp_path / "elsewhere"
    report.write_report("fake_bench", {"value": 7}, str(other), render)
    assert (other / "fake_bench.md").read_text() == render({"value": 7})
    assert readme.read_text() == text

    report.write_report("fake_bench", {"value": 7, "command": "python -m benchmarks.fake_bench"},
                        str(own), render)  # fmt: skip
    new = readme.read_text()
    assert "| 7 |" in new and new.startswith("intro\n") and new.endswith("end\n")
    assert report.update_readme(str(readme), str(own), check=True) == []


def test_invocation_names_the_command_line():
    assert report.invocation(["/venv/bin/jaxrej", "bench", "adjoint", "--out", "a b"]) == (
        "jaxrej bench adjoint --out 'a b'"
    )
    assert report.invocation(["/usr/bin/python3", "whatever"]) is None


def test_readme_links_point_at_existing_files():
    with open(report.README) as f:
        text = f.read()
    base = os.path.dirname(report.README)
    for stem, start, end in report.regions(text):
        for ext in ("json", "md"):
            assert os.path.isfile(os.path.join(base, "results", f"{stem}.{ext}"))
        assert f"(results/{stem}.json)" in text[start:end]
