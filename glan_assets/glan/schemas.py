"""GLAN's pydantic models: the schema of its table rows and of its structured LLM outputs.

Every per-discipline table carries `discipline`, the partition key.
"""

from typing import Annotated, ClassVar, Literal

from pydantic import AfterValidator, AliasChoices, BaseModel, Field, WithJsonSchema

from glan_assets.parsing import outline_sessions
from glan_assets.rows import TableRow


class DisciplineTableRow(TableRow):
    partition_column: ClassVar[str | None] = "discipline"


class FieldRow(DisciplineTableRow):
    table: ClassVar[str] = "fields"
    id_column: ClassVar[str] = "field_id"
    field_id: str
    discipline: str
    field_name: str
    sub_field_name: str
    description: str = ""


class DisciplineRow(DisciplineTableRow):
    table: ClassVar[str] = "disciplines"
    id_column: ClassVar[str] = "discipline_id"
    parent_column: ClassVar[str | None] = "field_id"
    discipline_id: str
    field_id: str
    discipline: str
    field_name: str
    sub_field_name: str
    description: str = ""


class SubjectRow(DisciplineTableRow):
    table: ClassVar[str] = "subjects"
    id_column: ClassVar[str] = "subject_id"
    parent_column: ClassVar[str | None] = "discipline_id"
    subject_id: str
    discipline_id: str
    discipline: str
    query_index: int
    subject_name: str
    level: str
    subtopics: list[str]


class SyllabusRow(DisciplineTableRow):
    table: ClassVar[str] = "syllabi"
    id_column: ClassVar[str] = "syllabus_id"
    parent_column: ClassVar[str | None] = "subject_id"
    syllabus_id: str
    subject_id: str
    discipline: str
    subject_name: str
    level: str
    syllabus: str
    model: str


class SessionRow(DisciplineTableRow):
    table: ClassVar[str] = "sessions"
    id_column: ClassVar[str] = "session_id"
    parent_column: ClassVar[str | None] = "syllabus_id"
    session_id: str
    syllabus_id: str
    discipline: str
    session_index: int
    title: str
    key_concepts: list[str]
    extracted_by: str  # "outline" when read from the syllabus text, else the extracting model


QuestionKind = Literal["basic", "harder"]


class QuestionRow(DisciplineTableRow):
    """A homework question. Its parent is the latest session it covers."""

    table: ClassVar[str] = "questions"
    id_column: ClassVar[str] = "question_id"
    parent_column: ClassVar[str | None] = "session_id"
    question_id: str
    session_id: str
    discipline: str
    syllabus_id: str
    question_index: int
    kind: QuestionKind
    session_ids: list[str]
    key_concepts: list[str]
    question: str
    model: str


class AnswerRow(DisciplineTableRow):
    table: ClassVar[str] = "answers"
    id_column: ClassVar[str] = "answer_id"
    parent_column: ClassVar[str | None] = "question_id"
    answer_id: str
    question_id: str
    discipline: str
    answer: str
    model: str


class ProposalRow(TableRow):
    """A taxonomy node the LLM proposed, waiting for a person's keep/remove vote."""

    table: ClassVar[str] = "taxonomy_proposals"
    id_column: ClassVar[str] = "proposal_id"
    proposal_id: str
    kind: Literal["field", "sub_field", "discipline"]
    field_name: str
    sub_field_name: str
    name: str
    reason: str
    keep: bool | None = None
    status: Literal["pending", "accepted", "rejected"] = "pending"


# --- Structured LLM outputs -------------------------------------------------------


def _non_blank(items: list[str]) -> list[str]:
    # Small models loop ("Chemistry, Chemistry, ..."): keep each item once, in order.
    cleaned = list(dict.fromkeys(" ".join(s.split()) for s in items if s.strip()))
    if not cleaned:
        raise ValueError("needs at least one non-blank item")
    return cleaned


# The schema sent asks for non-blank items; parsing stays tolerant of blanks an endpoint
# that ignores the schema writes (the validator drops them).
NonBlankList = Annotated[
    list[str],
    AfterValidator(_non_blank),
    WithJsonSchema({"type": "array", "items": {"type": "string", "pattern": "\\S"}, "minItems": 1}),
]


# The aliases are key names small models write instead of the schema's; the schema sent to
# the endpoint names only the first.
class SubjectSpec(BaseModel):
    subject_name: str = Field(min_length=1, validation_alias=AliasChoices("subject_name", "name", "subject"))
    level: str = Field(min_length=1, validation_alias=AliasChoices("level", "subject_level"))
    subtopics: NonBlankList = Field(validation_alias=AliasChoices("subtopics", "sub_topics", "topics"))


class SubjectList(BaseModel):
    subjects: list[SubjectSpec] = Field(min_length=1)


class ClassSession(BaseModel):
    title: str = Field(min_length=1, validation_alias=AliasChoices("title", "session", "name"))
    key_concepts: NonBlankList = Field(validation_alias=AliasChoices("key_concepts", "concepts", "keys", "key_concept"))


class SessionList(BaseModel):
    sessions: list[ClassSession] = Field(min_length=1)

    @classmethod
    def from_plain_text(cls, text: str) -> dict | None:
        """A model that copies the syllabus instead of writing JSON still lists its sessions."""
        sessions = outline_sessions(text)
        return {"sessions": sessions} if sessions else None


class NodeProposal(BaseModel):
    name: str = Field(min_length=1)
    reason: str = ""


class ProposalList(BaseModel):
    proposals: list[NodeProposal] = Field(min_length=1)
