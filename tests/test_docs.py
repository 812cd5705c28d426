"""The docs' cross-references hold: relative links reach a file and a heading, and a section
named in a comment or a doc ("docs/tuning.md, \"Fewer adapter epochs\"") is there under that name.
Sections move between docs files as they grow; these catch a reference left behind."""

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def tracked(*suffixes: str) -> list[Path]:
    try:
        names = subprocess.run(["git", "ls-files", "-z", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True,
                               text=True, check=True).stdout.split("\0")  # run folders' names hold spaces
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    return [ROOT / name for name in names if name.endswith(suffixes) and (ROOT / name).is_file()]


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def headings(doc: Path) -> list[str]:
    return re.findall(r"(?m)^#+ (.*)$", doc.read_text(encoding="utf-8"))


def labels(doc: Path) -> list[str]:
    """A list item's bold run-in label ("- **Keeping a study**: ..."), which is named like a section."""
    return re.findall(r"(?m)^\s*- \*\*([^*]+)\*\*", doc.read_text(encoding="utf-8"))


def test_every_relative_link_reaches_a_file_and_its_heading():
    broken = []
    for doc in tracked(".md"):
        for link in re.findall(r"\]\(([^)\s]+)\)", doc.read_text(encoding="utf-8")):
            if re.match(r"[a-z]+:", link):
                continue
            path, _, anchor = link.partition("#")
            target = (doc.parent / path).resolve() if path else doc
            if not target.exists():
                broken.append(f"{doc.relative_to(ROOT)}: {link} (no such file)")
            elif anchor and target.suffix == ".md" and anchor not in {slug(h) for h in headings(target)}:
                broken.append(f"{doc.relative_to(ROOT)}: {link} (no such heading)")
    assert not broken, "\n".join(broken)


# docs/NAME.md, "Section" in code and configs; [NAME.md](NAME.md), "Section" in the docs. The
# quoted name may wrap onto a comment's next line.
SECTION_REFERENCE = re.compile(r'(?:docs/|\]\()([\w-]+\.md)\)?,\s+"([^"]+)"')


def test_every_section_named_beside_a_doc_is_in_that_doc():
    missing = []
    for source in tracked(".py", ".yaml", ".md"):
        if source == Path(__file__).resolve():
            continue
        for name, quoted in SECTION_REFERENCE.findall(source.read_text(encoding="utf-8")):
            section = " ".join(re.sub(r"\n\s*#?", " ", quoted).split())
            doc = ROOT / "docs" / name
            if not doc.is_file():
                missing.append(f"{source.relative_to(ROOT)}: docs/{name} (no such file)")
            elif not any(section in " ".join(h.split()) for h in headings(doc) + labels(doc)):
                missing.append(f"{source.relative_to(ROOT)}: docs/{name} has no section {section!r}")
    assert not missing, "\n".join(missing)


def test_every_docs_file_named_in_code_configs_or_docs_exists():
    missing = sorted({f"{source.relative_to(ROOT)}: docs/{name}"
                      for source in tracked(".py", ".yaml", ".md", ".toml") if source != Path(__file__).resolve()
                      for name in re.findall(r"\bdocs/([\w-]+\.md)\b", source.read_text(encoding="utf-8"))
                      if not (ROOT / "docs" / name).is_file()})
    assert not missing, "\n".join(missing)
