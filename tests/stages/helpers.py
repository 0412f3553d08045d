"""Record builders shared by the stage tests."""

from selflengthen.records import Response, stable_id
from selflengthen.text import count_words


def response(text: str, *, query: str = "Write about rivers.", kind: str = "initial", index: int = 0, **extra) -> Response:
    return Response(
        id=stable_id(query, kind, index, text),
        query_id=stable_id(query),
        query=query,
        language=extra.pop("language", "en"),
        kind=kind,
        sample_index=index,
        text=text,
        words=count_words(text),
        finish_reason=extra.pop("finish_reason", "stop"),
        **extra,
    )


def essay(words: int, seed: int = 0) -> str:
    """A text of ``words`` distinct words ending with a full stop (passes the checks)."""
    return " ".join(f"w{seed}x{i}" for i in range(words)) + "."
