"""Conversation templates -> input_ids + labels, with LLaVA's masking rules.

- "plain" (stage 1): the human turn is replaced by a bare <image>; text = "<image>" + caption + "\n"; the
  caption and the newline are learned.
- "vicuna_v1" (stage 2): "SYS USER: <image>\nQ1 ASSISTANT: A1</s>USER: Q2 ASSISTANT: A2</s>"; only the assistant
  answers and their "</s>" are learned; the system prompt, the user turns and the image are not.

The official code finds the learned spans by tokenizing each round separately and counting tokens, which breaks
when a tokenizer merges across round boundaries (it then silently masks the whole sample). Here the whole prompt
is tokenized once, exactly as at inference, and a token is learned when its character span overlaps a learned
span of the text: the same ids as inference and no length arithmetic.

Each <image> becomes `image_tokens` placeholder ids (n_spatial + grid^2), so the model gets expanded input_ids.
"""

from __future__ import annotations

from dataclasses import dataclass

from transformers import PreTrainedTokenizerBase

IGNORE_INDEX = -100
IMAGE = "<image>"

# Reasons a sample cannot be trained on; the data pipeline quarantines rows with these.
NO_CONVERSATIONS = "no_conversations"
ROLES_NOT_ALTERNATING = "roles_not_alternating"
IMAGE_TOKEN_MISSING = "image_token_missing"
IMAGE_TOKEN_WITHOUT_IMAGE = "image_token_without_image"
TOO_MANY_IMAGE_TOKENS = "too_many_image_tokens"
EMPTY_TEXT = "empty_text"
TURN_NOT_TEXT = "turn_not_text"
NO_LEARNABLE_TOKENS = "no_learnable_tokens"


class ConversationError(ValueError):
    """A sample that cannot become a training example; `reason` is one of the constants above."""

    def __init__(self, reason: str, message: str):
        super().__init__(f"{reason}: {message}")
        self.reason = reason


@dataclass(frozen=True)
class ConversationTemplate:
    name: str
    system: str
    roles: tuple[str, str]  # (user, assistant)
    separators: tuple[str, str]  # after a user turn, after an assistant turn


PLAIN = ConversationTemplate("plain", "", ("", ""), ("\n", "\n"))
VICUNA_V1 = ConversationTemplate(
    "vicuna_v1",
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions.",
    ("USER", "ASSISTANT"),
    (" ", "</s>"),
)
TEMPLATES: dict[str, ConversationTemplate] = {template.name: template for template in (PLAIN, VICUNA_V1)}


@dataclass
class TokenizedConversation:
    input_ids: list[int]  # <image> already expanded to image_tokens placeholders
    labels: list[int]  # IGNORE_INDEX where nothing is learned
    prompt: str  # the rendered text, with one <image> per image

    @property
    def num_learned(self) -> int:
        return sum(label != IGNORE_INDEX for label in self.labels)


def get_template(name: str) -> ConversationTemplate:
    if name not in TEMPLATES:
        raise ValueError(f"conversation template {name!r} is unknown; allowed: {', '.join(TEMPLATES)}")
    return TEMPLATES[name]


def normalise_turns(conversations: object, has_image: bool, strip_turns: bool = False) -> list[str]:
    """Validate LLaVA turns ({"from": "human"|"gpt", "value": str}) and return their texts, with the <image>
    moved to the front of its turn as LLaVA's preprocess_multimodal does ("<image>\\ntext", that turn stripped).
    Other turns keep their whitespace, as in the official code, unless strip_turns."""
    if not isinstance(conversations, list) or not conversations:
        raise ConversationError(NO_CONVERSATIONS, "the row has no conversation turns")
    texts = []
    for index, turn in enumerate(conversations):
        expected = ("human", "gpt")[index % 2]
        role = turn.get("from") if isinstance(turn, dict) else None
        if role != expected:
            raise ConversationError(
                ROLES_NOT_ALTERNATING, f"turn {index} is from {role!r}, expected {expected!r} (human/gpt alternate)"
            )
        value = turn.get("value")
        if not isinstance(value, str):
            found = "no 'value'" if value is None else f"a value of type {type(value).__name__} ({value!r:.40})"
            raise ConversationError(TURN_NOT_TEXT, f"turn {index} has {found}; a turn's value is its text")
        texts.append(value)
    if len(texts) % 2:
        raise ConversationError(ROLES_NOT_ALTERNATING, f"the last turn ({len(texts) - 1}) is a question without answer")

    image_count = sum(text.count(IMAGE) for text in texts)
    if has_image and image_count == 0:
        raise ConversationError(IMAGE_TOKEN_MISSING, "the row has an image but no '<image>' in its turns")
    if not has_image and image_count:
        raise ConversationError(IMAGE_TOKEN_WITHOUT_IMAGE, "'<image>' appears but the row has no image")
    if image_count > 1:
        raise ConversationError(TOO_MANY_IMAGE_TOKENS, f"{image_count} '<image>' tokens for 1 image")

    normalised = []
    for index, text in enumerate(texts):
        stripped = text.replace(IMAGE, "").strip()
        if not stripped and (index % 2 == 1 or IMAGE not in text):
            raise ConversationError(EMPTY_TEXT, f"turn {index} is empty")
        if IMAGE in text:
            normalised.append(f"{IMAGE}\n{stripped}".strip())  # a bare "<image>" turn stays "<image>"
        else:
            normalised.append(stripped if strip_turns else text)
    return normalised


