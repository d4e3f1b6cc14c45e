"""The work itself, apart from the host API, so that plain Python tests it."""


def total(inputs: list[str]) -> int:
    """The sum of the inputs, each a whole number as text."""
    result = 0
    for text in inputs:
        try:
            result += int(text.strip())
        except ValueError:
            raise ValueError(f"input {text.strip()!r} is not a whole number") from None
    return result
