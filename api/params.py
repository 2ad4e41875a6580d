"""Path and query parameters, bounded to what storage can hold.

An integer beyond the database's ``INTEGER`` (PostgreSQL: 32 bits; SQLite: 64) or an id with
characters no id has (a NUL byte is an error on PostgreSQL) is a 422 before any query runs,
never a 500 from the driver.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Path, Query

DB_INT_MAX = 2**31 - 1  # PostgreSQL INTEGER (and within SQLite's 64-bit INTEGER)

ArticleId = Annotated[str, Path(
    max_length=100, pattern=r"^[a-z0-9]+(?:-[a-z0-9]+)*$",  # kb.articles.ID_RE
    description="The article's id: a slug of lowercase letters, digits and dashes.")]
VersionNumber = Annotated[int, Path(ge=1, le=DB_INT_MAX, description="A version number.")]
FlagId = Annotated[int, Path(ge=1, le=DB_INT_MAX, description="A flag id (from the queue).")]
QueryId = Annotated[str, Path(pattern=r"^[A-Za-z0-9_-]{1,64}$",
                              description="The `query_id` of an /v1/assist response.")]
FromVersion = Annotated[int, Query(alias="from", ge=1, le=DB_INT_MAX,
                                   description="The older version number.")]
ToVersion = Annotated[int, Query(ge=1, le=DB_INT_MAX, description="The newer version number.")]
