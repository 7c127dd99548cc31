"""Counts in the messages people read: "1 record", "2 records"."""


def counted(count: int, noun: str) -> str:
    """`count` and `noun`, plural unless the count is one (nouns such as "series" need no helper)."""
    return f"{count} {noun if count == 1 else noun + 's'}"
