"""Prompts as values: text with worked examples, versioned by hash.

A prompt's version is a hash of its text, and an asset's `code_version` is built from the
versions of the prompts it sends: editing a prompt marks exactly its assets stale, and
nobody has to remember to bump a number.
"""

from dataclasses import dataclass

from glan_assets.ids import content_hash


@dataclass(frozen=True)
class Prompt:
    name: str
    system: str
    user: str
    # Worked (user, assistant) turns shown before the real request. Small models copy a
    # demonstrated JSON shape far more reliably than they follow a described one.
    examples: tuple[tuple[str, str], ...] = ()

    @property
    def version(self) -> str:
        return content_hash([self.system, self.user, self.examples])[:12]

    def messages(self, **values: object) -> list[dict]:
        shots = [
            {"role": role, "content": text}
            for user, assistant in self.examples
            for role, text in (("user", user), ("assistant", assistant))
        ]
        return [
            {"role": "system", "content": self.system.format(**values)},
            *shots,
            {"role": "user", "content": self.user.format(**values)},
        ]


def code_version(*prompts: Prompt, parser: str = "1") -> str:
    """The asset's code version: its prompts' versions plus the version of its own logic."""
    return "-".join([f"p{parser}", *(p.version for p in prompts)])