def render(template: ConversationTemplate, texts: list[str]) -> tuple[str, list[tuple[int, int]]]:
    """The prompt text and the [start, end) character spans that are learned."""
    if template is PLAIN:
        # Stage 1 drops the human instruction: "<image>" + caption + "\n", the caption and newline learned.
        caption = texts[1] + template.separators[1]
        prompt = IMAGE + caption
        return prompt, [(len(IMAGE), len(prompt))]
    parts = [template.system + template.separators[0]]
    learned = []
    position = len(parts[0])
    for index, text in enumerate(texts):
        role = template.roles[index % 2]
        head = f"{role}: "
        tail = template.separators[index % 2]
        if index % 2 == 1:
            learned.append((position + len(head), position + len(head) + len(text) + len(tail)))
        parts.append(head + text + tail)
        position += len(head) + len(text) + len(tail)
    return "".join(parts), learned


def inference_prompt(template: ConversationTemplate, question: str, has_image: bool) -> str:
    """The prompt for generation: "SYS USER: <image>\\nQ ASSISTANT:" (no trailing space), or "<image>" for plain."""
    if template is PLAIN:
        return IMAGE
    question = question.replace(IMAGE, "").strip()
    if has_image:
        question = f"{IMAGE}\n{question}"
    user, assistant = template.roles
    return f"{template.system}{template.separators[0]}{user}: {question}{template.separators[0]}{assistant}:"


def chat_prompt(template: ConversationTemplate, turns: list[str], system: str | None = None) -> str:
    """A chat for generation: alternating user/assistant texts ending with a user turn, then the assistant role.

    "SYS USER: q1 ASSISTANT: a1</s>USER: q2 ASSISTANT:" for vicuna_v1, the training layout of stage 2 with the open
    answer last; `system` replaces the template's system prompt (an OpenAI "system" message). The texts keep their
    <image> markers as given; `inference_prompt` is the one-question case.
    """
    if template is PLAIN:
        return IMAGE
    if not turns or len(turns) % 2 == 0:
        raise ValueError(f"a chat needs alternating user/assistant turns ending with a user turn, got {len(turns)}")
    user, assistant = template.roles
    user_separator, assistant_separator = template.separators
    parts = [(template.system if system is None else system) + user_separator]
    for index, text in enumerate(turns):
        if index % 2 == 0:
            parts.append(f"{user}: {text}{user_separator}")
        else:
            parts.append(f"{assistant}: {text}{assistant_separator}")
    parts.append(f"{assistant}:")
    return "".join(parts)


def expand_image_tokens(input_ids: list[int], image_token_id: int, image_tokens: int) -> list[int]:
    """Each <image> id becomes `image_tokens` placeholder ids (n_spatial + grid^2), as the model expects."""
    expanded: list[int] = []
    for token_id in input_ids:
        expanded.extend([token_id] * image_tokens if token_id == image_token_id else [token_id])
    return expanded


def tokenize_conversation(
    conversations: object,
    tokenizer: PreTrainedTokenizerBase,
    template: ConversationTemplate,
    has_image: bool,
    image_tokens: int,
    model_max_length: int,
    strip_turns: bool = False,
) -> TokenizedConversation:
    """LLaVA turns -> expanded input_ids and labels, truncated to model_max_length (never inside an image)."""
    texts = normalise_turns(conversations, has_image, strip_turns)
    prompt, learned_spans = render(template, texts)
    encoding = tokenizer(prompt, return_offsets_mapping=True, add_special_tokens=True)
    image_token_id = tokenizer.convert_tokens_to_ids(IMAGE)

    input_ids: list[int] = []
    labels: list[int] = []
    for token_id, (start, end) in zip(encoding["input_ids"], encoding["offset_mapping"]):
        if token_id == image_token_id:
            input_ids.extend([image_token_id] * image_tokens)
            labels.extend([IGNORE_INDEX] * image_tokens)
            continue
        learned = end > start and any(start < span_end and end > span_start for span_start, span_end in learned_spans)
        input_ids.append(token_id)
        labels.append(token_id if learned else IGNORE_INDEX)

    input_ids, labels = _truncate(input_ids, labels, image_token_id, model_max_length)
    result = TokenizedConversation(input_ids, labels, prompt)
    if result.num_learned == 0:
        raise ConversationError(
            NO_LEARNABLE_TOKENS,
            f"no answer token is left within model_max_length={model_max_length} (prompt is {len(encoding['input_ids'])}"
            f" tokens before image expansion)",
        )
    return result


def _truncate(input_ids: list[int], labels: list[int], image_token_id: int, limit: int) -> tuple[list[int], list[int]]:
    if len(input_ids) <= limit:
        return input_ids, labels
    cut = limit
    # An image is all or nothing for the model: drop a partial trailing image entirely (its answer is gone too).
    while cut > 0 and input_ids[cut - 1] == image_token_id and input_ids[cut] == image_token_id:
        cut -= 1
    return input_ids[:cut], labels[:cut]
