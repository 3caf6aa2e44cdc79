"""The README and the docs stay true: the README is short, every relative link (and #anchor)
resolves, every `haiku-kit` command it names exists in the CLI parser, every preset it names
exists. Each check is a plain function of text, so the tests below also show it can fail."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
PRESET_DIR = REPO / "haiku_kit" / "resources" / "presets"
MAX_README_LINES = 300

FENCE = re.compile(r"^(```|~~~).*?^\1[^\n]*$", re.DOTALL | re.MULTILINE)
INLINE_CODE = re.compile(r"(`+)(.+?)\1", re.DOTALL)
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$", re.MULTILINE)
# A command line: `haiku-kit` at the start of a code line or span, or after a pipe, `;`, `&&`, `$`.
COMMAND = re.compile(r"(?:^|[|;&$]\s*)haiku-kit((?:[ \t]+[a-z][\w-]*)+)", re.MULTILINE)
PRESET_USE = re.compile(r"""(?:--preset[\s=]+|preset\s*=\s*["'])([a-z0-9][a-z0-9.-]*)""")


def doc_files() -> list[Path]:
    """The markdown files whose links are checked."""
    files = [README, *sorted((REPO / "docs").glob("*.md"))]
    research = REPO / "research" / "README.md"
    if research.is_file():
        files.append(research)
    return files


def without_code(text: str) -> str:
    """The text with fenced code blocks and inline code spans blanked (links in code are not links)."""
    text = FENCE.sub(lambda m: "\n" * m.group(0).count("\n"), text)
    return INLINE_CODE.sub("``", text)


def code_segments(text: str) -> list[str]:
    """Fenced code blocks and inline code spans: where commands are written."""
    blocks = [m.group(0) for m in FENCE.finditer(text)]
    rest = FENCE.sub("", text)
    return blocks + [m.group(2) for m in INLINE_CODE.finditer(rest)]


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: markup dropped, lower case, punctuation removed, spaces to -."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link keeps its text
    text = re.sub(r"<[^>]+>", "", text).replace("`", "").lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(markdown: str) -> set[str]:
    """Every heading anchor of a markdown text, duplicates numbered as GitHub numbers them."""
    seen: dict[str, int] = {}
    out = set()
    for m in HEADING.finditer(FENCE.sub("", markdown)):
        base = slug(m.group(2))
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}-{n}")
    return out


def broken_links(path: Path, text: str | None = None) -> list[str]:
    """Relative links of a markdown file that point nowhere: a missing file or folder, or an
    #anchor with no such heading in the markdown file it points into."""
    text = path.read_text(encoding="utf-8") if text is None else text
    problems = []
    for m in LINK.finditer(without_code(text)):
        target = m.group(1)
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.IGNORECASE):  # http:, https:, mailto: ...
            continue
        file_part, _, anchor = target.partition("#")
        dest = (path.parent / file_part).resolve() if file_part else path
        if file_part and not dest.exists():
            problems.append(f"{path.name}: {target} (no such file)")
            continue
        if anchor and dest.suffix == ".md":
            own = text if dest == path else dest.read_text(encoding="utf-8")
            if anchor.lower() not in anchors(own):
                where = dest.relative_to(REPO) if dest.is_relative_to(REPO) else dest.name
                problems.append(f"{path.name}: {target} (no heading #{anchor} in {where})")
    return problems


def cli_commands() -> dict:
    """The CLI's command tree: {name: subtree}, from haiku_kit.cli.build_parser()."""
    from haiku_kit.cli import build_parser

    def tree(parser: argparse.ArgumentParser) -> dict:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                return {name: tree(sub) for name, sub in action.choices.items()}
        return {}

    return tree(build_parser())


def unknown_commands(text: str, commands: dict) -> list[str]:
    """`haiku-kit WORD [WORD]` written in code that the parser does not know."""
    problems = []
    for segment in code_segments(text):
        for m in COMMAND.finditer(segment):
            words = m.group(1).split()
            node, said = commands, ["haiku-kit"]
            for word in words:
                if not node:  # a command without subcommands: the rest are its arguments
                    break
                said.append(word)
                if word not in node:
                    problems.append(" ".join(said))
                    break
                node = node[word]
    return problems


def table_after(text: str, heading: str) -> list[str]:
    """The first column of the first table under a `## heading` (backticks removed)."""
    m = re.search(rf"^##\s+{re.escape(heading)}\s*$(.*?)(?=^##\s|\Z)", text, re.MULTILINE | re.DOTALL)
    if not m:
        return []
    rows = [line for line in m.group(1).splitlines() if line.startswith("|")]
    cells = [row.split("|")[1].strip() for row in rows[2:]]  # skip the header and the rule
    return [c.strip("`") for c in cells]


def named_presets(text: str) -> set[str]:
    """Presets the README names: the Presets table, `--preset NAME` and `preset = "NAME"`."""
    names = set(table_after(text, "Presets"))
    names.update(PRESET_USE.findall(text))
    return {n for n in names if n and not n.endswith(".yaml")}


def missing_presets(text: str) -> list[str]:
    shipped = {p.stem for p in PRESET_DIR.glob("*.yaml")}
    return sorted(named_presets(text) - shipped)


# --------------------------------------------------------------------------- the checks


def test_readme_is_short():
    lines = README.read_text(encoding="utf-8").count("\n")
    assert lines <= MAX_README_LINES, (
        f"README.md has {lines} lines, over {MAX_README_LINES}: move detail into docs/"
    )


