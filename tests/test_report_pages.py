"""The store report's pages (report.md, report.html): what a reader sees first, how Markdown becomes HTML, and
which unit each number is in. Documents are written here by hand (no model runs); the HTML is parsed with the
standard library, so no browser is needed."""

from __future__ import annotations

from html.parser import HTMLParser

from test_cross_run import accuracies, document, natural_spec, records_of

from clipeval.report.cli import main as report_main
from clipeval.report.pages import escape, run_section, to_html
from clipeval.report.tables import HEAD, ROBUSTNESS_HEAD
from clipeval.results.record import Record
from clipeval.results.store import ResultsDocument, add_to_store

NOTE = "kept 3 of 5 <images> | see *docs* and `code` _here_ ![x](http://example.invalid/a.png) &amp;"


class Page(HTMLParser):
    """The page as a list of (event, tag or text): 'start', 'end' or 'text'; data URIs left out."""

    def __init__(self, text: str):
        super().__init__(convert_charrefs=True)
        self.events: list[tuple[str, str]] = []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        self.events.append(("start", tag))
        if tag == "img":
            self.events.append(("src", dict(attrs)["src"][:40]))

    def handle_endtag(self, tag):
        self.events.append(("end", tag))

    def handle_data(self, data):
        if data.strip():
            self.events.append(("text", data))

    def text(self) -> str:
        return " ".join(v for e, v in self.events if e == "text")

    def index(self, event: str, value: str, start: int = 0) -> int:
        return next(i for i, ev in enumerate(self.events) if i >= start and ev == (event, value))

    def tables(self) -> list[tuple[int, list[str], bool]]:
        """Each table: (its position, its header cells, whether it is inside <details>)."""
        out, depth = [], 0
        for i, (event, value) in enumerate(self.events):
            if value == "details":
                depth += 1 if event == "start" else -1
            if (event, value) == ("start", "table"):
                end = self.index("end", "thead", i)
                head = [v for e, v in self.events[i:end] if e == "text"]
                out.append((i, head, depth > 0))
        return out


def suite_document() -> dict:
    """A suite's document with a count metric (k matching zero-shot) and a note full of Markdown and HTML."""
    spec = natural_spec()
    records = records_of(accuracies(0.7, 0.5))
    records.append(Record("val", "k_matching_zero_shot", 3.5, 100, (3.5, 3.5), task="imagenet",
                          params={"probe": "few-shot"}))  # fmt: skip
    doc = document("ViT-B-32", records, spec, tags=["pages"])
    doc["notes"] = [{"task": "imagenet", "evaluator": "few_shot", "message": NOTE}]
    doc["git_sha"] = "0123456789abcdef"
    return doc


def test_the_html_page_shows_the_robustness_table_first_and_the_long_table_collapsed(tmp_path):
    store = tmp_path / "store"
    add_to_store(store, suite_document())
    report_main(["store", "--store", str(store), "--out", str(tmp_path / "out")])
    text = (tmp_path / "out" / "report.html").read_text()
    page = Page(text)

    tables = page.tables()
    assert [head for _, head, _ in tables] == [ROBUSTNESS_HEAD, HEAD]
    (er_at, _, er_folded), (long_at, _, long_folded) = tables
    assert er_at < long_at and not er_folded and long_folded  # the headline first, the long table in <details>
    caption = [v for e, v in page.events[:er_at] if e == "text"][-1]  # the text just above the table
    assert caption.startswith("Effective robustness against synthetic supervised models")
    summary = page.index("start", "summary")
    assert page.events[summary + 1][1].startswith("All ") and "records" in page.events[summary + 1][1]

    # Markdown is rendered: code spans are <code> elements and no backtick of clipeval's own is left
    codes = [page.events[i + 1][1] for i, ev in enumerate(page.events) if ev == ("start", "code")]
    assert codes[:3] == ["f" * 12, "0123456789", next((tmp_path / "store").glob("*.json")).name]
    assert page.text().count("`") == NOTE.count("`")  # only the note's own, shown as written
    # what a document holds is text, never markup: the note reads as written, with no element of its own
    assert f"Note: imagenet/few_shot: {NOTE}" in page.text()
    assert ("start", "em") not in page.events and ("start", "images") not in page.events
    sources = [src for e, src in page.events if e == "src"]
    assert sources and all(src.startswith("data:image/png;base64,") for src in sources)  # the figures, embedded


def test_each_row_of_the_long_table_names_its_unit_and_each_robustness_column_its_own(tmp_path):
    doc = ResultsDocument.parse(suite_document())
    section = run_section(doc)
    long = section.table(HEAD)
    unit, value = HEAD.index("unit"), HEAD.index("value")
    rows = {(row[0], row[1]): row for row in long.rows}
    top1 = rows[("imagenet/val", "top1")]
    assert (top1[value], top1[unit]) == (f"{100 * round(0.7 * 10_000) / 10_000:.2f}", "%")
    count = rows[("imagenet/val probe=few-shot", "k_matching_zero_shot")]
    assert (count[value], count[unit]) == ("3.50", "count")  # a count is not a percentage
    assert all(not cell.endswith(("%", "pp")) for row in long.rows for cell in row[2:4])  # the unit column says it
    er = section.table(ROBUSTNESS_HEAD)
    assert section.tables.index(er) == 0 and section.tables.index(long) == 1
    assert [h for h in er.head if "interval" in h] == ["95% interval (%)", "95% interval (%)", "95% interval (pp)"]
    assert "accuracies in %" in er.caption and "percentage points" in er.caption


def test_the_markdown_file_has_the_same_order_and_folds_the_long_table_for_github(tmp_path):
    store = tmp_path / "store"
    add_to_store(store, suite_document())
    report_main(["store", "--store", str(store), "--out", str(tmp_path / "out")])
    md = (tmp_path / "out" / "report.md").read_text()
    er_head, long_head = md.index("| setting | top-1 (%) |"), md.index("| task/dataset and params |")
    assert md.index("Effective robustness against") < er_head < md.index("<details><summary>All ") < long_head
    assert md.index("</details>") > long_head
    assert "model fingerprint `ffffffffffff`" in md  # code spans stay Markdown in the .md file
    assert escape(NOTE) in md and "\\<images>" in md and "\\|" in md  # the note escaped, so it renders as written


def test_escape_leaves_plain_labels_and_intervals_readable():
    assert escape("digits_probe/test probe=linear [93.6, 97.9]") == "digits_probe/test probe=linear [93.6, 97.9]"
    assert escape("a|b `c` <d> *e* _f_ ![g](h)") == "a\\|b \\`c\\` \\<d> \\*e\\* \\_f\\_ !\\[g\\](h)"


def test_to_html_needs_no_figures_and_escapes_titles():
    from clipeval.report.pages import Section

    page = Page(to_html("results <of> `runs`", [Section("model <x>", ["`code`"])]))
    assert ("start", "x") not in page.events and "model <x>" in page.text()
    assert ("start", "code") in page.events and "results <of> `runs`" in page.text()
