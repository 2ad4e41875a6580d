"""Checks run after a `kill -9` (tests/test_kill9.py), in a process of their own so an
embedded index is read as it is on disk, not as another process cached it.

``python -m tests.fault_check [--repair-start] QUESTION...`` (settings from ``KB_*``):

- ``--repair-start`` first does what a starting server does: take the index's writer lock
  and compare every article with the database, re-indexing the difference;
- then reads the index: every article it holds must be at the version the database serves,
  every chunk's text a byte-exact span of that version's stored text, and nothing else;
- then asks each question through the answer path: every passage served must be a span of
  the served version of its article.

Prints one JSON object: ``{"problems": [...], "manifest": {...}, "answers": n}``.
"""

from __future__ import annotations

import json
import sys

from sqlmodel import Session, select


def main(argv: list[str]) -> int:
    from assist.answer import Question
    from assist.follower import IndexFollower, IndexLock
    from assist.runtime import make_assistant
    from kb import db
    from kb.governance import served_numbers
    from kb.models import ArticleVersion
    from kb.settings import Settings

    repair = "--repair-start" in argv
    questions = [a for a in argv if not a.startswith("--")]
    settings = Settings.from_env()
    engine = db.open_engine(settings)
    assistant = make_assistant(settings, engine)
    index = assistant.index
    problems: list[str] = []
    if repair:
        lock = IndexLock.for_index(settings.data_dir, settings.chroma_url)
        assert lock.acquire(timeout=30), "another process holds the index"
        follower = IndexFollower(engine=engine, index=index, lock=lock,
                                 max_chars=settings.index.chunk_max_chars)
        follower.step(force=True)
        if follower.last_error:
            problems.append(f"startup repair failed: {follower.last_error}")
        lock.release()
    with Session(engine) as session:
        served = served_numbers(session)
        texts = {(v.article_id, v.number): v for v in session.exec(select(ArticleVersion))}
    catalog = index.catalog(check=True)
    manifest = index.manifest()
    if manifest != served:
        problems.append(f"index holds {manifest}, database serves {served}")
    for chunk in catalog.chunks:
        v = texts.get((chunk.article_id, chunk.version))
        if v is None:
            problems.append(f"chunk of unknown version {chunk.article_id} v{chunk.version}")
            continue
        if served.get(chunk.article_id) != chunk.version:
            problems.append(f"chunk of {chunk.article_id} v{chunk.version}, served "
                            f"v{served.get(chunk.article_id)}")
        if chunk.content_sha256 != v.content_sha256:
            problems.append(f"chunk hash differs: {chunk.article_id} v{chunk.version}")
        if v.text[chunk.start:chunk.end] != chunk.text:
            problems.append(f"chunk text is not a span of {chunk.article_id} v{chunk.version}")
    answers = 0
    for q in questions:
        result = assistant.ask(Question(text=q, audience="internal", caller="fault-check"))
        for p in result.passages:
            c = p.citation
            v = texts.get((c.article_id, c.version))
            if v is None or served.get(c.article_id) != c.version:
                problems.append(f"served {c.article_id} v{c.version}, which is not served")
            elif v.text[c.start:c.end] != p.text or c.content_sha256 != v.content_sha256:
                problems.append(f"passage of {c.article_id} v{c.version} is not its text")
            answers += 1
    engine.dispose()
    sys.stdout.write(json.dumps({"problems": problems, "manifest": manifest,
                                 "answers": answers}) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