@pytest.mark.parametrize("path", doc_files(), ids=lambda p: str(p.relative_to(REPO)))
def test_relative_links_resolve(path):
    assert broken_links(path) == []


def test_readme_commands_exist_in_the_cli():
    text = README.read_text(encoding="utf-8")
    assert unknown_commands(text, cli_commands()) == []


def test_readme_lists_every_cli_command():
    """The command table names each top-level command (a new command gets a line)."""
    text = README.read_text(encoding="utf-8")
    listed = {cell.split()[1] for cell in table_after(text, "Command line") if cell.startswith("haiku-kit ")}
    assert set(cli_commands()) <= listed


def test_readme_presets_exist():
    text = README.read_text(encoding="utf-8")
    assert named_presets(text), "the README's Presets table was not found"
    assert missing_presets(text) == []


def test_readme_lists_every_preset():
    text = README.read_text(encoding="utf-8")
    shipped = {p.stem for p in PRESET_DIR.glob("*.yaml")}
    assert shipped <= set(table_after(text, "Presets"))


# --------------------------------------------------------------------------- the checks can fail


def test_a_broken_link_or_anchor_is_caught(tmp_path):
    (tmp_path / "other.md").write_text("# Other page\n\n## A section: here (too)\n", encoding="utf-8")
    page = tmp_path / "page.md"
    good = "[a](other.md) [b](other.md#a-section-here-too) [c](#top) [d](https://x.org/none)\n# Top\n"
    assert broken_links(page, good) == []
    bad = "[a](missing.md) [b](other.md#no-such-heading) [c](#nowhere) `[e](in-code.md)`\n"
    assert broken_links(page, bad) == [
        "page.md: missing.md (no such file)",
        "page.md: other.md#no-such-heading (no heading #no-such-heading in other.md)",
        "page.md: #nowhere (no heading #nowhere in page.md)",
    ]


def test_github_anchor_slugs():
    assert slug("Run 3: the likeliest of several drafts (2026-12-03)") == (
        "run-3-the-likeliest-of-several-drafts-2026-12-03"
    )
    assert slug("Tracking and TRL's other arguments") == "tracking-and-trls-other-arguments"
    assert anchors("# Notes\n## Notes\n") == {"notes", "notes-1"}


def test_an_unknown_command_or_preset_is_caught():
    commands = {"data": {"build": {}}, "train": {}}
    text = "`haiku-kit train sft` and\n```\nhaiku-kit data biuld --out x\necho a | haiku-kit trian\n```\n"
    assert unknown_commands(text, commands) == ["haiku-kit data biuld", "haiku-kit trian"]
    prose = "haiku-kit is a package; `pip install haiku-kit[gpu]`\n```\ncli.py  the haiku-kit command\n```\n"
    assert unknown_commands(prose, commands) == []
    assert missing_presets("run `haiku-kit pipeline --preset cpu-demoo --out r`") == ["cpu-demoo"]
    assert missing_presets('set `preset = "cpu-demo"`') == []


# --------------------------------------------------------------------------- results

RESULT_LINK = re.compile(r"\]\((benchmarks/results/[^)\s]+\.json)\)")


def pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def pct_ci(x: float, ci: list[float]) -> str:
    return f"{pct(x)} [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]"


def result_row_problems(text: str, repo: Path = REPO) -> list[str]:
    """Every README table row that links a results file (benchmarks/results/…json, written by
    the run's own report) must show that file's good and valid shares, with good's 95% CI, as
    pct_ci / pct format them: a figure typed by hand, or a stale one, is caught."""
    problems = []
    for line in text.splitlines():
        if not line.startswith("|"):
            continue
        for rel in RESULT_LINK.findall(line):
            import json

            data = json.loads((repo / rel).read_text(encoding="utf-8"))
            m, ci = data["metrics"], data["ci"]
            for want in (pct_ci(m["good"], ci["good"]), pct(m["haiku"])):
                if want not in line:
                    problems.append(f"{rel}: the row lacks {want}: {line}")
    return problems


def test_readme_results_match_the_results_files():
    text = README.read_text(encoding="utf-8")
    assert RESULT_LINK.search(text), "the README's results table links no results file"
    assert result_row_problems(text) == []


def test_a_hand_typed_result_is_caught(tmp_path):
    rel = "benchmarks/results/x/sft.json"
    (tmp_path / rel).parent.mkdir(parents=True)
    (tmp_path / rel).write_text('{"metrics": {"good": 0.25, "haiku": 0.5}, '
                                '"ci": {"good": [0.125, 0.375]}}', encoding="utf-8")
    good = f"| demo | [SFT]({rel}) | 25.0% [12.5, 37.5] | 50.0% |"
    assert result_row_problems(good, tmp_path) == []
    assert result_row_problems(good.replace("25.0%", "27.0%"), tmp_path)
    assert result_row_problems(good.replace("50.0%", "55.0%"), tmp_path)


def test_the_readme_shows_every_published_result_and_the_random_poems():
    """benchmarks/readme_tables.py prints the rows from the results files: the README carries
    all of them (a results set published and left out of the README is caught) and its table
    of random poems, each poem from the file it names."""
    from training_helpers import load_script

    tables = load_script("benchmarks/readme_tables.py")
    text = README.read_text(encoding="utf-8")
    rows = tables.results_table().splitlines()[2:]
    assert rows and [row for row in rows if row not in text] == []
    poems = tables.poems_table().splitlines()[2:]
    assert len(poems) == 12 and [row for row in poems if row not in text] == []
