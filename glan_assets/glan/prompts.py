"""Every prompt GLAN sends, in one place.

Each prompt's version is a hash of its text; an asset's `code_version` is built from the
versions of the prompts it sends (`glan_assets.prompting`).
"""

from glan_assets.prompting import Prompt

# Taxonomy: GLAN asks the LLM to extend the taxonomy; a person keeps or removes each node.
PROPOSE_NODES = Prompt(
    "propose_nodes",
    system="You are an expert in the structure of human knowledge and of university curricula.",
    user=(
        "In a taxonomy of human knowledge and capabilities, {parent} has these {kind_plural}: "
        "{existing}.\nPropose up to {count} further {kind_plural} that are missing, as JSON."
    ),
    examples=(
        (
            'In a taxonomy of human knowledge and capabilities, the sub-field "Earth Sciences" of "Natural '
            'Sciences" has these disciplines: Geology.\nPropose up to 2 further disciplines that are '
            "missing, as JSON.",
            '{"proposals": [{"name": "Oceanography", "reason": "the study of the oceans is missing"}, '
            '{"name": "Meteorology", "reason": "weather and climate are missing"}]}',
        ),
    ),
)

# Subjects: free text first, then a second call turns it into JSON. The paper found that
# format instructions in the first call hurt quality.
SUBJECTS = Prompt(
    "subjects",
    system="You are an education expert in {discipline}.",
    user=(
        'List the subjects a student must learn in "{discipline}" ({sub_field}, {field}), '
        "from introductory to advanced. For each subject give its name, its level "
        "(for example: high school, undergraduate, graduate) and its main subtopics."
    ),
)

SUBJECTS_FORMAT = Prompt(
    "subjects_format",
    system="You turn text into JSON. Reply with JSON only.",
    user="Extract every subject from the text below as JSON.\n\nText:\n{text}",
    examples=(
        (
            "Extract every subject from the text below as JSON.\n\nText:\nChemistry students start with "
            "general chemistry (atoms, bonds) in high school, then organic chemistry (carbon compounds, "
            "reactions) at university.",
            '{"subjects": [{"subject_name": "General Chemistry", "level": "high school", "subtopics": '
            '["atoms", "bonds"]}, {"subject_name": "Organic Chemistry", "level": "undergraduate", '
            '"subtopics": ["carbon compounds", "reactions"]}]}',
        ),
    ),
)

SYLLABUS = Prompt(
    "syllabus",
    system="You are an experienced teacher of {subject_name} in {discipline}.",
    user=(
        'Write the syllabus of the {level} course "{subject_name}". It covers: {subtopics}.\n'
        "Divide the course into {sessions_min} to {sessions_max} class sessions. For each class "
        "session give a title and its key concepts (about {concepts} per session)."
    ),
    # The outline form shown here is what the sessions level reads without another LLM call.
    examples=(
        (
            'Write the syllabus of the undergraduate course "Thermodynamics". It covers: heat, work, '
            "entropy.\nDivide the course into 2 to 3 class sessions. For each class session give a title "
            "and its key concepts (about 3 per session).",
            "Session 1: Heat and Temperature\nKey concepts: temperature, heat capacity, thermal equilibrium\n\n"
            "Session 2: Work and the First Law\nKey concepts: internal energy, work, first law of "
            "thermodynamics\n\nSession 3: Entropy\nKey concepts: entropy, second law, heat engines",
        ),
    ),
)

SESSIONS = Prompt(
    "sessions",
    system="You turn text into JSON. Reply with JSON only.",
    user="Extract the class sessions of this syllabus, in order, with their key concepts, as JSON.\n\n"
    "Syllabus:\n{syllabus}",
    examples=(
        (
            "Extract the class sessions of this syllabus, in order, with their key concepts, as JSON.\n\n"
            "Syllabus:\nWeek 1: Cells - membranes, organelles, cell division.\nWeek 2: Genetics - DNA, "
            "genes, inheritance.",
            '{"sessions": [{"title": "Cells", "key_concepts": ["membranes", "organelles", "cell division"]}, '
            '{"title": "Genetics", "key_concepts": ["DNA", "genes", "inheritance"]}]}',
        ),
    ),
)

QUESTION_BASIC = Prompt(
    "question_basic",
    system="You are a teacher of {subject_name}. Here is the syllabus of your course:\n{syllabus}",
    user=(
        'Your student has learned up to class session {session_number}, "{session_title}". '
        "Write one homework question that tests these key concepts: {concepts}. "
        "Reply with the question only."
    ),
)

QUESTION_HARDER = Prompt(
    "question_harder",
    system="You are a teacher of {subject_name}. Here is the syllabus of your course:\n{syllabus}",
    user=(
        'Your student has learned up to class session {session_number}, "{session_title}". '
        'Write one harder homework question that combines session {first_number}, "{first_title}", '
        "with session {session_number}, using these key concepts: {concepts}. "
        "Reply with the question only."
    ),
)

ANSWER = Prompt(
    "answer",
    system="You are a knowledgeable and helpful assistant. Answer the question fully.",
    user="{question}",
)
